"""A back-fill through the notes target, end to end against FakePipedrive: tokens, the search window, kill -9.

The export the issue names: sorted by time, 3,000 records (status updates included) in 40 conversations over 3 UTC
days, each conversation's customer named on its first record. What the notes must hold is derived from the input
alone (each message's final line, oldest first), with the transcript's pure functions.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pipedrive_channels import ChannelsClient, Message, MessageStatus, Plan, RateBudget, RetryPolicy
from pipedrive_channels import cli as cli_module
from pipedrive_channels._journal import Checkpoint, CheckpointLockedError
from pipedrive_channels.backfill import ChannelsTarget, WithContact, backfill, estimate, read_jsonl
from pipedrive_channels.models import converter
from pipedrive_channels.notes import Contact, NotesTarget
from pipedrive_channels.notes._transcript import add_time_of, contents_of, line_of
from pipedrive_channels.testing import FakePipedrive

TOKEN = "notes-token"
START = datetime(2026, 3, 1, tzinfo=timezone.utc)
CHANNEL = "wa"


def contact_of(conversation: int) -> Contact:
    """A mix: a phone and a name, an email alone, both (the search tries the phone, then the email)."""
    if conversation % 3 == 0:
        return Contact(name=f"Customer {conversation}", phone=f"+1555{conversation:07d}")
    if conversation % 3 == 1:
        return Contact(email=f"customer-{conversation}@example.com")
    return Contact(phone=f"+1666{conversation:07d}", email=f"both-{conversation}@example.com")


def export(records: int = 3_000, conversations: int = 40, days: int = 3) -> Iterator[Message | WithContact]:
    """The export, sorted by time: every third record is a status update of the message two records back."""
    step = timedelta(days=days) / records
    seen: set[str] = set()
    for index in range(records):
        original = index - 2 if index % 3 == 2 else index
        status = MessageStatus.SENT if original == index else (
            MessageStatus.READ if index % 2 else MessageStatus.DELIVERED)
        conversation = original % conversations
        message = Message(id=f"m-{original}", channel_id=CHANNEL, sender_id=f"customer-{conversation}",
                          conversation_id=f"c-{conversation}", message=f"text {original} <b>&</b>", status=status,
                          created_at=START + original * step)
        if message.conversation_id in seen:
            yield message
        else:
            seen.add(message.conversation_id)
            yield WithContact(message, contact_of(conversation))


def write_export(path: Path, items: Iterator[Message | WithContact]) -> Path:
    with path.open("w", encoding="utf-8") as file:
        for item in items:
            if isinstance(item, WithContact):
                line = {**converter.unstructure(item.message),
                        "contact": {k: v for k, v in converter.unstructure(item.contact).items() if v is not None}}
            else:
                line = converter.unstructure(item)
            file.write(json.dumps(line) + "\n")
    return path


def expected_notes(items: Iterator[Message | WithContact]) -> dict[tuple[str, str], list[str]]:
    """(conversation, day) -> the contents its notes must hold: each message's last record's line, oldest first."""
    final: dict[str, Message] = {}
    for item in items:
        message = item.message if isinstance(item, WithContact) else item
        final[message.id] = message
    groups: dict[tuple[str, str], list[Message]] = {}
    for message in final.values():
        groups.setdefault((message.conversation_id, f"{message.created_at:%Y-%m-%d}"), []).append(message)
    return {
        (conversation, day): contents_of(conversation, day, [line_of(m) for m in sorted(ms, key=_created)])
        for (conversation, day), ms in groups.items()
    }


def _created(message: Message) -> datetime:
    return message.created_at


def first_times(items: Iterator[Message | WithContact]) -> dict[tuple[str, str], str]:
    """(conversation, day) -> the add_time its first note must carry."""
    firsts: dict[tuple[str, str], datetime] = {}
    for item in items:
        message = item.message if isinstance(item, WithContact) else item
        key = (message.conversation_id, f"{message.created_at:%Y-%m-%d}")
        firsts[key] = min(firsts.get(key, message.created_at), message.created_at)
    return {key: add_time_of(at) for key, at in firsts.items()}


def assert_notes_match(fake: FakePipedrive, items: list[Message | WithContact]) -> None:
    """Every note the input implies is at the fake once, with all its lines and its add_time; nothing else."""
    expected = expected_notes(iter(items))
    held = sorted(note["content"] for note in fake.notes.values())
    assert held == sorted(content for contents in expected.values() for content in contents)
    times = first_times(iter(items))
    by_content = {note["content"]: note for note in fake.notes.values()}
    for key, contents in expected.items():
        assert by_content[contents[0]]["add_time"] == times[key], key


def posts(fake: FakePipedrive, suffix: str) -> int:
    return sum(1 for r in fake.requests if r.method == "POST" and r.path.endswith(suffix) and r.status == 200)


def client_for(fake: FakePipedrive, budget: RateBudget) -> ChannelsClient:
    return ChannelsClient(TOKEN, base_url=fake.base_url, budget=budget, retry=RetryPolicy(backoff_base=0.01))


@pytest.fixture
async def fake() -> Any:
    async with FakePipedrive(rate_limit=10_000, enforce_rate_limit=True) as server:
        server.add_access_token(TOKEN)
        server.add_channel(CHANNEL, "WhatsApp")
        yield server


# -- the token figure and the search window ----------------------------------------------------------------------


async def test_notes_spend_at_most_15_percent_of_the_channels_tokens_and_keep_the_search_window(
    fake: FakePipedrive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    items = list(export())
    assert len(items) == 3_000 and len({(m.message if isinstance(m, WithContact) else m).conversation_id
                                        for m in items}) == 40
    fake.tokens_spent = 0
    async with client_for(fake, RateBudget.unlimited()) as client:
        channels = await backfill(client, items, concurrency=16, checkpoint=tmp_path / "channels.sqlite")
    channels_tokens = fake.tokens_spent
    assert (channels.delivered, channels.failed) == (3_000, 0)

    fake.tokens_spent = 0
    budget = RateBudget(requests_per_window=5_000, window=2.0)  # the search window (10 per 2 s) is its default
    async with client_for(fake, budget) as client:
        notes = await asyncio.wait_for(
            backfill(client, items, concurrency=16, checkpoint=tmp_path / "notes.sqlite", target=NotesTarget()),
            timeout=120)
    notes_tokens = fake.tokens_spent
    share = notes_tokens / channels_tokens
    with capsys.disabled():
        print(f"\n  tokens spent at the fake for the same 3,000 records: Channels {channels_tokens:,}, notes "
              f"{notes_tokens:,} ({share:.1%}); notes counts {dict(notes.counts)}")
    assert (notes.delivered, notes.failed, notes.stopped) == (3_000, 0, False)
    assert share <= 0.15
    assert fake.search_window_peak <= 10
    assert not [r for r in fake.requests if r.status == 429]
    assert len(fake.persons) == notes.counts["persons_created"] == 40
    assert notes.counts["notes_created"] == len(fake.notes) == len(expected_notes(iter(items)))
    assert_notes_match(fake, items)
    planned = estimate(items, budget, NotesTarget())
    assert notes_tokens <= planned.tokens <= estimate(items, budget, ChannelsTarget()).tokens * 0.15


# -- kill -9 mid-run, then resume ---------------------------------------------------------------------------------


async def _cli(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipedrive_channels", *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)


def _env(fake: FakePipedrive) -> dict[str, str]:
    import os

    env = {key: value for key, value in os.environ.items() if not key.startswith("PIPEDRIVE_")}
    return {**env, "PIPEDRIVE_BASE_URL": fake.base_url, "PIPEDRIVE_ACCESS_TOKEN": TOKEN}


@pytest.mark.parametrize("group_by", ["day", "conversation"])
async def test_kill_9_mid_run_then_resume_creates_nothing_twice_and_every_note_has_all_its_lines(
    tmp_path: Path, group_by: str
) -> None:
    path = write_export(tmp_path / "export.jsonl", export(records=1_500, conversations=20))
    items = [item for item in read_jsonl(path) if isinstance(item, Message | WithContact)]  # times to the minute
    args = ("backfill", str(path), "--checkpoint", str(tmp_path / "journal.sqlite"), "--target", "notes",
            "--group-by", group_by, "--plan", "unlimited", "--concurrency", "8", "--json", "--quiet")
    async with FakePipedrive() as fake:
        fake.add_access_token(TOKEN)
        fake.latency = 0.02  # slow writes: the kill lands while notes are being written
        first = await _cli(*args, env=_env(fake))
        for _ in range(6000):
            if len(fake.notes) >= 3 or first.returncode is not None:
                break
            await asyncio.sleep(0.005)
        assert first.returncode is None, "the first run ended before the kill: nothing was tested"
        first.kill()
        await asyncio.wait_for(first.communicate(), 30)
        assert first.returncode == -signal.SIGKILL
        written_before = len(fake.notes)
        fake.latency = 0.0
        second = await _cli(*args, env=_env(fake))
        out, err = await asyncio.wait_for(second.communicate(), 120)
        assert second.returncode == 0, err.decode()
        report = json.loads(out)
        assert report["failed"] == 0 and not report["stopped"] and report["skipped"] > 0
        assert written_before < len(fake.notes), "every note was written before the kill: nothing was tested"
        assert len(fake.persons) == posts(fake, "/api/v2/persons") == 20  # no person created twice
        assert len(fake.notes) == posts(fake, "/notes")  # no note created twice
        if group_by == "day":
            assert_notes_match(fake, items)
        else:
            expected = {key[0]: [] for key in expected_notes(iter(items))}
            final: dict[str, Message] = {}
            for item in items:
                message = item.message if isinstance(item, WithContact) else item
                final[message.id] = message
            for message in sorted(final.values(), key=_created):
                expected[message.conversation_id].append(line_of(message))
            wanted = sorted(c for conversation, lines in expected.items() for c in contents_of(conversation, "", lines))
            assert sorted(note["content"] for note in fake.notes.values()) == wanted


# -- a contact that matches nobody, and two writers --------------------------------------------------------------


async def test_a_contact_that_matches_nobody_fails_its_records_and_the_run_goes_on(tmp_path: Path) -> None:
    items = list(export(records=60, conversations=4, days=1))
    path = write_export(tmp_path / "export.jsonl", iter(items))
    async with FakePipedrive() as fake:
        fake.add_access_token(TOKEN)
        fake.add_person("Customer 0", phones=["+15550000000"])  # conversation 0, by phone
        fake.add_person("Customer 2", emails=["both-2@example.com"])  # conversation 2, by its email
        fake.add_person("Customer 3", phones=["+15550000003"])  # conversation 1 (an email) matches nobody
        process = await _cli("backfill", str(path), "--checkpoint", str(tmp_path / "journal.sqlite"), "--target",
                             "notes", "--no-create-persons", "--plan", "unlimited", "--json", env=_env(fake))
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 1, err.decode()  # something failed
        report = json.loads(out)
        unresolved = sum((m.message if isinstance(m, WithContact) else m).conversation_id == "c-1" for m in items)
        assert report["failed"] == unresolved and report["delivered"] == 60 - unresolved and not report["stopped"]
        reasons = {failure["reason"] for failure in report["failures"]}
        assert reasons == {"conversation 'c-1': no Pipedrive person matches the contact's email exactly, and "
                           "create_persons is False"}
        assert {failure["message_id"] for failure in report["failures"]} <= {
            m.message.id if isinstance(m, WithContact) else m.id for m in items
            if (m.message if isinstance(m, WithContact) else m).conversation_id == "c-1"}
        counts = report["counts"]
        assert (counts["persons_found"], counts["persons_created"], counts["persons_failed"]) == (3, 0, 1)
        assert len(fake.persons) == 3 and posts(fake, "/api/v2/persons") == 0
        assert {note["person_id"] for note in fake.notes.values()} == set(fake.persons)


def test_a_second_cli_run_on_a_journal_in_use_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_export(tmp_path / "export.jsonl", export(records=30, conversations=4, days=1))
    journal = tmp_path / "journal.sqlite"
    monkeypatch.setenv("PIPEDRIVE_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("PIPEDRIVE_BASE_URL", "http://127.0.0.1:9/v1")
    with Checkpoint(journal):  # another run holds it
        assert cli_module.run(["backfill", str(path), "--checkpoint", str(journal), "--target", "notes"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in use by another run" in err


async def test_two_notes_back_fills_on_one_journal_the_second_is_refused(tmp_path: Path) -> None:
    items = list(export(records=300, conversations=4, days=1))
    journal = tmp_path / "journal.sqlite"
    async with FakePipedrive() as fake:
        fake.add_access_token(TOKEN)
        fake.latency = 0.01
        async with client_for(fake, RateBudget.unlimited()) as client:
            first = asyncio.ensure_future(backfill(client, items, checkpoint=journal, target=NotesTarget()))
            for _ in range(2000):  # until the first run holds the journal and is writing
                if fake.requests:
                    break
                await asyncio.sleep(0.005)
            with pytest.raises(CheckpointLockedError, match="in use by another run"):
                await backfill(client, items, checkpoint=journal, target=NotesTarget())
            report = await asyncio.wait_for(first, 60)
    assert (report.delivered, report.failed) == (300, 0)
    assert len(fake.notes) == 4 and len(fake.persons) == 4  # the refused run wrote nothing


# -- the dry run ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["channels", "notes"])
def test_the_dry_run_prints_both_estimates_whatever_the_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    items = list(export())
    path = write_export(tmp_path / "export.jsonl", iter(items))
    budget = RateBudget.for_plan(Plan.LITE, 1)
    channels, notes = estimate(read_jsonl(path), budget), estimate(read_jsonl(path), budget, NotesTarget())
    assert notes.tokens <= channels.tokens * 0.15
    assert cli_module.run(["backfill", str(path), "--dry-run", "--target", target]) == 0
    out = capsys.readouterr().out
    chosen = out.index(f"--target {target}:")
    assert "(chosen)" in out[chosen:].splitlines()[0]
    for name, result in (("channels", channels), ("notes", notes)):
        block = out[out.index(f"--target {name}:"):]
        assert f"requests:  {result.requests:,}" in block and f"tokens:    {result.tokens:,}" in block
    assert out.count("time:      about") == 2
    assert cli_module.run(["backfill", str(path), "--dry-run", "--json", "--target", target]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["target"] == target and data["tokens"] == (notes if target == "notes" else channels).tokens
    assert data["estimates"]["channels"]["tokens"] == channels.tokens
    assert data["estimates"]["notes"]["requests"] == notes.requests
    assert set(data["estimates"]) == {"channels", "notes"}
