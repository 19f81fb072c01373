"""The ``pipedrive-channels`` command, run as a real process against a FakePipedrive in the test's own event loop.

The CLI is started with ``asyncio.create_subprocess_exec`` (never ``subprocess.run``: the fake answers from this
loop, so the loop must keep running while the CLI works). Every run's stdout and stderr are checked for secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import os
import pty
import secrets
import signal
import stat
import struct
import sys
import termios
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from factories import wire_message

from pipedrive_channels import ChannelsClient, Message, RateBudget
from pipedrive_channels.models import converter
from pipedrive_channels.testing import FakePipedrive

ACCESS_TOKEN = "tok-SECRET-" + secrets.token_hex(12)
CLIENT_ID = "cli-test-client"
CLIENT_SECRET = "cs-SECRET-" + secrets.token_hex(12)
SECRETS = (ACCESS_TOKEN, CLIENT_SECRET)
CHANNEL = "ch-1"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def env_for(fake: FakePipedrive | None, *, token: bool = True, **extra: str) -> dict[str, str]:
    """The test runner's environment without any PIPEDRIVE_* variable, plus the fake's URL and the token."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIPEDRIVE_")}
    if fake is not None:
        env["PIPEDRIVE_BASE_URL"] = fake.base_url
    if token:
        env["PIPEDRIVE_ACCESS_TOKEN"] = ACCESS_TOKEN
    env.update(extra)
    return env


async def start(*args: str, env: dict[str, str], stdin: int = asyncio.subprocess.DEVNULL,
                stderr: int = asyncio.subprocess.PIPE) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipedrive_channels", *args,
        stdin=stdin, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env,
    )


async def finish(
    process: asyncio.subprocess.Process, stdin: bytes | None = None, secrets_: Iterable[str] = (), timeout: float = 60
) -> Result:
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    assert process.returncode is not None
    result = Result(process.returncode, out.decode(), (err or b"").decode())
    for secret in (*SECRETS, *secrets_):
        assert secret not in result.out and secret not in result.err, "a secret reached the terminal"
    return result


async def cli(*args: str, env: dict[str, str], stdin: bytes | None = None, secrets_: Iterable[str] = ()) -> Result:
    piped = asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL
    process = await start(*args, env=env, stdin=piped)
    return await finish(process, stdin, secrets_)


body = functools.partial(wire_message, channel=CHANNEL, conversations=50)


def write_lines(path: Path, lines: Sequence[dict[str, Any] | str]) -> Path:
    with path.open("w", encoding="utf-8") as file:
        for line in lines:
            file.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return path


def write_messages(path: Path, count: int, **kwargs: Any) -> set[str]:
    write_lines(path, [body(index, **kwargs) for index in range(count)])
    return {f"m-{index}" for index in range(count)}


def stored_ids(fake: FakePipedrive) -> set[str]:
    return {message_id for thread in fake.messages.values() for message_id in thread}


def stored_count(fake: FakePipedrive) -> int:
    return sum(len(thread) for thread in fake.messages.values())


def receive_counts(fake: FakePipedrive) -> Counter[str]:
    """How many receive requests reached the server for each message id."""
    return Counter(
        request.json["id"] for request in fake.requests
        if request.path.endswith("/channels/messages/receive") and isinstance(request.json, dict)
    )


async def add_channel(fake: FakePipedrive, provider_channel_id: str = CHANNEL) -> None:
    async with ChannelsClient(ACCESS_TOKEN, base_url=fake.base_url, budget=RateBudget.unlimited()) as client:
        await client.add_channel(name="Support", provider_channel_id=provider_channel_id)


async def wait_until_stored(fake: FakePipedrive, process: asyncio.subprocess.Process, count: int) -> None:
    for _ in range(3000):
        if stored_count(fake) >= count:
            return
        assert process.returncode is None, "the CLI ended before it was interrupted"
        await asyncio.sleep(0.005)
    raise AssertionError(f"the fake never held {count} messages")


@pytest.fixture
def fake(fake: FakePipedrive) -> FakePipedrive:
    """The shared fake with this module's secret credentials, which no run may print."""
    fake.client_id, fake.client_secret = CLIENT_ID, CLIENT_SECRET
    fake.add_access_token(ACCESS_TOKEN)
    return fake


# -- 1. kill -9 midway, resume ------------------------------------------------------------------------------


async def test_sigkill_midway_then_resume_delivers_everything_with_few_duplicates(
    fake: FakePipedrive, tmp_path: Path
) -> None:
    fake.latency = 0.002
    ids = write_messages(tmp_path / "history.jsonl", 5000)
    args = ("backfill", str(tmp_path / "history.jsonl"), "--checkpoint", str(tmp_path / "journal.db"),
            "--plan", "unlimited", "--concurrency", "8", "--channel", f"{CHANNEL}=Support", "--json")
    first = await start(*args, env=env_for(fake))
    await wait_until_stored(fake, first, 1500)
    first.kill()
    killed = await finish(first)
    assert killed.code == -signal.SIGKILL
    assert stored_count(fake) < 5000, "the first run finished before the kill: nothing was tested"

    second = await cli(*args, env=env_for(fake))
    assert second.code == 0, second.err
    report = second.json()
    assert report["delivered"] + report["skipped"] == 5000
    assert report["skipped"] >= 1500 - 8 and report["failed"] == 0 and report["stopped"] is False
    assert stored_ids(fake) == ids
    counts = receive_counts(fake)
    assert set(counts) == ids
    sent_twice = [message_id for message_id, count in counts.items() if count > 1]
    assert len(sent_twice) <= 8, sent_twice
    assert sum(1 for r in fake.requests if r.method == "POST" and r.path.endswith("/v1/channels")) == 1


# -- 2, 3. bad lines and permanent failures -----------------------------------------------------------------


async def test_bad_lines_are_failures_naming_their_line_and_the_run_goes_on(
    fake: FakePipedrive, tmp_path: Path
) -> None:
    await add_channel(fake)
    missing_status = body(3)
    del missing_status["status"]
    path = write_lines(tmp_path / "bad.jsonl", [
        body(0),
        '{"id": "m-1", "channel_id": ',  # line 2: not JSON
        body(2),
        missing_status,  # line 4
        body(4),
        body(5, status="lost"),  # line 6
        "",
        body(7),
    ])
    result = await cli("backfill", str(path), "--checkpoint", str(tmp_path / "j.db"), "--plan", "unlimited",
                       "--json", "--quiet", env=env_for(fake))
    assert result.code == 1
    assert result.err == ""  # --quiet --json: nothing but the JSON
    report = result.json()
    assert (report["delivered"], report["skipped"], report["failed"], report["stopped"]) == (4, 0, 3, False)
    assert report["requests_sent"] == 4 and report["tokens_charged"] == 40
    failures = {failure["line"]: failure["reason"] for failure in report["failures"]}
    assert set(failures) == {2, 4, 6}
    assert "JSONDecodeError" in failures[2]
    assert "status" in failures[4] and "status" in failures[6]
    assert stored_ids(fake) == {"m-0", "m-2", "m-4", "m-7"}


async def test_a_permanently_failing_message_is_reported_with_its_reason(fake: FakePipedrive, tmp_path: Path) -> None:
    await add_channel(fake)
    path = write_lines(tmp_path / "m.jsonl", [body(0), body(1, channel="no-such-channel"), body(2), body(3)])
    result = await cli("backfill", str(path), "--checkpoint", str(tmp_path / "j.db"), "--plan", "unlimited",
                       env=env_for(fake))
    assert result.code == 1
    assert "delivered 3, skipped 0 (already in the checkpoint), failed 1" in result.out
    assert "message m-1: HTTP 404: Channel not found. [NOT_FOUND]" in result.out
    assert receive_counts(fake)["m-1"] == 1  # a 404 is not retried
    assert "progress: 4/4 done" in result.err  # not a terminal: plain progress lines on stderr


# -- 4. Ctrl-C --------------------------------------------------------------------------------------------


async def test_sigint_stops_resumably_and_a_rerun_completes(fake: FakePipedrive, tmp_path: Path) -> None:
    await add_channel(fake)
    fake.latency = 0.005
    ids = write_messages(tmp_path / "m.jsonl", 1500)
    args = ("backfill", str(tmp_path / "m.jsonl"), "--checkpoint", str(tmp_path / "j.db"), "--plan", "unlimited",
            "--concurrency", "4", "--json")
    first = await start(*args, env=env_for(fake))
    await wait_until_stored(fake, first, 200)
    first.send_signal(signal.SIGINT)
    stopped = await finish(first)
    assert stopped.code == 3, stopped.err
    assert "stopping" in stopped.err and "Traceback" not in stopped.err
    report = stopped.json()
    assert report["stopped"] is True and 200 <= report["delivered"] < 1500 and report["failed"] == 0

    rerun = await cli(*args, "--quiet", env=env_for(fake))
    assert rerun.code == 0, rerun.err
    again = rerun.json()
    # A clean stop lets in-flight calls finish and journals them: the re-run skips exactly those, sends no duplicate.
    assert again["skipped"] == report["delivered"] and again["delivered"] == 1500 - report["delivered"]
    assert stored_ids(fake) == ids
    assert set(receive_counts(fake).values()) == {1}


async def test_sigterm_then_sigint_aborts_calls_in_flight_and_a_rerun_completes(
    fake: FakePipedrive, tmp_path: Path
) -> None:
    await add_channel(fake)
    ids = write_messages(tmp_path / "m.jsonl", 200)
    args = ("backfill", str(tmp_path / "m.jsonl"), "--checkpoint", str(tmp_path / "j.db"), "--plan", "unlimited",
            "--concurrency", "4", "--json")
    first = await start(*args, env=env_for(fake))
    await wait_until_stored(fake, first, 5)
    fake.latency = 30.0  # the calls now in flight hang: a clean stop would wait for them
    await asyncio.sleep(0.3)
    first.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    assert first.returncode is None, "the clean stop did not wait for the calls in flight"
    first.send_signal(signal.SIGINT)
    aborted = await finish(first, timeout=10)
    assert aborted.code == 3, aborted.err
    assert "stopping (SIGTERM)" in aborted.err and "aborting" in aborted.err and "Traceback" not in aborted.err
    report = aborted.json()
    assert report["aborted"] is True and report["stopped"] is True and report["delivered"] >= 5

    fake.latency = 0.0
    rerun = await cli(*args, "--quiet", env=env_for(fake))
    assert rerun.code == 0, rerun.err
    assert rerun.json()["skipped"] == report["delivered"]
    assert stored_ids(fake) == ids


# -- 5. dry run -------------------------------------------------------------------------------------------


async def test_dry_run_prints_the_estimate_and_sends_nothing(fake: FakePipedrive, tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    write_messages(path, 2000)
    with path.open("a") as file:
        file.write("not json\n")
    no_credentials = env_for(fake, token=False)
    human, machine = await asyncio.gather(
        cli("backfill", str(path), "--dry-run", "--plan", "lite", env=no_credentials),
        cli("backfill", str(path), "--dry-run", "--plan", "lite", "--json", env=no_credentials),
    )
    assert human.code == 0 and machine.code == 0, human.err + machine.err
    assert "messages:  2,000" in human.out and "bad lines: 1" in human.out and "tokens:    20,000" in human.out
    assert "about 48 s at Lite" in human.out  # (2,000 - 80) requests at 80 per 2 s
    estimate = machine.json()
    assert (estimate["messages"], estimate["bad_lines"], estimate["requests"], estimate["tokens"]) == (
        2000, 1, 2000, 20000)
    assert 45 <= estimate["seconds"] <= 55
    assert fake.requests == []


# -- 6. usage errors --------------------------------------------------------------------------------------


async def test_usage_errors_exit_2(fake: FakePipedrive, tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    write_messages(path, 3)
    journal = str(tmp_path / "j.db")
    runs = {
        "shard K >= N": ("backfill", str(path), "--checkpoint", journal, "--shard", "2/2"),
        "shard not K/N": ("backfill", str(path), "--checkpoint", journal, "--shard", "x"),
        "shard negative": ("backfill", str(path), "--checkpoint", journal, "--shard", "-1/2"),
        "no checkpoint": ("backfill", str(path)),
        "missing file": ("backfill", str(tmp_path / "nope.jsonl"), "--checkpoint", journal),
        "bad concurrency": ("backfill", str(path), "--checkpoint", journal, "--concurrency", "0"),
        "unknown command": ("frobnicate",),
    }
    no_credentials = {
        "backfill": ("backfill", str(path), "--checkpoint", journal),
        "add-channel": ("add-channel", "--provider-channel-id", "x", "--name", "X"),
        "missing token file": ("delete-channel", "x", "--token-file", str(tmp_path / "none.json")),
    }
    results = await asyncio.gather(
        *(cli(*args, env=env_for(fake)) for args in runs.values()),
        *(cli(*args, env=env_for(fake, token=False)) for args in no_credentials.values()),
    )
    for name, result in zip([*runs, *no_credentials], results, strict=True):
        assert result.code == 2, (name, result)
        assert "Traceback" not in result.err and result.out == "", (name, result)
    for result in results[len(runs):len(runs) + 2]:
        assert result.err.count("\n") == 1 and "PIPEDRIVE_ACCESS_TOKEN" in result.err, result.err
    assert "auth login" in results[-1].err
    assert fake.requests == []


# -- 7. shards --------------------------------------------------------------------------------------------


async def test_two_shards_deliver_every_message_exactly_once(fake: FakePipedrive, tmp_path: Path) -> None:
    await add_channel(fake)
    ids = write_messages(tmp_path / "m.jsonl", 600, conversations=60)
    common = ("backfill", str(tmp_path / "m.jsonl"), "--plan", "unlimited", "--concurrency", "4", "--json")
    results = await asyncio.gather(*(
        cli(*common, "--shard", f"{k}/2", "--checkpoint", str(tmp_path / f"shard{k}.db"), env=env_for(fake))
        for k in range(2)
    ))
    assert [result.code for result in results] == [0, 0], [result.err for result in results]
    delivered = [result.json()["delivered"] for result in results]
    assert sum(delivered) == 600 and min(delivered) > 0
    counts = receive_counts(fake)
    assert set(counts) == ids and set(counts.values()) == {1}
    assert stored_ids(fake) == ids


# -- 8, 9. auth login, token file, secrets ----------------------------------------------------------------


def _login_args(fake: FakePipedrive, redirect: str, token_file: Path) -> tuple[str, ...]:
    return ("auth", "login", "--redirect-uri", redirect, "--authorize-url", fake.authorize_url,
            "--token-url", fake.token_url, "--token-file", str(token_file))


def _app_env(fake: FakePipedrive) -> dict[str, str]:
    return env_for(fake, token=False, PIPEDRIVE_CLIENT_ID=fake.client_id, PIPEDRIVE_CLIENT_SECRET=fake.client_secret)


async def test_auth_login_saves_a_private_token_file_and_prints_no_secret(fake: FakePipedrive, tmp_path: Path) -> None:
    redirect = "http://127.0.0.1:9/callback"
    token_file = tmp_path / "token.json"
    process = await start(*_login_args(fake, redirect, token_file), env=_app_env(fake),
                          stdin=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    url = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(fake.authorize_url)
    assert query["client_id"] == [fake.client_id] and query["redirect_uri"] == [redirect]
    state = query["state"][0]
    assert len(state) >= 16
    code = fake.issue_code(redirect_uri=redirect)
    result = await finish(process, f"{redirect}?code={code}&state={state}\n".encode())
    assert result.code == 0, result.err
    assert f"token saved to {token_file} (expires at " in result.out
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    saved = json.loads(token_file.read_text())
    for secret in (saved["access_token"], saved["refresh_token"], code):
        assert secret not in result.out and secret not in result.err

    # The token file serves the API commands; with the app's credentials an expired token is refreshed
    # and the new one saved back to the file.
    fake.expire_access_tokens()
    added = await cli("add-channel", "--provider-channel-id", "from-file", "--name", "Via token file",
                      "--token-file", str(token_file), "--token-url", fake.token_url, env=_app_env(fake),
                      secrets_=(saved["access_token"], saved["refresh_token"]))
    assert added.code == 0, added.err
    refreshed = json.loads(token_file.read_text())
    assert refreshed["access_token"] != saved["access_token"] and "from-file" in fake.channels
    assert refreshed["access_token"] not in added.out + added.err

    # A plain code (not the callback URL) works too.
    second_file = tmp_path / "second.json"
    plain = await cli(*_login_args(fake, redirect, second_file), env=_app_env(fake),
                      stdin=(fake.issue_code(redirect_uri=redirect) + "\n").encode())
    assert plain.code == 0 and second_file.exists(), plain.err


async def test_auth_login_refuses_a_callback_with_another_state(fake: FakePipedrive, tmp_path: Path) -> None:
    redirect = "http://127.0.0.1:9/callback"
    token_file = tmp_path / "token.json"
    code = fake.issue_code(redirect_uri=redirect)
    result = await cli(*_login_args(fake, redirect, token_file), env=_app_env(fake),
                       stdin=f"{redirect}?code={code}&state=forged\n".encode())
    assert result.code == 1 and "state" in result.err
    assert not token_file.exists() and fake.token_requests == 0
    missing_app = await cli(*_login_args(fake, redirect, token_file), env=env_for(fake, token=False), stdin=b"x\n")
    assert missing_app.code == 2 and "PIPEDRIVE_CLIENT_ID" in missing_app.err


async def test_a_rejected_token_never_reaches_the_output(fake: FakePipedrive, tmp_path: Path) -> None:
    wrong = "wrong-SECRET-" + secrets.token_hex(12)
    await add_channel(fake)
    path = write_lines(tmp_path / "m.jsonl", [body(0), body(1)])
    env = env_for(fake, PIPEDRIVE_ACCESS_TOKEN=wrong)
    fill, add = await asyncio.gather(
        cli("backfill", str(path), "--checkpoint", str(tmp_path / "j.db"), "--plan", "unlimited", env=env,
            secrets_=(wrong,)),
        cli("add-channel", "--provider-channel-id", "x", "--name", "X", env=env, secrets_=(wrong,)),
    )
    assert fill.code == 1 and "HTTP 401" in fill.out
    assert add.code == 1 and add.err.startswith("error: HTTP 401")


# -- 10. channels and conversations -----------------------------------------------------------------------


async def test_add_channel_delete_conversation_delete_channel_and_404s(fake: FakePipedrive) -> None:
    env = env_for(fake)
    added = await cli("add-channel", "--provider-channel-id", "wa-1", "--name", "WhatsApp line",
                      "--provider-type", "whatsapp", "--template-support", "--avatar-url",
                      "https://img.example/a.png", env=env)
    assert added.code == 0, added.err
    channel = added.json()
    assert (channel["provider_channel_id"], channel["name"], channel["provider_type"], channel["template_support"]) \
        == ("wa-1", "WhatsApp line", "whatsapp", True)
    assert fake.channels["wa-1"]["avatar_url"] == "https://img.example/a.png"

    async with ChannelsClient(ACCESS_TOKEN, base_url=fake.base_url, budget=RateBudget.unlimited()) as client:
        await client.receive_message(converter.structure(body(1, channel="wa-1"), Message))
    conversation = ("wa-1", "c-1")
    assert conversation in fake.messages

    deleted = await cli("delete-conversation", *conversation, env=env)
    assert deleted.code == 0 and conversation not in fake.messages, deleted.err
    missing_conversation = await cli("delete-conversation", *conversation, env=env)
    assert missing_conversation.code == 1
    assert missing_conversation.err == "error: HTTP 404: Conversation not found. [NOT_FOUND]\n"
    removed = await cli("delete-channel", "wa-1", env=env)
    assert removed.code == 0 and "wa-1" not in fake.channels, removed.err
    missing_channel = await cli("delete-channel", "wa-1", env=env)
    assert missing_channel.code == 1 and missing_channel.err == "error: HTTP 404: Channel not found. [NOT_FOUND]\n"

    fake.add_api_token("api-SECRET-token")
    api = await cli("add-channel", "--provider-channel-id", "api-1", "--name", "By API token",
                    env=env_for(fake, token=False, PIPEDRIVE_API_TOKEN="api-SECRET-token"),
                    secrets_=("api-SECRET-token",))
    assert api.code == 0 and "api-1" in fake.channels, api.err


# -- progress bar on a terminal ---------------------------------------------------------------------------


async def test_progress_bar_on_a_terminal_shows_done_total_tokens_and_waiting(
    fake: FakePipedrive, tmp_path: Path
) -> None:
    await add_channel(fake)
    fake.latency = 0.002
    write_messages(tmp_path / "m.jsonl", 300)
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))

    def read_all() -> bytes:
        chunks = []
        with contextlib.suppress(OSError):  # EIO once the child's side is closed
            while chunk := os.read(controller, 65536):
                chunks.append(chunk)
        return b"".join(chunks)

    try:
        process = await start("backfill", str(tmp_path / "m.jsonl"), "--checkpoint", str(tmp_path / "j.db"),
                              "--plan", "unlimited", "--concurrency", "2", env=env_for(fake), stderr=terminal)
    finally:
        os.close(terminal)
    reader = asyncio.ensure_future(asyncio.to_thread(read_all))
    try:
        result = await finish(process)
        bar = (await asyncio.wait_for(reader, 30)).decode(errors="replace")
    finally:
        os.close(controller)
    assert result.code == 0, bar
    assert "300/300" in bar and "msg/s" in bar and "tokens=3,000" in bar and "waiting=" in bar
    for secret in SECRETS:
        assert secret not in bar
