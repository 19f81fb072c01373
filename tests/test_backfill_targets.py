"""The back-fill over any target: a third one needs no pipeline change; contacts in the input and in the journal."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from factories import history, message, wire_message

import pipedrive_channels
from pipedrive_channels import BadRequestError, BudgetExhaustedError, Message, Priority, RateBudget
from pipedrive_channels._journal import Checkpoint
from pipedrive_channels._target import Outcome
from pipedrive_channels._wire import RECEIVE_MESSAGE, dumps
from pipedrive_channels.backfill import (
    BackfillReport,
    BadInput,
    ChannelsTarget,
    Progress,
    Target,
    WithContact,
    backfill,
    estimate,
    read_jsonl,
)
from pipedrive_channels.models import converter
from pipedrive_channels.notes import Contact
from pipedrive_channels.testing import FakePipedrive

PHONE = Contact(phone="+15550001")


class NoClient:
    """All a run needs of a client when its target sends nothing: the budget it reports from."""

    budget = RateBudget.unlimited()


class Recording:
    """A target that records each record to a list as it comes (nothing held)."""

    def __init__(self, fail_ids: Iterable[str] = ()) -> None:
        self.received: list[tuple[str, str, Contact | None]] = []
        self.attached: list[tuple[Checkpoint | None, Priority, float | None]] = []
        self.flushes = 0
        self.fail_ids = set(fail_ids)
        self.outcome: Outcome | None = None

    def attach(self, journal: Checkpoint | None, outcome: Outcome, *, priority: Priority,
               deadline: float | None) -> None:
        self.attached.append((journal, priority, deadline))
        self.outcome = outcome

    async def deliver(self, client: Any, message: Message, *, contact: Contact | None = None) -> None:
        await asyncio.sleep(0)
        if message.id in self.fail_ids:
            raise BadRequestError(400, "refused by the test target")
        self.received.append((message.id, message.status.value, contact))
        assert self.outcome is not None
        self.outcome.delivered(1)

    async def flush(self, client: Any = None) -> None:
        assert client is not None  # the run's own
        self.flushes += 1

    def estimate(self, records: Iterable[tuple[Message, Contact | None]]) -> tuple[int, int]:
        conversations = {message.conversation_id for message, _ in records}
        return len(conversations), 7 * len(conversations)

    def counts(self) -> Mapping[str, int]:
        return {"recorded": len(self.received)}


class Holding:
    """A target that holds records in its own journal table and writes them at flush (as the notes target does).

    ``written`` stands for the server: what reached it, in order.
    """

    def __init__(self, written: list[str], *, refuse_flush: int = 0, bad_conversation: str | None = None) -> None:
        self.written = written
        self.refuse_flush = refuse_flush
        self.bad_conversation = bad_conversation
        self.journal: Checkpoint | None = None
        self.memory: list[tuple[str, str]] = []
        self.outcome: Outcome | None = None
        self.writes = 0

    def attach(self, journal: Checkpoint | None, outcome: Outcome, *, priority: Priority,
               deadline: float | None) -> None:
        self.journal, self.outcome = journal, outcome
        if journal is not None:
            journal.execute("CREATE TABLE IF NOT EXISTS holding_held (id TEXT, conversation TEXT)")

    async def deliver(self, client: Any, message: Message, *, contact: Contact | None = None) -> None:
        if self.journal is not None:
            self.journal.execute("INSERT INTO holding_held VALUES (?, ?)", (message.id, message.conversation_id))
        else:
            self.memory.append((message.id, message.conversation_id))

    async def flush(self, client: Any = None) -> None:
        if self.refuse_flush:
            self.refuse_flush -= 1
            raise BudgetExhaustedError("spent", retry_after=0.0)
        held = (self.journal.execute("SELECT id, conversation FROM holding_held").fetchall()
                if self.journal is not None else self.memory)
        assert self.outcome is not None
        good = [id_ for id_, conversation in held if conversation != self.bad_conversation]
        self.written.extend(good)
        self.writes += 1
        self.outcome.delivered(len(good))
        if len(good) < len(held):
            self.outcome.failed(None, f"conversation {self.bad_conversation}: no such person", len(held) - len(good))
        if self.journal is not None:
            self.journal.execute("DELETE FROM holding_held")

    def estimate(self, records: Iterable[tuple[Message, Contact | None]]) -> tuple[int, int]:
        return 1, 10

    def counts(self) -> Mapping[str, int]:
        return {"writes": self.writes}


def test_the_test_targets_and_the_channels_target_implement_the_contract() -> None:
    targets: list[Target] = [Recording(), Holding([]), ChannelsTarget()]
    assert len(targets) == 3  # mypy checks the assignment: each implements the protocol


async def test_a_recording_target_gets_every_record_in_order_per_message_with_its_contact(tmp_path: Path) -> None:
    target = Recording()
    items: list[Message | WithContact] = [
        WithContact(m, PHONE) if m.conversation_id == "c-1" else m for m in history(30)
    ]
    report = await backfill(NoClient(), items, concurrency=8, target=target,  # type: ignore[arg-type]
                            checkpoint=tmp_path / "journal.sqlite", deadline=60, priority=Priority.INTERACTIVE)
    assert (report.delivered, report.failed, report.stopped) == (90, 0, False)
    assert report.counts == {"recorded": 90} and report.to_json()["counts"] == {"recorded": 90}
    assert len(target.attached) == 1 and target.flushes == 1
    journal, priority, deadline = target.attached[0]
    assert journal is not None and priority is Priority.INTERACTIVE and deadline is not None
    for index in range(30):
        assert [s for id_, s, _ in target.received if id_ == f"m-{index}"] == ["sent", "delivered", "read"]
    assert {contact for id_, _, contact in target.received if id_ in {"m-1", "m-11"}} == {PHONE}
    assert {contact for id_, _, contact in target.received if id_ == "m-2"} == {None}


async def test_a_record_error_of_a_target_fails_that_message_and_the_run_goes_on() -> None:
    target = Recording(fail_ids={"m-3"})
    report = await backfill(NoClient(), history(10), concurrency=4, target=target)  # type: ignore[arg-type]
    assert (report.delivered, report.failed) == (27, 3)
    assert {f.message_id for f in report.failures} == {"m-3"}
    assert "refused by the test target" in report.failures[0].reason
    assert "earlier record" in report.failures[1].reason


async def test_a_holding_target_writes_at_the_end_and_reports_what_reached_the_server() -> None:
    written: list[str] = []
    target = Holding(written, bad_conversation="c-2")
    report = await backfill(NoClient(), history(10, updates=False), target=target)  # type: ignore[arg-type]
    assert sorted(written) == sorted(f"m-{i}" for i in range(10) if i != 2)
    assert (report.delivered, report.failed) == (9, 1)
    assert report.failures[0].reason == "conversation c-2: no such person"
    assert report.counts == {"writes": 1}


async def test_the_flush_waits_out_a_spent_budget_like_a_delivery() -> None:
    written: list[str] = []
    report = await backfill(NoClient(), history(3, updates=False),  # type: ignore[arg-type]
                            target=Holding(written, refuse_flush=2))
    assert (report.delivered, report.stopped) == (3, False) and len(written) == 3


async def test_a_stopped_run_does_not_flush_and_the_rerun_writes_what_was_held(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    written: list[str] = []
    stop = asyncio.Event()

    class StoppedAfterThree(Holding):
        async def deliver(self, client: Any, message: Message, *, contact: Contact | None = None) -> None:
            await super().deliver(client, message, contact=contact)
            if message.id == "m-2":
                stop.set()  # as Ctrl-C would

        async def flush(self, client: Any = None) -> None:
            raise AssertionError("a stopped run must not flush")

    first = await backfill(NoClient(), history(10, updates=False), concurrency=1,  # type: ignore[arg-type]
                           target=StoppedAfterThree(written), checkpoint=journal, stop=stop)
    assert first.stopped and written == [] and first.delivered == 0
    second = await backfill(NoClient(), history(10, updates=False), target=Holding(written),  # type: ignore[arg-type]
                            checkpoint=journal)
    assert (second.skipped, second.stopped) == (3, False)
    assert sorted(written) == sorted(f"m-{i}" for i in range(10))  # the 3 held by the first run, and the rest
    assert second.delivered == 10  # what reached the server during this run, the first run's records included


async def test_the_held_records_of_a_run_that_stopped_at_its_deadline_are_written_by_the_rerun(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "journal.sqlite"
    written: list[str] = []

    class SlowHolding(Holding):
        async def deliver(self, client: Any, message: Message, *, contact: Contact | None = None) -> None:
            await super().deliver(client, message, contact=contact)
            await asyncio.sleep(0.05)

    first = await backfill(NoClient(), history(40, updates=False), concurrency=1,  # type: ignore[arg-type]
                           target=SlowHolding(written), checkpoint=journal, deadline=0.5)
    assert first.stopped and written == []
    second = await backfill(NoClient(), history(40, updates=False), target=Holding(written),  # type: ignore[arg-type]
                            checkpoint=journal)
    assert not second.stopped and 0 < second.skipped < 40
    assert sorted(written) == sorted(f"m-{i}" for i in range(40))


async def test_without_a_target_the_run_delivers_through_receive_message(fake: FakePipedrive) -> None:
    async with pipedrive_channels.ChannelsClient("token", base_url=fake.base_url,
                                                 budget=RateBudget.unlimited()) as client:
        await client.add_channel(name="n", provider_channel_id="ch")
        report = await backfill(client, [WithContact(m, PHONE) for m in history(5)], target=ChannelsTarget())
    assert (report.delivered, report.failed, report.counts) == (15, 0, {})
    stored = fake.messages[("ch", "c-0")]
    assert stored["m-0"]["status"] == "read" and "contact" not in stored["m-0"]


def _old_key(item: Message) -> bytes:
    """How journals written before contacts keyed a record: the digest of the body the client sends."""
    return hashlib.blake2b(dumps(converter.unstructure(item)), digest_size=16).digest()


async def test_a_journal_written_before_contacts_still_skips_its_records(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with Checkpoint(path) as journal:
        for item in history(4):
            journal.record(_old_key(item), item.id)
    target = Recording()
    report = await backfill(NoClient(), history(5), target=target, checkpoint=path)  # type: ignore[arg-type]
    assert (report.skipped, report.delivered) == (12, 3)
    assert {id_ for id_, _, _ in target.received} == {"m-4"}


async def test_a_record_with_a_corrected_contact_is_delivered_again(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    first, second = Recording(), Recording()
    wrong, right = Contact(phone="+1555000"), Contact(phone="+1555001")
    await backfill(NoClient(), [WithContact(message(0), wrong), message(1)], target=first,  # type: ignore[arg-type]
                   checkpoint=path)
    report = await backfill(NoClient(), [WithContact(message(0), right), message(1)],  # type: ignore[arg-type]
                            target=second, checkpoint=path)
    assert (report.skipped, report.delivered) == (1, 1) and second.received == [("m-0", "sent", right)]
    again = await backfill(NoClient(), [WithContact(message(0), right)], target=Recording(),  # type: ignore[arg-type]
                           checkpoint=path)
    assert (again.skipped, again.delivered) == (1, 0)


def test_read_jsonl_reads_a_contact_and_names_the_field_of_a_bad_one(tmp_path: Path) -> None:
    lines: list[Any] = [
        wire_message(0),
        wire_message(1, contact={"phone": "+15550001", "name": "Ada <b>"}),
        wire_message(2, contact={"person_id": 42}),
        wire_message(3, contact={"phone": 15550001}),
        wire_message(4, contact={}),
        wire_message(5, contact={"person_id": "42"}),
        wire_message(6, contact={"person_id": True}),
        wire_message(7, contact=["+1555"]),
        wire_message(8, contact={"emial": "a@example.com"}),
        wire_message(9, contact={"email": ""}),
        wire_message(10, contact=None),
        wire_message(11, contact={"person_id": 1.0}),
        wire_message(12, contact={"name": "A" * 256}),
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    items = list(read_jsonl(path))
    assert items[0] == message(0) and items[10] == message(10)  # no contact (or null): a Message, as before
    assert items[1] == WithContact(message(1), Contact(phone="+15550001", name="Ada <b>"))
    assert items[2] == WithContact(message(2), Contact(person_id=42))
    reasons = {item.line: item.reason for item in items if isinstance(item, BadInput)}
    assert reasons == {
        4: "contact.phone: must be a string, got a number",
        5: "contact: needs a person_id, a name, a phone or an email",
        6: "contact.person_id: must be an integer, got a string",
        7: "contact.person_id: must be an integer, got a boolean",
        8: "contact: must be an object, got an array",
        9: "contact.emial: is not a field (expected email, name, person_id, phone)",
        10: "contact.email: must be a non-empty printable string or None, got ''",
        12: "contact.person_id: must be an integer, got a number",
        13: "contact.name: must be at most 255 characters, got 256",
    }


def test_the_estimate_asks_the_target(tmp_path: Path) -> None:
    items: list[Message | WithContact | BadInput] = [
        *history(20, updates=False), WithContact(message(20), PHONE), BadInput(3, "bad")
    ]
    budget = RateBudget(requests_per_window=80, window=2.0, tokens_per_day=30_000)
    channels = estimate(items, budget)
    assert (channels.messages, channels.bad_lines, channels.requests, channels.tokens) == (
        21, 1, 21, 21 * RECEIVE_MESSAGE.cost)
    assert estimate(items, budget, ChannelsTarget()) == channels
    recorded = estimate(items, budget, Recording())  # 10 conversations: c-0 .. c-9 (m-20 is in c-0)
    assert (recorded.messages, recorded.bad_lines, recorded.requests, recorded.tokens) == (21, 1, 10, 70)


def test_the_report_has_counts_and_the_package_root_exports_with_contact() -> None:
    report = BackfillReport(1, 0, 0, (), 10.0, 1, 1.0, stopped=False)
    assert report.counts == {} and json.dumps(report.to_json())
    assert pipedrive_channels.WithContact is WithContact and "WithContact" in pipedrive_channels.__all__


def test_with_contact_is_frozen() -> None:
    item = WithContact(message(0), PHONE)
    assert (item.message, item.contact) == (message(0), PHONE)
    with pytest.raises(AttributeError):
        item.contact = Contact(email="a@example.com")  # type: ignore[misc]


async def test_progress_counts_what_a_target_holds_until_it_is_written() -> None:
    seen: list[Progress] = []
    report = await backfill(NoClient(), history(6, updates=False), target=Holding([]),  # type: ignore[arg-type]
                            on_progress=seen.append)
    assert [(p.delivered, p.held) for p in seen] == [(0, n) for n in range(1, 7)] + [(6, 0)]
    assert report.delivered == 6
