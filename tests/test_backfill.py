"""The back-fill engine: order per message, resumable checkpoints, failures, sharding, pauses, flat memory."""

from __future__ import annotations

import asyncio
import hashlib
import json
import resource
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from aioresponses import aioresponses
from factories import history
from yarl import URL

from pipedrive_channels import (
    ChannelsClient,
    Message,
    Priority,
    RateBudget,
    RetryPolicy,
)
from pipedrive_channels.backfill import (
    BadInput,
    Checkpoint,
    Progress,
    backfill,
    estimate,
    read_jsonl,
    shard_of,
)
from pipedrive_channels.models import converter
from pipedrive_channels.testing import FakePipedrive


class StubClient:
    """Just what backfill uses of a client, recording order and concurrency, with no HTTP."""

    def __init__(self, latency: float = 0.0, budget: RateBudget | None = None) -> None:
        self.budget = budget or RateBudget.unlimited()
        self.latency = latency
        self.sent: list[tuple[str, str]] = []
        self.in_flight: set[str] = set()
        self.peak = 0
        self.overlaps = 0

    async def receive_message(self, message: Message, *, priority: Priority, timeout: float | None) -> Message:
        reservation = await self.budget.acquire(10, priority=priority, timeout=timeout)
        if message.id in self.in_flight:
            self.overlaps += 1
        self.in_flight.add(message.id)
        self.peak = max(self.peak, len(self.in_flight))
        await asyncio.sleep(self.latency)
        self.sent.append((message.id, message.status.value))
        self.in_flight.discard(message.id)
        reservation.settle()
        return message


def client_for(fake: FakePipedrive, budget: RateBudget | None = None) -> ChannelsClient:
    return ChannelsClient("token", base_url=fake.base_url, budget=budget or RateBudget.unlimited(),
                          retry=RetryPolicy(backoff_base=0.01))


async def test_updates_of_one_message_keep_input_order_while_others_run_concurrently() -> None:
    client = StubClient(latency=0.001)
    report = await backfill(client, history(200), concurrency=16)  # type: ignore[arg-type]
    assert (report.delivered, report.failed, report.skipped, report.stopped) == (600, 0, 0, False)
    assert client.overlaps == 0 and client.peak == 16
    for index in range(200):
        assert [status for id_, status in client.sent if id_ == f"m-{index}"] == ["sent", "delivered", "read"]


async def test_the_whole_history_reaches_the_fake_server(fake: FakePipedrive) -> None:
    async with client_for(fake) as client:
        report = await backfill(client, history(100), concurrency=8, ensure_channels={"ch": "Support"})
    assert report.delivered == 300 and report.requests_sent == 301 and report.tokens_charged == 3010
    stored = {id_: body for thread in fake.messages.values() for id_, body in thread.items()}
    assert len(stored) == 100 and {body["status"] for body in stored.values()} == {"read"}


async def test_a_rerun_with_the_checkpoint_sends_only_the_rest(fake: FakePipedrive, tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    stop = asyncio.Event()

    def stop_at_100(progress: Progress) -> None:
        if progress.delivered >= 100:
            stop.set()

    async with client_for(fake) as client:
        first = await backfill(client, history(100), concurrency=8, checkpoint=journal, stop=stop,
                               on_progress=stop_at_100, ensure_channels={"ch": "Support"})
        assert first.stopped and 100 <= first.delivered < 300
        second = await backfill(client, history(100), concurrency=8, checkpoint=journal,
                                ensure_channels={"ch": "Support"})
    assert not second.stopped and second.skipped == first.delivered
    assert second.delivered == 300 - first.delivered
    receives = [r for r in fake.requests if r.path.endswith("/receive")]
    assert len(receives) == 300  # nothing sent twice: stopped calls finished and were journalled
    assert sum(r.path.endswith("/channels") for r in fake.requests) == 1  # the channel was added once
    assert Checkpoint(journal).counts() == (300, 0)


async def test_failures_are_reported_journalled_and_retried_by_a_rerun(fake: FakePipedrive, tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    items: list[Message | BadInput] = [*history(5, updates=False), BadInput(7, "status: must be one of ..."),
                                       *history(3, channel="unknown", updates=False)]
    async with client_for(fake) as client:
        await client.add_channel(name="n", provider_channel_id="ch")
        report = await backfill(client, items, concurrency=4, checkpoint=journal)
        assert (report.delivered, report.failed) == (5, 4)
        assert report.failures[0].line == 7
        assert {f.message_id for f in report.failures[1:]} == {"m-0", "m-1", "m-2"}
        assert all("Channel not found" in f.reason for f in report.failures[1:])
        assert Checkpoint(journal).counts() == (5, 3)
        await client.add_channel(name="n", provider_channel_id="unknown")
        again = await backfill(client, items, concurrency=4, checkpoint=journal)
    assert (again.skipped, again.delivered, again.failed) == (5, 3, 1)


async def test_shards_split_the_input_without_overlap() -> None:
    clients = [StubClient(), StubClient()]
    for k, client in enumerate(clients):
        await backfill(client, history(300, conversations=40), shard=(k, 2))  # type: ignore[arg-type]
    first, second = ({id_ for id_, _ in c.sent} for c in clients)
    assert first and second and not first & second and len(first | second) == 300
    assert shard_of("conversation-42", 8) == 4  # blake2b, not hash(): the same on every run, process and host


async def test_a_spent_daily_budget_pauses_the_run_then_it_goes_on(fake: FakePipedrive) -> None:
    budget = RateBudget(requests_per_window=1_000, tokens_per_day=100 * 86_400, daily_burst=1_000)  # 100 tokens/s
    async with client_for(fake, budget) as client:
        await client.add_channel(name="n", provider_channel_id="ch")
        fake.fail_next(1, 429, headers={"x-daily-ratelimit-token-remaining": "0"})
        report = await backfill(client, history(10, updates=False), concurrency=1)
    assert (report.delivered, report.failed) == (10, 0)
    refused, retried = [r for r in fake.requests if r.path.endswith("/receive")][:2]
    assert refused.status == 429 and retried.json["id"] == refused.json["id"]
    assert retried.at - refused.at >= 0.09  # waited for 10 tokens at 100 per second


async def test_a_deadline_stops_resumably(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    slow = StubClient(budget=RateBudget(requests_per_window=5, window=1.0))
    report = await backfill(slow, history(20, updates=False), concurrency=4, checkpoint=journal,  # type: ignore[arg-type]
                            deadline=0.5)
    assert report.stopped and report.delivered == 5 and report.failed == 0
    rest = await backfill(StubClient(), history(20, updates=False), checkpoint=journal)  # type: ignore[arg-type]
    assert (rest.skipped, rest.delivered, rest.stopped) == (5, 15, False)


async def test_memory_stays_flat_over_a_long_lazy_input() -> None:
    client = StubClient()
    read_ahead: list[int] = []

    async def lazily() -> AsyncIterator[Message]:
        for count, message in enumerate(history(25_000)):  # 75,000 records, never all in memory
            read_ahead.append(count - len(client.sent))  # read from the input but not yet sent
            yield message

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = await backfill(client, lazily(), concurrency=16)  # type: ignore[arg-type]
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert report.delivered == 75_000
    assert max(read_ahead) <= 16 * 4 + 1  # the bounded buffer, plus the record waiting for room in it
    assert growth_mb < 50  # loose: the benchmark measures it properly


def test_read_jsonl_names_the_line_and_field_of_bad_lines(tmp_path: Path) -> None:
    good = {"id": "m", "channel_id": "ch", "sender_id": "s", "conversation_id": "c", "message": "hi",
            "status": "sent", "created_at": "2026-01-01 10:00", "attachments": []}
    lines = [json.dumps(good), "", "{not json", json.dumps({**good, "status": "seen"}),
             json.dumps({k: v for k, v in good.items() if k != "sender_id"}), "[1, 2]",
             json.dumps({**good, "created_at": "2026-01-01T10:00:00"})]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    items = list(read_jsonl(path))
    assert isinstance(items[0], Message) and items[0].created_at == datetime(2026, 1, 1, 10, tzinfo=timezone.utc)
    bad = [item for item in items if isinstance(item, BadInput)]
    assert [b.line for b in bad] == [3, 4, 5, 6]
    assert "status" in bad[1].reason and "sender_id" in bad[2].reason
    assert isinstance(items[-1], Message)  # a naive ISO time is read as UTC, as the spec says


def test_estimate_says_requests_tokens_and_time_at_the_plan() -> None:
    items: list[Message | BadInput] = [*history(2_000, updates=False), BadInput(1, "bad")]
    lite = estimate(items, RateBudget(requests_per_window=80, window=2.0, tokens_per_day=30_000))
    assert (lite.messages, lite.bad_lines, lite.requests, lite.tokens) == (2_000, 1, 2_000, 20_000)
    assert lite.seconds == pytest.approx((2_000 - 80) * 2 / 80)
    daily = estimate(history(5_000, updates=False), RateBudget(requests_per_window=10_000, tokens_per_day=30_000))
    assert daily.seconds == pytest.approx((50_000 - 30_000) / (30_000 / 86_400))
    assert estimate([], RateBudget.unlimited()).seconds == 0


async def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        await backfill(StubClient(), [], concurrency=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shard"):
        await backfill(StubClient(), [], shard=(2, 2))  # type: ignore[arg-type]


async def test_a_cancelled_run_leaves_a_consistent_journal(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    client = StubClient(latency=0.01)
    task = asyncio.ensure_future(backfill(client, history(100), concurrency=4, checkpoint=journal))  # type: ignore[arg-type]
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    delivered, failed = Checkpoint(journal).counts()
    assert failed == 0 and delivered == len(client.sent)  # every journalled record was sent, and vice versa
    rest = StubClient()
    await backfill(rest, history(100), checkpoint=journal)  # type: ignore[arg-type]
    assert len(rest.sent) + delivered == 300


def test_the_report_serialises(tmp_path: Path) -> None:
    async def run() -> Any:
        return await backfill(StubClient(), [BadInput(3, "x")])  # type: ignore[arg-type]

    report = asyncio.run(run())
    data = report.to_json()
    assert data["failed"] == 1 and data["failures"][0]["line"] == 3 and json.dumps(data)


def test_a_line_that_is_not_utf8_is_a_bad_line_not_a_crash(tmp_path: Path) -> None:
    good = json.dumps({"id": "m", "channel_id": "ch", "sender_id": "s", "conversation_id": "c", "message": "hi",
                       "status": "sent", "created_at": "2026-01-01 10:00"}).encode()
    path = tmp_path / "in.jsonl"
    path.write_bytes(good + b"\n" + b'{"id": "\xff\xfe"}\n' + good + b"\n")
    items = list(read_jsonl(path))
    assert [type(item).__name__ for item in items] == ["Message", "BadInput", "Message"]
    assert isinstance(items[1], BadInput) and items[1].line == 2 and "UnicodeDecodeError" in items[1].reason


async def test_stop_ends_a_run_stuck_on_a_spent_budget_after_the_grace(tmp_path: Path) -> None:
    spent = RateBudget(requests_per_window=100, tokens_per_day=20, daily_burst=20)  # two calls, then hours
    client = StubClient(budget=spent)
    stop = asyncio.Event()

    def stop_after_two(progress: Progress) -> None:
        if progress.delivered == 2:
            stop.set()

    journal = tmp_path / "journal.sqlite"
    report = await asyncio.wait_for(
        backfill(client, history(10, updates=False), concurrency=2, checkpoint=journal,  # type: ignore[arg-type]
                 stop=stop, stop_grace=0.2, on_progress=stop_after_two),
        timeout=5,
    )
    assert report.stopped and report.delivered == 2 and report.failed == 0
    assert Checkpoint(journal).counts() == (2, 0)


async def test_a_failed_record_fails_the_later_records_of_its_message(fake: FakePipedrive, tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    async with client_for(fake) as client:
        await client.add_channel(name="n", provider_channel_id="ch")
        fake.fail_next(1, 400)  # the first record, "sent" of m-0, is refused for good
        first = await backfill(client, history(1), concurrency=1, checkpoint=journal)
        assert (first.delivered, first.failed) == (0, 3)
        assert "earlier record" in first.failures[1].reason
        second = await backfill(client, history(1), concurrency=1, checkpoint=journal)
    assert (second.delivered, second.failed) == (3, 0)
    sent = [r.json["status"] for r in fake.requests if r.path.endswith("/receive")]
    assert sent == ["sent", "sent", "delivered", "read"]  # never "read" before "sent"
    assert fake.messages[("ch", "c-0")]["m-0"]["status"] == "read"


async def test_the_journal_keys_a_record_by_the_bytes_the_client_sends(tmp_path: Path) -> None:
    """A key computed from another encoding than the client's would skip nothing (or the wrong record) on resume."""
    base = "http://127.0.0.1:9/v1"
    journal = tmp_path / "journal.sqlite"
    records = list(history(2))
    with aioresponses() as mocked:
        for record in records:
            mocked.post(f"{base}/channels/messages/receive",
                        payload={"success": True, "data": converter.unstructure(record)})
        async with ChannelsClient("token", base_url=base, budget=RateBudget.unlimited()) as client:
            report = await backfill(client, records, concurrency=1, checkpoint=journal)
        sent = [call.kwargs["data"] for call in mocked.requests[("POST", URL(f"{base}/channels/messages/receive"))]]
    assert report.delivered == len(records) == len(sent)
    with sqlite3.connect(journal) as db:
        keys = {key for (key,) in db.execute("SELECT key FROM records")}
    db.close()
    assert keys == {hashlib.blake2b(body, digest_size=16).digest() for body in sent}


async def test_the_estimate_is_what_the_run_is_charged(fake: FakePipedrive) -> None:
    budget = RateBudget.unlimited()
    async with client_for(fake, budget) as client:
        await client.add_channel(name="n", provider_channel_id="ch")
        before = budget.stats().tokens_charged
        report = await backfill(client, history(4), concurrency=2)
    assert report.delivered == 12
    assert estimate(history(4), budget).tokens == budget.stats().tokens_charged - before
