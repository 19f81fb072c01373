"""NotesTarget end to end against FakePipedrive on 127.0.0.1: persons searched and created, notes written,
rewritten and split, resumes, faults, and live coalescing, all seen at the server."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from factories import TOKEN
from notes_mock import until
from test_notes_target import attached, msg

from pipedrive_channels import ChannelsClient, RateBudget, RetryPolicy
from pipedrive_channels._journal import Checkpoint
from pipedrive_channels.notes import Contact, NotesTarget
from pipedrive_channels.testing import FakePipedrive

HANG_GUARD = 60
PHONE = "+3725550001"


@pytest.fixture
async def client(fake: FakePipedrive) -> AsyncIterator[ChannelsClient]:
    budget = RateBudget(requests_per_window=1_000, search_requests_per_window=None)
    async with ChannelsClient(TOKEN, base_url=fake.base_url, budget=budget,
                              retry=RetryPolicy(backoff_base=0.01)) as client:
        yield client


def notes_tasks() -> set[asyncio.Task[object]]:
    """The tasks the notes target runs (the fake's own connection handlers share the loop)."""
    return {task for task in asyncio.all_tasks()
            if getattr(task.get_coro(), "__module__", "") == "pipedrive_channels.notes._linger"
            or "Linger" in getattr(task.get_coro(), "__qualname__", "")}


def calls(fake: FakePipedrive, method: str, path: str) -> int:
    """Requests the fake answered for ``method`` on ``path`` (a note's id counts as ``{id}``)."""
    def shape(raw: str) -> str:
        return "/".join("{id}" if part.isdigit() else part for part in raw.split("/"))
    return sum(1 for request in fake.requests if request.method == method and shape(request.path).endswith(path))


async def test_lifecycle_search_create_note_update_and_status_rewrite(fake: FakePipedrive,
                                                                      client: ChannelsClient) -> None:
    target = NotesTarget()
    outcome = attached(target)
    contact = Contact(name="Ann Smith", phone=PHONE, email="ann@example.com")
    await target.deliver(client, msg(1), contact=contact)
    await target.deliver(client, msg(2))
    await target.deliver(client, msg(1, status="delivered"))
    await target.deliver(client, msg(3, day=1))  # past day 0: its note is written
    (person,) = fake.persons.values()
    assert person["name"] == "Ann Smith" and [entry["value"] for entry in person["phones"]] == [PHONE]
    assert [entry["value"] for entry in person["emails"]] == ["ann@example.com"]
    (note,) = fake.notes.values()
    assert note["person_id"] == person["id"] and note["add_time"] == "2026-01-05 09:01:00"
    assert note["content"].count("<p>") == 3 and "(delivered)" in note["content"]
    await target.deliver(client, msg(1, status="read"))  # a status rewrite of a written note
    await target.flush()
    first = fake.notes[note["id"]]
    assert "(read)" in first["content"] and "(delivered)" not in first["content"] and first["content"].count("<p>") == 3
    assert len(fake.notes) == 2 and calls(fake, "PUT", "/notes/{id}") == 1
    assert calls(fake, "GET", "/persons/search") == 2 and calls(fake, "POST", "/persons") == 1
    assert outcome.records == 5 and not outcome.failures
    assert target.counts() == {"persons_found": 0, "persons_created": 1, "persons_failed": 0, "notes_created": 2,
                               "notes_updated": 1}


async def test_a_contact_is_searched_once_across_a_resume(fake: FakePipedrive, client: ChannelsClient,
                                                          tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    fake.add_person("Bob", phones=[PHONE])
    with Checkpoint(path) as journal:
        target = NotesTarget()
        attached(target, journal)
        await target.deliver(client, msg(1), contact=Contact(phone=PHONE))
        await target.flush()
    with Checkpoint(path) as journal:
        again = NotesTarget()
        attached(again, journal)
        await again.deliver(client, msg(2, conversation="c-2"), contact=Contact(phone=PHONE))
        await again.deliver(client, msg(3), contact=Contact(phone=PHONE))
        await again.flush()
    assert calls(fake, "GET", "/persons/search") == 1 and calls(fake, "POST", "/persons") == 0
    assert len(fake.notes) == 2 and calls(fake, "PUT", "/notes/{id}") == 1  # c-1's note gained a line


async def test_person_id_is_used_without_search(fake: FakePipedrive, client: ChannelsClient) -> None:
    person_id = fake.add_person("Known")
    target = NotesTarget()
    attached(target)
    await target.deliver(client, msg(1), contact=Contact(person_id=person_id, phone=PHONE))
    await target.flush()
    assert calls(fake, "GET", "/persons/search") == 0 and [n["person_id"] for n in fake.notes.values()] == [person_id]


async def test_several_exact_matches_take_the_oldest_person(fake: FakePipedrive, client: ChannelsClient) -> None:
    oldest = fake.add_person("First", phones=[PHONE], add_time=datetime(2020, 1, 1, tzinfo=timezone.utc))
    fake.add_person("Second", phones=[PHONE])
    target = NotesTarget()
    attached(target)
    await target.deliver(client, msg(1), contact=Contact(phone=PHONE))
    await target.flush()
    assert [note["person_id"] for note in fake.notes.values()] == [oldest] and len(fake.persons) == 2


async def test_a_person_deleted_meanwhile_is_searched_once_and_written_fresh(fake: FakePipedrive,
                                                                            client: ChannelsClient) -> None:
    target = NotesTarget()
    outcome = attached(target)
    await target.deliver(client, msg(1), contact=Contact(phone=PHONE))
    await target.flush()
    (person_id,) = fake.persons
    fake.delete_person(person_id)  # its note goes with it
    await target.deliver(client, msg(2))
    await target.flush()
    assert calls(fake, "GET", "/persons/search") == 2 and calls(fake, "POST", "/persons") == 2
    (note,) = fake.notes.values()
    assert note["person_id"] != person_id and "text 1" in note["content"] and "text 2" in note["content"]
    assert outcome.records == 2 and not outcome.failures


async def test_a_400_fails_the_conversation_with_the_reason_and_a_second_run_writes_it(
        fake: FakePipedrive, client: ChannelsClient, tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    person_id = fake.add_person("Known")
    fake.fail_next(1, 400, body={"success": False, "error": "the note was refused"}, path="/notes", method="POST")
    with Checkpoint(path) as journal:
        target = NotesTarget()
        outcome = attached(target, journal)
        await target.deliver(client, msg(1), contact=Contact(person_id=person_id))
        await target.flush()
        ((message_id, reason, records),) = outcome.failures
        assert message_id == "m-1" and records == 1 and "the note was refused" in reason and not fake.notes
    with Checkpoint(path) as journal:
        again = NotesTarget()
        outcome = attached(again, journal)
        await again.deliver(client, msg(1))  # the run re-delivers the failed record: one record, now written
        await again.flush()
    assert outcome.records == 1 and not outcome.failures
    (note,) = fake.notes.values()
    assert "text 1" in note["content"]


async def test_escaping_end_to_end(fake: FakePipedrive, client: ChannelsClient) -> None:
    target = NotesTarget()
    attached(target)
    await target.deliver(client, msg(1, text="<script>alert('x')</script> & more"),
                         contact=Contact(name="<b>Eve</b>", email="eve@example.com"))
    await target.flush()
    (note,) = fake.notes.values()
    assert "&lt;script&gt;" in note["content"] and "<script>" not in note["content"] and "&amp; more" in note["content"]


async def test_the_100000_character_split_end_to_end(fake: FakePipedrive, client: ChannelsClient) -> None:
    person_id = fake.add_person("Long")
    target = NotesTarget(group_by="conversation")
    outcome = attached(target)
    records = [msg(index, text=f"{index:03d}" + "y" * 7000, day=index // 15) for index in range(45)]
    for record in records:  # 45 lines of about 7,000 characters: four notes
        await target.deliver(client, record, contact=Contact(person_id=person_id))
    await target.flush()
    requests, tokens = target.estimate((record, Contact(person_id=person_id)) for record in records)
    assert requests >= len(fake.notes) and tokens >= fake.tokens_spent
    contents = [note["content"] for note in sorted(fake.notes.values(), key=lambda note: note["id"])]
    assert len(contents) == 4 and all(len(content) <= 100_000 for content in contents)
    assert all("(continued, part" in content for content in contents[1:])
    text = "".join(contents)
    assert all(text.count(f"{index:03d}yyy") == 1 for index in range(45)) and outcome.records == 45


@pytest.mark.parametrize(("group_by", "notes"), [("day", 3), ("conversation", 1)])
async def test_group_by_both_ways(fake: FakePipedrive, client: ChannelsClient, group_by: str, notes: int) -> None:
    person_id = fake.add_person("Daily")
    target = NotesTarget(group_by=group_by)  # type: ignore[arg-type]
    attached(target)
    for day in range(3):
        for index in range(4):
            await target.deliver(client, msg(day * 4 + index, day=day), contact=Contact(person_id=person_id))
    await target.flush()
    assert len(fake.notes) == notes and calls(fake, "PUT", "/notes/{id}") == 0
    assert sum(note["content"].count("<p>") - 1 for note in fake.notes.values()) == 12
    assert sorted(note["add_time"] for note in fake.notes.values())[0] == "2026-01-05 09:00:00"


async def test_live_deliver_coalesces_a_burst_into_one_write(fake: FakePipedrive, client: ChannelsClient,
                                                             tmp_path: Path) -> None:
    person_id = fake.add_person("Live")
    async with NotesTarget(journal=tmp_path / "live.db", linger=0.5) as target:
        for index in range(50):
            await target.deliver(client, msg(index), contact=Contact(person_id=person_id))
        await asyncio.wait_for(until(lambda: bool(fake.notes)), HANG_GUARD)  # the linger's write, in the background
        assert calls(fake, "POST", "/notes") == 1 and len(fake.requests) == 1 and notes_tasks()
    assert not notes_tasks()
    (note,) = fake.notes.values()
    assert note["content"].count("<p>") == 51 and len(fake.requests) == 1  # nothing left to write at the exit


async def test_live_with_an_open_connection_and_flush_leaves_no_task(fake: FakePipedrive,
                                                                     client: ChannelsClient) -> None:
    person_id = fake.add_person("Live")
    connection = sqlite3.connect(":memory:")
    target = NotesTarget(journal=connection, linger=30)
    await target.deliver(client, msg(1), contact=Contact(person_id=person_id))
    await asyncio.wait_for(target.flush(), HANG_GUARD)  # at once, not after the 30 s linger
    assert len(fake.notes) == 1 and not notes_tasks()
    await target.deliver(client, msg(2))
    await asyncio.wait_for(target.aclose(), HANG_GUARD)
    assert not notes_tasks() and "text 2" in next(iter(fake.notes.values()))["content"]
    assert connection.execute("SELECT SUM(pending) FROM notes_lines").fetchone() == (0,)
    connection.close()


async def test_a_creating_part_is_adopted_after_a_crash_not_created_twice(
        fake: FakePipedrive, client: ChannelsClient, tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    person_id = fake.add_person("Crash")
    other = fake.add_person("Other")
    with Checkpoint(path) as journal:
        target = NotesTarget()
        attached(target, journal)
        await target.deliver(client, msg(1), contact=Contact(person_id=person_id))
        await target.deliver(client, msg(1, conversation="c-9"), contact=Contact(person_id=other))
        await target.flush()
        # The crash: the POST reached the server, its note id was never journalled, the lines stay pending.
        journal.execute("UPDATE notes_parts SET note_id = NULL, digest = NULL WHERE conversation_id = 'c-1'")
        journal.execute("UPDATE notes_lines SET pending = 1 WHERE conversation_id = 'c-1'")
    with Checkpoint(path) as journal:
        again = NotesTarget()
        outcome = attached(again, journal)
        await again.deliver(client, msg(2))
        await again.flush()
    assert calls(fake, "POST", "/notes") == 2 and calls(fake, "GET", "/notes") == 1
    (note,) = [note for note in fake.notes.values() if note["person_id"] == person_id]
    assert "text 1" in note["content"] and "text 2" in note["content"] and outcome.records == 2


async def test_the_search_window_is_never_exceeded_at_the_server(fake: FakePipedrive) -> None:
    fake.enforce_rate_limit = True
    async with ChannelsClient(TOKEN, base_url=fake.base_url, budget=RateBudget(requests_per_window=80),
                              retry=RetryPolicy(backoff_base=0.01)) as client:
        target = NotesTarget()
        outcome = attached(target)
        for index in range(12):  # 12 contacts with phone and email: 24 searches, 10 per 2 s at most
            await target.deliver(client, msg(index, conversation=f"c-{index}"),
                                 contact=Contact(phone=f"+37255{index:05d}", email=f"p{index}@example.com"))
        await asyncio.wait_for(target.flush(), HANG_GUARD)
    assert fake.search_window_peak <= 10 and calls(fake, "GET", "/persons/search") == 24
    assert len(fake.notes) == 12 and outcome.records == 12 and not outcome.failures


async def test_the_estimate_bounds_the_tokens_spent_at_the_server(fake: FakePipedrive,
                                                                  client: ChannelsClient) -> None:
    records = [(msg(index, conversation=f"c-{index % 4}", day=index // 8),
                Contact(phone=f"+37255{index % 4:05d}", email=f"p{index % 4}@example.com") if index < 4 else None)
               for index in range(24)]
    target = NotesTarget()
    requests, tokens = target.estimate(records)
    attached(target)
    for message, contact in records:
        await target.deliver(client, message, contact=contact)
    await target.flush()
    assert fake.tokens_spent <= tokens and len(fake.requests) <= requests
