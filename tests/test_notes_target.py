"""NotesTarget against a stateful mock of Pipedrive's persons and notes (aioresponses): the Target contract,
coalescing, crash recovery and failures."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from notes_mock import BASE, MockPipedrive, until

from pipedrive_channels import ChannelsClient, Message, MessageStatus, Priority, RateBudget, RetryPolicy
from pipedrive_channels._journal import Checkpoint, CheckpointError
from pipedrive_channels.errors import BudgetExhaustedError, ValidationError
from pipedrive_channels.notes import Contact, NotesTarget

DAY = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
PHONE = "+3725550001"
HANG_GUARD = 30


class Outcome:
    def __init__(self) -> None:
        self.records = 0
        self.failures: list[tuple[str | None, str, int]] = []

    def delivered(self, records: int = 1) -> None:
        self.records += records

    def failed(self, message_id: str | None, reason: str, records: int = 1) -> None:
        self.failures.append((message_id, reason, records))


def msg(index: int, *, conversation: str = "c-1", day: int = 0, status: str = "sent", text: str | None = None,
        minutes: int | None = None) -> Message:
    created = DAY + timedelta(days=day, minutes=index if minutes is None else minutes)
    return Message(id=f"m-{index}", channel_id="ch", sender_id="customer", conversation_id=conversation,
                   message=f"text {index}" if text is None else text, status=MessageStatus(status),
                   created_at=created)



def attached(target: NotesTarget, journal: Checkpoint | None = None) -> Outcome:
    outcome = Outcome()
    target.attach(journal, outcome, priority=Priority.BULK, deadline=None)
    return outcome


async def test_lifecycle_search_create_note_then_update_on_a_status_rewrite(
        pd: MockPipedrive, api: ChannelsClient) -> None:
    target = NotesTarget()
    outcome = attached(target)
    contact = Contact(name="Ann", phone=PHONE, email="ann@example.com")
    await target.deliver(api, msg(1), contact=contact)
    await target.deliver(api, msg(2))
    await target.deliver(api, msg(1, status="read"))  # a status update: rewrites m-1's line
    assert pd.calls == []  # nothing written before the day is over
    await target.deliver(api, msg(3, day=1))  # the input moved past day 0: its group is written
    assert [call for call in pd.calls] == [("GET", "/api/v2/persons/search"), ("GET", "/api/v2/persons/search"),
                                           ("POST", "/api/v2/persons"), ("POST", "/v1/notes")]
    (person,) = pd.persons.values()
    assert person["name"] == "Ann" and person["phones"] == [PHONE] and person["emails"] == ["ann@example.com"]
    (note,) = pd.notes.values()
    assert note["person_id"] == person["id"] and note["add_time"] == "2026-01-05 09:01:00"
    assert note["content"].count("<p>") == 3 and "(read)" in note["content"] and "(sent)" in note["content"]
    assert outcome.records == 3
    await target.deliver(api, msg(2, status="delivered"))  # a late update to a written day: PUT at the flush
    await target.flush()
    assert pd.count("PUT", "/v1/notes") == 1 and pd.count("POST", "/v1/notes") == 2  # day 1's note is new
    assert "(delivered)" in note["content"] and note["content"].count("<p>") == 3
    assert outcome.records == 5 and outcome.failures == []
    assert target.counts() == {"persons_found": 0, "persons_created": 1, "persons_failed": 0, "notes_created": 2,
                               "notes_updated": 1}


async def test_a_record_delivered_twice_is_one_record_and_costs_nothing_more(
        pd: MockPipedrive, api: ChannelsClient) -> None:
    target = NotesTarget()
    outcome = attached(target)
    await target.deliver(api, msg(1), contact=Contact(person_id=7))
    pd.add_person("seven")  # id 101; the contact names person 7, which must exist
    pd.persons[7] = {"id": 7, "name": "Seven", "phones": [], "emails": []}
    await target.flush()
    await target.deliver(api, msg(1))
    await target.flush()
    assert outcome.records == 1 and pd.count("POST", "/v1/notes") == 1 and pd.count("PUT", "/v1/notes") == 0


async def test_person_id_is_used_without_search(pd: MockPipedrive, api: ChannelsClient) -> None:
    pd.persons[42] = {"id": 42, "name": "Known", "phones": [], "emails": []}
    target = NotesTarget()
    attached(target)
    await target.deliver(api, msg(1), contact=Contact(person_id=42, phone=PHONE))
    await target.flush()
    assert pd.calls == [("POST", "/v1/notes")] and pd.notes_of(42)


async def test_several_exact_matches_take_the_oldest_person(
        pd: MockPipedrive, api: ChannelsClient, caplog: pytest.LogCaptureFixture) -> None:
    newer, older = pd.add_person("B", PHONE), pd.add_person("A", PHONE)
    pd.persons = {older: pd.persons[older], newer: pd.persons[newer]}
    older, newer = min(older, newer), max(older, newer)
    target = NotesTarget()
    attached(target)
    await target.deliver(api, msg(1, conversation="c-1"), contact=Contact(phone=PHONE))
    await target.deliver(api, msg(2, conversation="c-2"), contact=Contact(phone=PHONE))
    await target.flush()
    assert pd.count("GET", "/api/v2/persons/search") == 1  # once per distinct contact
    assert {note["person_id"] for note in pd.notes.values()} == {older}
    assert sum("matches 2 Pipedrive persons" in record.message for record in caplog.records) == 1
    assert PHONE not in caplog.text  # the contact's details are not logged
    assert target.counts()["persons_found"] == 1


async def test_a_contact_is_searched_once_across_a_resume(
        pd: MockPipedrive, api: ChannelsClient, tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    with Checkpoint(path) as journal:
        target = NotesTarget()
        attached(target, journal)
        await target.deliver(api, msg(1), contact=Contact(email="x@example.com"))
        await target.flush()
    with Checkpoint(path) as journal:
        again = NotesTarget()
        attached(again, journal)
        await again.deliver(api, msg(2, conversation="c-2"), contact=Contact(email="x@example.com"))
        await again.flush()
    assert pd.count("GET", "/api/v2/persons/search") == 1 and pd.count("POST", "/api/v2/persons") == 1
    assert len(pd.notes) == 2 and again.counts()["persons_created"] == 0


async def test_without_create_persons_an_unmatched_contact_fails_its_records(
        pd: MockPipedrive, api: ChannelsClient) -> None:
    target = NotesTarget(create_persons=False)
    outcome = attached(target)
    await target.deliver(api, msg(1), contact=Contact(phone=PHONE))
    await target.deliver(api, msg(1, status="read"))
    await target.deliver(api, msg(2, conversation="c-2"))  # no record of c-2 carries a contact
    await target.flush()
    assert pd.count("POST", "/api/v2/persons") == 0 and not pd.notes
    reasons = {message_id: (reason, records) for message_id, reason, records in outcome.failures}
    assert reasons["m-1"][1] == 2 and "create_persons is False" in reasons["m-1"][0]
    assert "carried a contact" in reasons["m-2"][0]
    assert target.counts()["persons_failed"] == 1


async def test_a_400_fails_the_conversation_with_the_servers_reason_and_a_rerun_writes_it(
        pd: MockPipedrive, api: ChannelsClient, tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    pd.persons[5] = {"id": 5, "name": "Five", "phones": [], "emails": []}
    pd.fail.append(("POST", "/v1/notes", 400, {"success": False, "error": "content is too long"}))
    with Checkpoint(path) as journal:
        target = NotesTarget()
        outcome = attached(target, journal)
        await target.deliver(api, msg(1), contact=Contact(person_id=5))
        await target.deliver(api, msg(2))
        await target.flush()
        assert outcome.records == 0 and not pd.notes
        assert [(m, r) for m, _, r in outcome.failures] == [("m-1", 1), ("m-2", 1)]
        assert all("content is too long" in reason for _, reason, _ in outcome.failures)
        await target.flush()  # not tried again in the same run, and reported once
        assert len(outcome.failures) == 2 and pd.count("POST", "/v1/notes") == 1
    with Checkpoint(path) as journal:
        again = NotesTarget()
        outcome = attached(again, journal)
        await again.flush(api)  # nothing delivered in this run: the client is given
        assert outcome.records == 2 and len(pd.notes) == 1


async def test_a_person_deleted_meanwhile_is_searched_once_and_the_notes_written_fresh(
        pd: MockPipedrive, api: ChannelsClient) -> None:
    target = NotesTarget()
    attached(target)
    await target.deliver(api, msg(1), contact=Contact(phone=PHONE))
    await target.flush()
    (person_id,) = pd.persons
    pd.delete_person(person_id)  # its notes go with it
    await target.deliver(api, msg(1, status="read"))
    await target.flush()
    assert pd.count("GET", "/api/v2/persons/search") == 2 and pd.count("POST", "/api/v2/persons") == 2
    (new_person,) = pd.persons
    (note,) = pd.notes.values()
    assert note["person_id"] == new_person and "(read)" in note["content"]


async def test_a_creating_part_is_adopted_not_created_twice(pd: MockPipedrive, api: ChannelsClient,
                                                            tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    pd.persons[5] = {"id": 5, "name": "Five", "phones": [], "emails": []}
    with Checkpoint(path) as journal:
        target = NotesTarget()
        attached(target, journal)
        await target.deliver(api, msg(1), contact=Contact(person_id=5))
        await target.flush()
        # The crash: the POST happened, its id was never journalled.
        journal.execute("UPDATE notes_parts SET note_id = NULL, digest = NULL")
        journal.execute("UPDATE notes_lines SET pending = 1")
    with Checkpoint(path) as journal:
        again = NotesTarget()
        outcome = attached(again, journal)
        await again.deliver(api, msg(2))
        await again.flush()
    assert len(pd.notes) == 1 and pd.count("POST", "/v1/notes") == 1 and pd.count("GET", "/v1/notes") == 1
    (note,) = pd.notes.values()
    assert "text 1" in note["content"] and "text 2" in note["content"] and outcome.records == 2


async def test_escaping_reaches_the_note(pd: MockPipedrive, api: ChannelsClient) -> None:
    pd.persons[5] = {"id": 5, "name": "Five", "phones": [], "emails": []}
    target = NotesTarget()
    attached(target)
    await target.deliver(api, msg(1, text="<script>alert(1)</script>"), contact=Contact(person_id=5))
    await target.flush()
    (note,) = pd.notes.values()
    assert "&lt;script&gt;" in note["content"] and "<script>" not in note["content"]


async def test_a_long_transcript_continues_in_new_notes(pd: MockPipedrive, api: ChannelsClient) -> None:
    pd.persons[5] = {"id": 5, "name": "Five", "phones": [], "emails": []}
    target = NotesTarget(group_by="conversation")
    outcome = attached(target)
    for index in range(60):  # 60 lines of ~5,000 characters: three or four notes
        await target.deliver(api, msg(index, text="x" * 5000, day=index // 20),
                             contact=Contact(person_id=5) if index == 0 else None)
    await target.flush()
    notes = sorted(pd.notes.values(), key=lambda note: note["id"])
    assert len(notes) >= 3 and all(len(note["content"]) <= 100_000 for note in notes)
    assert "(continued, part 2)" in notes[1]["content"]
    assert sum(note["content"].count("text") + note["content"].count("xxxxx</p>") for note in notes) >= 60
    assert sum(note["content"].count("<p>") - 1 for note in notes) == 60 and outcome.records == 60
    assert notes[1]["add_time"] > notes[0]["add_time"]  # each part lands at its first line's time


async def test_group_by_day_writes_one_note_per_day(pd: MockPipedrive, api: ChannelsClient) -> None:
    pd.persons[5] = {"id": 5, "name": "Five", "phones": [], "emails": []}
    target = NotesTarget(group_by="day")
    attached(target)
    for day in range(3):
        await target.deliver(api, msg(day, day=day), contact=Contact(person_id=5))
    await target.flush()
    assert sorted(note["add_time"][:10] for note in pd.notes.values()) == ["2026-01-05", "2026-01-06", "2026-01-07"]


async def test_the_journal_keeps_its_grouping(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    with Checkpoint(path) as journal:
        attached(NotesTarget(group_by="day"), journal)
    with Checkpoint(path) as journal, pytest.raises(ValidationError, match="group_by"):
        attached(NotesTarget(group_by="conversation"), journal)


def test_a_journal_of_its_own_inside_a_backfill_with_a_checkpoint_is_refused(tmp_path: Path) -> None:
    with Checkpoint(tmp_path / "run.db") as journal, pytest.raises(ValidationError, match="journal"):
        attached(NotesTarget(journal=tmp_path / "notes.db"), journal)


@pytest.mark.parametrize("arguments", [{"group_by": "week"}, {"linger": -1}, {"linger": float("inf")},
                                       {"create_persons": "yes"}, {"journal": 3}])
def test_bad_arguments_are_refused(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        NotesTarget(**arguments)


async def test_live_a_burst_becomes_one_write_and_async_with_leaves_no_task(
        pd: MockPipedrive, api: ChannelsClient, tmp_path: Path) -> None:
    pd.persons[5] = {"id": 5, "name": "Five", "phones": [], "emails": []}
    before = asyncio.all_tasks()
    async with NotesTarget(journal=tmp_path / "notes.db", linger=0.2) as target:
        for index in range(50):
            await target.deliver(api, msg(index), contact=Contact(person_id=5))
        await asyncio.wait_for(pd.noted.wait(), HANG_GUARD)  # the linger's one write
        assert pd.count("POST", "/v1/notes") == 1 and pd.calls == [("POST", "/v1/notes")]
        await target.deliver(api, msg(50))
    assert asyncio.all_tasks() == before  # the background task ended with the block
    (note,) = pd.notes.values()
    assert note["content"].count("<p>") == 52 and pd.count("PUT", "/v1/notes") == 1


async def test_live_state_in_an_open_connection_survives_the_target(pd: MockPipedrive, api: ChannelsClient) -> None:
    pd.persons[5] = {"id": 5, "name": "Five", "phones": [], "emails": []}
    connection = sqlite3.connect(":memory:")
    async with NotesTarget(journal=connection, linger=None) as target:
        await target.deliver(api, msg(1), contact=Contact(person_id=5))
        assert len(pd.notes) == 1  # linger None: written at once
    rows = connection.execute("SELECT pending FROM notes_lines").fetchall()
    assert rows == [(0,)]
    connection.close()


async def test_an_answer_without_an_id_fails_the_conversation_naming_the_field(
        pd: MockPipedrive, api: ChannelsClient) -> None:
    pd.fail.append(("POST", "/api/v2/persons", 201, {"success": True, "data": {"name": "no id"}}))
    target = NotesTarget()
    outcome = attached(target)
    await target.deliver(api, msg(1), contact=Contact(phone=PHONE))
    await target.flush()
    ((_, reason, _),) = outcome.failures
    assert "data.id" in reason


async def test_a_corrupt_journal_row_is_a_checkpoint_error_naming_the_field(
        pd: MockPipedrive, api: ChannelsClient, tmp_path: Path) -> None:
    with Checkpoint(tmp_path / "run.db") as journal:
        target = NotesTarget()
        attached(target, journal)
        await target.deliver(api, msg(1), contact=Contact(person_id=5))
        journal.execute("UPDATE notes_contacts SET contact = '{\"person_id\": \"five\"}'")
        with pytest.raises(CheckpointError, match=r"notes_contacts\.contact"):
            await target.flush()
        journal.execute("UPDATE notes_lines SET pending = 'many'")
        with pytest.raises(CheckpointError, match=r"notes_lines\.pending"):
            await target.flush()


def test_estimate_counts_searches_creates_and_note_posts() -> None:
    target = NotesTarget()
    records = [(msg(1), Contact(phone=PHONE, email="a@example.com")), (msg(2), None),
               (msg(3, conversation="c-2"), Contact(phone=PHONE, email="a@example.com")),  # the same contact
               (msg(4, conversation="c-3", day=1), Contact(person_id=9))]
    requests, tokens = target.estimate(records)
    # 2 searches (20 each) and a create (5) for the one contact; a note (10) per group: c-1, c-2, c-3.
    assert (requests, tokens) == (2 + 1 + 3, 2 * 20 + 5 + 3 * 10)


async def test_sixteen_concurrent_workers_write_every_line_once_in_one_note_per_group(
        pd: MockPipedrive, api: ChannelsClient) -> None:
    # An export sorted by time: 3 days, 40 conversations, 10 messages per conversation per day, each followed a
    # minute later by its delivered and read updates; delivered by 16 workers as a back-fill does.
    records = []
    for day in range(3):
        for minute in range(10):
            for conversation in range(40):
                index = (day * 10 + minute) * 40 + conversation
                for status in ("sent", "delivered", "read"):
                    records.append(msg(index, conversation=f"c-{conversation}", day=day, status=status,
                                       minutes=minute * 30))
    contacts = {f"c-{n}": Contact(phone=f"+37255{n:05d}") for n in range(40)}
    target = NotesTarget()
    outcome = attached(target)
    queue: asyncio.Queue[Message] = asyncio.Queue()
    for record in records:
        queue.put_nowait(record)

    async def worker() -> None:
        while not queue.empty():
            record = queue.get_nowait()
            await target.deliver(api, record, contact=contacts[record.conversation_id])

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(16))), HANG_GUARD)
    await asyncio.wait_for(target.flush(), HANG_GUARD)
    assert outcome.records == len(records) and outcome.failures == []
    assert len(pd.notes) == 120 and pd.count("POST", "/v1/notes") == 120
    assert pd.count("GET", "/api/v2/persons/search") == 40 and pd.count("POST", "/api/v2/persons") == 40
    text = "".join(note["content"] for note in pd.notes.values())
    for index in range(1200):
        assert text.count(f"text {index}</p>") == 1
    assert text.count("(read):") == 1200 and "(sent):" not in text
    assert target.counts()["notes_updated"] <= 40  # late updates to an old day: one PUT per group at most


async def test_a_spent_budget_propagates_and_the_retried_deliver_is_one_record(
        pd: MockPipedrive, api: ChannelsClient, monkeypatch: pytest.MonkeyPatch) -> None:
    pd.persons[5] = {"id": 5, "name": "Five", "phones": [], "emails": []}
    target = NotesTarget()
    outcome = attached(target)
    await target.deliver(api, msg(1), contact=Contact(person_id=5))
    request = api.request
    calls = iter([True])

    async def refuse_first(*args: Any, **kwargs: Any) -> Any:
        if next(calls, False):
            raise BudgetExhaustedError("spent", retry_after=1.0)
        return await request(*args, **kwargs)

    monkeypatch.setattr(api, "request", refuse_first)
    with pytest.raises(BudgetExhaustedError):
        await target.deliver(api, msg(2, day=1))  # the boundary's write is refused
    assert not pd.notes
    await target.deliver(api, msg(2, day=1))  # the run retries it: the boundary is written now
    assert len(pd.notes) == 1 and outcome.records == 1
    await target.flush()
    assert outcome.records == 2 and len(pd.notes) == 2


async def test_every_call_has_the_runs_priority_and_the_time_left_as_timeout(
        pd: MockPipedrive, api: ChannelsClient, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Any, Any]] = []
    request = api.request

    async def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append((kwargs["priority"], kwargs["timeout"]))
        return await request(*args, **kwargs)

    monkeypatch.setattr(api, "request", spy)
    target = NotesTarget()
    target.attach(None, Outcome(), priority=Priority.BULK, deadline=time.monotonic() + 100)
    await target.deliver(api, msg(1), contact=Contact(phone=PHONE))
    await target.flush()
    assert len(seen) == 3 and all(priority is Priority.BULK and 0 < timeout <= 100 for priority, timeout in seen)


async def test_live_a_failed_write_is_logged_without_secrets_and_kept_pending(
        pd: MockPipedrive, caplog: pytest.LogCaptureFixture) -> None:
    pd.persons[5] = {"id": 5, "name": "Five", "phones": [], "emails": []}
    pd.fail.append(("POST", "/v1/notes", 500, {"success": False, "error": "boom"}))
    secret = "s3cr3t-access-token"
    async with ChannelsClient(secret, base_url=BASE, budget=RateBudget.unlimited(), retry=RetryPolicy.none()) as api:
        async with NotesTarget(linger=0.05) as target:
            await target.deliver(api, msg(1), contact=Contact(person_id=5))
            await asyncio.wait_for(until(lambda: "stay pending" in caplog.text), HANG_GUARD)
            assert not pd.notes and "boom" in caplog.text and "stay pending" in caplog.text
            await target.deliver(api, msg(2))  # dirty again: tried again after the linger
            await asyncio.wait_for(pd.noted.wait(), HANG_GUARD)
        (note,) = pd.notes.values()
        assert "text 1" in note["content"] and "text 2" in note["content"]
    assert secret not in caplog.text


async def test_a_dirty_group_waits_its_linger_once_however_many_messages_come(
        pd: MockPipedrive, api: ChannelsClient) -> None:
    pd.persons[5] = {"id": 5, "name": "Five", "phones": [], "emails": []}
    async with NotesTarget(linger=0.3) as target:
        await target.deliver(api, msg(1, conversation="c-1"), contact=Contact(person_id=5))
        await target.deliver(api, msg(2, conversation="c-2"), contact=Contact(person_id=5))
        for index in range(3, 30):
            await target.deliver(api, msg(index, conversation="c-1"))
        await asyncio.wait_for(until(lambda: pd.count("POST", "/v1/notes") == 2), HANG_GUARD)
        assert pd.count("PUT", "/v1/notes") == 0  # c-1's 28 messages: one write
    assert pd.count("PUT", "/v1/notes") == 0  # nothing changed since: the exit writes nothing
