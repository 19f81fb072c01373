"""Hardening of the back-fill and the CLI (issue 11): no hang when a worker dies, one writer per checkpoint,
bad input lines and files, bounded concurrency, a required OAuth state, and the progress output's order."""

from __future__ import annotations

import asyncio
import builtins
import io
import json
import os
import signal
import socket
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis

from pipedrive_channels import ChannelsClient, Message, MessageStatus, PipedriveError, Priority, RateBudget
from pipedrive_channels import cli as cli_module
from pipedrive_channels.backfill import (
    MAX_CONCURRENCY,
    BadInput,
    Checkpoint,
    CheckpointError,
    CheckpointLockedError,
    Progress,
    backfill,
    read_jsonl,
)
from pipedrive_channels.redis_budget import BudgetUnavailableError, RedisBudget
from pipedrive_channels.testing import FakePipedrive

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
RECORDS = 200  # far more than the buffer of every run below (4 x concurrency)
HANG_GUARD = 10


def history(n: int = RECORDS) -> Iterator[Message]:
    for index in range(n):
        yield Message(id=f"m-{index}", channel_id="ch", sender_id="customer", conversation_id=f"c-{index % 10}",
                      message=f"text {index}", status=MessageStatus.SENT, created_at=START + timedelta(minutes=index))


def body(index: int) -> dict[str, Any]:
    return {"id": f"m-{index}", "channel_id": "ch", "sender_id": "s", "conversation_id": f"c-{index % 10}",
            "message": f"text {index}", "status": "sent", "created_at": "2026-01-01 10:00", "attachments": []}


class StubClient:
    """What backfill uses of a client, with no HTTP; ``fail`` (if set) decides what a call raises."""

    def __init__(
        self, budget: RateBudget | None = None, fail: Callable[[Message], BaseException | None] = lambda m: None
    ) -> None:
        self.budget = budget or RateBudget.unlimited()
        self.fail = fail
        self.sent: list[str] = []

    async def receive_message(self, message: Message, *, priority: Priority, timeout: float | None) -> Message:
        reservation = await self.budget.acquire(10, priority=priority, timeout=timeout)
        try:
            await asyncio.sleep(0)
            error = self.fail(message)
            if error is not None:
                raise error
            self.sent.append(message.id)
            return message
        finally:
            reservation.settle()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def journal_ids(path: Path) -> tuple[set[str], set[str]]:
    """(delivered, failed) message ids in a journal, read without the Checkpoint class (and its lock)."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT message_id, failure FROM records").fetchall()
    db.close()
    return {id_ for id_, failure in rows if failure is None}, {id_ for id_, failure in rows if failure is not None}


def in_thread(function: Callable[[list[str]], int], args: list[str]) -> asyncio.Future[int]:
    """Run ``function(args)`` (the CLI, with its own event loop) in a daemon thread: if it hangs, the test fails
    and the thread does not keep the test run from ending."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()

    def target() -> None:
        try:
            result = function(args)
        except BaseException as error:
            loop.call_soon_threadsafe(done.set_exception, error)
        else:
            loop.call_soon_threadsafe(done.set_result, result)

    threading.Thread(target=target, daemon=True).start()
    return done


# -- 1. a worker that dies ends the run at once ---------------------------------------------------------------


async def test_an_unavailable_shared_budget_stops_the_run_instead_of_hanging(tmp_path: Path) -> None:
    redis = Redis(host="127.0.0.1", port=free_port())  # nothing listens there: Redis is down
    budget = RedisBudget(redis, "test:backfill", requests_per_window=100, on_redis_error="fail")
    try:
        with pytest.raises(BudgetUnavailableError):
            await asyncio.wait_for(
                backfill(StubClient(budget), history(), concurrency=2, checkpoint=tmp_path / "j.sqlite"),  # type: ignore[arg-type]
                HANG_GUARD,
            )
    finally:
        await redis.aclose()
    assert journal_ids(tmp_path / "j.sqlite") == (set(), set())  # nothing marked done, nothing marked failed


@pytest.mark.parametrize("concurrency", [1, 4])  # 1: the dead worker was the only one; 4: the others went on
async def test_a_raising_progress_callback_stops_the_run_resumably(tmp_path: Path, concurrency: int) -> None:
    journal = tmp_path / "j.sqlite"
    client = StubClient()

    class Boom(Exception):
        pass

    def on_progress(progress: Progress) -> None:
        if progress.delivered == 20:
            raise Boom("the callback broke")

    with pytest.raises(Boom, match="the callback broke"):
        await asyncio.wait_for(
            backfill(client, history(), concurrency=concurrency, checkpoint=journal,  # type: ignore[arg-type]
                     on_progress=on_progress),
            HANG_GUARD,
        )
    delivered, failed = journal_ids(journal)
    assert not failed and delivered == set(client.sent) and 20 <= len(delivered) < RECORDS
    rest = StubClient()
    report = await asyncio.wait_for(backfill(rest, history(), checkpoint=journal), HANG_GUARD)  # type: ignore[arg-type]
    assert report.skipped == len(delivered) and set(rest.sent) | delivered == {f"m-{i}" for i in range(RECORDS)}


async def test_a_full_journal_stops_the_run_resumably(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    connect = sqlite3.connect

    def small(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        db = connect(*args, **kwargs)
        db.execute("PRAGMA max_page_count = 8")  # a few hundred records fit, then "database or disk is full"
        return db

    monkeypatch.setattr(sqlite3, "connect", small)
    journal = tmp_path / "j.sqlite"
    client = StubClient()
    with pytest.raises(CheckpointError, match="full") as raised:
        await asyncio.wait_for(backfill(client, history(5_000), concurrency=4, checkpoint=journal),  # type: ignore[arg-type]
                               HANG_GUARD)
    assert str(journal) in str(raised.value) and isinstance(raised.value.__cause__, sqlite3.OperationalError)
    delivered, failed = journal_ids(journal)
    assert delivered and not failed and delivered <= set(client.sent)  # only what was sent is marked done


async def test_the_cli_ends_a_run_whose_journal_fills_up_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    connect = sqlite3.connect

    def small(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        db = connect(*args, **kwargs)
        db.execute("PRAGMA max_page_count = 8")
        return db

    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(body(i)) + "\n" for i in range(3_000)))
    journal = tmp_path / "j.sqlite"
    async with FakePipedrive() as fake:
        fake.add_access_token("token")
        monkeypatch.setattr(sqlite3, "connect", small)
        monkeypatch.setenv("PIPEDRIVE_BASE_URL", fake.base_url)
        monkeypatch.setenv("PIPEDRIVE_ACCESS_TOKEN", "token")
        args = ["backfill", str(path), "--checkpoint", str(journal), "--plan", "unlimited", "--channel", "ch=Support",
                "--quiet"]
        code = await asyncio.wait_for(in_thread(cli_module.run, args), HANG_GUARD)
    captured = capsys.readouterr()
    assert code == 1 and captured.out == "" and captured.err.count("\n") == 1, captured
    assert captured.err.startswith(f"error: checkpoint {journal}: database or disk is full;")
    assert f"re-run with --checkpoint {journal} to resume" in captured.err


async def test_a_read_only_journal_stops_the_run(tmp_path: Path) -> None:
    journal_path = tmp_path / "j.sqlite"
    journal = Checkpoint(journal_path)
    client = StubClient()

    def read_only_after_ten(progress: Progress) -> None:
        if progress.delivered == 10:
            journal._db.execute("PRAGMA query_only = 1")  # what a read-only file or mount does to the writes

    try:
        with pytest.raises(CheckpointError, match="readonly"):
            await asyncio.wait_for(backfill(client, history(), concurrency=4, checkpoint=journal,  # type: ignore[arg-type]
                                            on_progress=read_only_after_ten), HANG_GUARD)
    finally:
        journal.close()
    delivered, failed = journal_ids(journal_path)
    assert len(delivered) == 10 and not failed


async def test_an_error_of_one_record_is_a_failure_and_the_run_goes_on() -> None:
    def deep_answer_for_m7(message: Message) -> BaseException | None:
        return RecursionError("maximum recursion depth exceeded while decoding") if message.id == "m-7" else None

    client = StubClient(fail=deep_answer_for_m7)
    report = await asyncio.wait_for(backfill(client, history(), concurrency=4), HANG_GUARD)  # type: ignore[arg-type]
    assert (report.delivered, report.failed) == (RECORDS - 1, 1)
    assert report.failures[0].message_id == "m-7" and "recursion" in report.failures[0].reason


async def test_a_deeply_nested_answer_fails_that_record_only(tmp_path: Path) -> None:
    """A real client against a server whose answer to one message is JSON nested too deep to decode."""

    async def receive(request: web.Request) -> web.Response:
        message = await request.json()
        if message["id"] == "m-3":
            return web.Response(text='{"success": true, "data": ' + "[" * 100_000 + "]" * 100_000 + "}",
                                content_type="application/json")
        return web.json_response({"success": True, "data": message})

    app = web.Application()
    app.router.add_post("/api/v1/channels/messages/receive", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with ChannelsClient("token", base_url=f"http://127.0.0.1:{port}/api/v1",
                                  budget=RateBudget.unlimited()) as client:
            report = await asyncio.wait_for(backfill(client, history(50), concurrency=4,
                                                     checkpoint=tmp_path / "j.sqlite"), HANG_GUARD)
    finally:
        await runner.cleanup()
    assert (report.delivered, report.failed) == (49, 1) and report.failures[0].message_id == "m-3"


async def test_a_failing_input_stops_the_workers_and_is_raised() -> None:
    async def broken() -> AsyncIterator[Message]:
        for count, message in enumerate(history()):
            if count == 50:
                raise OSError("the export's disk went away")
            yield message

    with pytest.raises(OSError, match="disk went away"):
        await asyncio.wait_for(backfill(StubClient(), broken(), concurrency=4), HANG_GUARD)  # type: ignore[arg-type]


# -- 7. one writer per checkpoint -----------------------------------------------------------------------------


def test_a_second_checkpoint_on_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Checkpoint(path) as first:
        first.record(b"k", "m-1")
        with pytest.raises(CheckpointLockedError) as refused:
            Checkpoint(path)
        assert isinstance(refused.value, PipedriveError) and str(path) in str(refused.value)
    with Checkpoint(path) as again:  # released on close
        assert again.counts() == (1, 0)


_HOLDER = "import sys; from pipedrive_channels.backfill import Checkpoint; c = Checkpoint(sys.argv[1]); " \
          "print('held', flush=True); sys.stdin.read()"


async def hold(path: Path) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", _HOLDER, str(path),
                                                   stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), 30) == b"held\n"
    return process


async def test_another_process_holding_the_checkpoint_refuses_a_run_until_it_dies(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    holder = await hold(path)
    try:
        client = StubClient()
        with pytest.raises(CheckpointLockedError, match="in use"):
            await backfill(client, history(10), checkpoint=path)  # type: ignore[arg-type]
        assert client.sent == []
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: the lock goes with the process
        await holder.wait()
    report = await backfill(StubClient(), history(10), checkpoint=path)  # type: ignore[arg-type]
    assert report.delivered == 10


async def test_the_cli_refuses_a_checkpoint_in_use_with_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(body(i)) + "\n" for i in range(5)))
    journal = tmp_path / "j.sqlite"
    async with FakePipedrive() as fake:
        fake.add_access_token("token")
        holder = await hold(journal)
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEDRIVE_")}
            env.update(PIPEDRIVE_BASE_URL=fake.base_url, PIPEDRIVE_ACCESS_TOKEN="token")
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pipedrive_channels", "backfill", str(path), "--checkpoint", str(journal),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
            out, err = await asyncio.wait_for(process.communicate(), 60)
        finally:
            holder.kill()
            await holder.wait()
        assert process.returncode == 2 and out == b""
        assert err.decode().count("\n") == 1 and str(journal) in err.decode() and b"in use" in err
        assert fake.requests == []


# -- 10. an input line nested too deep ------------------------------------------------------------------------


def test_a_deeply_nested_input_line_is_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    deep = {**body(1), "message": None}
    nested = json.dumps(deep).replace("null", "[" * 100_000 + "]" * 100_000)
    path.write_text(json.dumps(body(0)) + "\n" + nested + "\n" + "[" * 100_000 + "\n" + json.dumps(body(3)) + "\n")
    items = list(read_jsonl(path))
    assert [type(item).__name__ for item in items] == ["Message", "BadInput", "BadInput", "Message"]
    assert [item.line for item in items if isinstance(item, BadInput)] == [2, 3]
    assert all("nested" in item.reason for item in items if isinstance(item, BadInput))


def test_the_dry_run_counts_a_deeply_nested_line_as_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(body(0)) + "\n" + "{\"a\": " * 100_000 + "\n")
    assert cli_module.run(["backfill", str(path), "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bad_lines"] == 1


# -- 21. CLI rough edges --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dry_run", [False, True])
def test_an_unreadable_input_file_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], dry_run: bool
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(body(0)) + "\n")
    real_open = builtins.open

    def denying_open(file: Any, *args: Any, **kwargs: Any) -> Any:  # tests run as root: chmod 000 would not do
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denying_open)
    monkeypatch.setenv("PIPEDRIVE_ACCESS_TOKEN", "token")
    args = ["backfill", str(path), "--dry-run"] if dry_run else ["backfill", str(path), "--checkpoint",
                                                                 str(tmp_path / "j.sqlite"), "--quiet"]
    assert cli_module.run(args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert str(path) in captured.err and "Permission denied" in captured.err


@pytest.mark.parametrize("value", [str(MAX_CONCURRENCY + 1), "1000000"])
def test_concurrency_has_an_upper_bound(tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(body(0)) + "\n")
    with pytest.raises(SystemExit) as exited:
        cli_module.run(["backfill", str(path), "--dry-run", "--concurrency", value])
    assert exited.value.code == 2 and f"at most {MAX_CONCURRENCY}" in capsys.readouterr().err
    assert cli_module.run(["backfill", str(path), "--dry-run", "--concurrency", str(MAX_CONCURRENCY)]) == 0


async def test_backfill_refuses_a_concurrency_past_the_bound() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        await backfill(StubClient(), [], concurrency=MAX_CONCURRENCY + 1)  # type: ignore[arg-type]


async def test_auth_login_requires_the_state_in_a_pasted_callback_url(tmp_path: Path) -> None:
    redirect = "http://127.0.0.1:9/callback"
    async with FakePipedrive(client_id="app", client_secret="app-secret") as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEDRIVE_")}
        env.update(PIPEDRIVE_CLIENT_ID="app", PIPEDRIVE_CLIENT_SECRET="app-secret")
        token_file = tmp_path / "token.json"
        args = ("-m", "pipedrive_channels", "auth", "login", "--redirect-uri", redirect, "--authorize-url",
                fake.authorize_url, "--token-url", fake.token_url, "--token-file", str(token_file))
        results = []
        for pasted in (f"{redirect}?code={fake.issue_code(redirect_uri=redirect)}",
                       f"code={fake.issue_code(redirect_uri=redirect)}",
                       f"{redirect}?code={fake.issue_code(redirect_uri=redirect)}&state=%C3%A9"):
            process = await asyncio.create_subprocess_exec(
                sys.executable, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env)
            _, err = await asyncio.wait_for(process.communicate(f"{pasted}\n".encode()), 60)
            results.append((process.returncode, err.decode()))
        assert fake.token_requests == 0 and not token_file.exists()
    for code, err in results[:2]:
        assert code == 2 and "no state" in err and "Traceback" not in err, err
    code, err = results[2]  # a state that is not even ASCII is a mismatch, not a crash
    assert code == 1 and "does not match" in err and "Traceback" not in err, err


# -- 30. progress output order --------------------------------------------------------------------------------


class Terminal(io.StringIO):
    """stdout and stderr in one: what a user sees, in the order it was written."""

    def isatty(self) -> bool:
        return True


def test_the_demo_shows_header_then_bar_then_report(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tqdm")
    screen = Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    monkeypatch.setattr(sys, "stderr", screen)
    assert cli_module.run(["demo", "--messages", "40"]) == 0
    text = screen.getvalue()
    header, bar_starts = text.index("budget: Lite plan"), text.index("0/40")
    bar_ends, report = text.rindex("40/40"), text.index("report:")
    assert header < bar_starts < bar_ends < report, text
