"""The webhook app with a journal: an event is durable before its 200, handled once across duplicates, a crash
or a stop, a full queue still acknowledges, and a raising handler is retried, then kept failed and re-runnable."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from webhook_deliveries import PATH, basic, deliver, payload, serve

from pipedrive_channels import CheckpointError, CheckpointLockedError
from pipedrive_channels._journal import Checkpoint
from pipedrive_channels.webhooks import JOURNAL_RETENTION_SECONDS, MAX_BACKOFF_SECONDS, FailedEvent, WebhookEvent
from pipedrive_channels.webhooks import _receiver as receiver_module
from pipedrive_channels.webhooks._store import JournalEvents


class Recorder:
    """A handler keeping the IDs of the events it got."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    async def __call__(self, event: WebhookEvent) -> None:
        self.ids.append(event.meta.id)


def rows(journal: Path) -> dict[str, tuple[str, int]]:
    """The journal's events as another process would read them: id -> (state, attempts)."""
    with sqlite3.connect(journal) as db:
        return {event_id: (state, attempts)
                for event_id, state, attempts in db.execute("SELECT id, state, attempts FROM webhook_events")}


async def blocked(event: WebhookEvent) -> None:
    """A handler that never finishes (the process will stop or crash under it)."""
    await asyncio.Event().wait()


async def test_the_event_is_committed_before_the_200(tmp_path: Path) -> None:
    journal = tmp_path / "hooks.sqlite"
    async with serve(blocked, journal=journal) as (client, receiver):
        receiver.shutdown_grace = 0.05
        assert (await deliver(client, payload("e-1")))[0] == 200
        assert rows(journal) == {"e-1": ("pending", 0)}  # read by a connection of its own: committed
    assert rows(journal) == {"e-1": ("pending", 0)}  # the stop cancelled the handler: still to handle


async def test_a_handled_event_is_marked_and_its_duplicates_acknowledged_across_restarts(tmp_path: Path) -> None:
    journal = tmp_path / "hooks.sqlite"
    handler = Recorder()
    async with serve(handler, journal=journal) as (client, receiver):
        assert await deliver(client, payload("e-1")) == (200, {"success": True, "duplicate": False})
        assert await deliver(client, payload("e-1", attempt=2)) == (200, {"success": True, "duplicate": True})
        await asyncio.wait_for(receiver.drained(), 5)
    assert rows(journal) == {"e-1": ("handled", 1)}
    async with serve(handler, journal=journal) as (client, receiver):
        assert await deliver(client, payload("e-1", attempt=3)) == (200, {"success": True, "duplicate": True})
        assert (await deliver(client, payload("e-2")))[0] == 200
        await asyncio.wait_for(receiver.drained(), 5)
        assert (receiver.stats.duplicates, receiver.stats.handled) == (1, 1)
    assert handler.ids == ["e-1", "e-2"]


async def test_events_acknowledged_but_not_handled_at_a_stop_are_handled_once_at_the_next_start(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "hooks.sqlite"
    async with serve(blocked, journal=journal, concurrency=1) as (client, receiver):
        receiver.shutdown_grace = 0.05
        for index in range(3):  # one running, two queued
            assert (await deliver(client, payload(f"e-{index}")))[0] == 200
    handler = Recorder()
    async with serve(handler, journal=journal) as (client, receiver):
        await asyncio.wait_for(receiver.drained(), 5)
        assert (await deliver(client, payload("e-0", attempt=2)))[1]["duplicate"] is True
    assert sorted(handler.ids) == ["e-0", "e-1", "e-2"]
    assert rows(journal) == {f"e-{index}": ("handled", 1) for index in range(3)}


CRASHING_APP = """
import asyncio, sys
sys.path.insert(0, {tests!r})
from aiohttp import web
from webhook_deliveries import PASSWORD, USER
from pipedrive_channels.webhooks import create_webhook_app

async def blocked(event):
    await asyncio.Event().wait()

async def main():
    runner = web.AppRunner(create_webhook_app(blocked, username=USER, password=PASSWORD, journal={journal!r}))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_process_killed_after_the_200_leaves_the_event_to_the_next_one(tmp_path: Path) -> None:
    journal = tmp_path / "hooks.sqlite"
    script = CRASHING_APP.format(tests=str(Path(__file__).parent), journal=str(journal))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        port = int(await asyncio.wait_for(process.stdout.readline(), 30))
        async with ClientSession() as session, session.post(
            f"http://127.0.0.1:{port}{PATH}", json=payload("e-1"), headers={"Authorization": basic()}
        ) as response:
            assert response.status == 200
    finally:
        process.kill()  # SIGKILL: no clean-up runs
        await process.wait()
    handler = Recorder()
    async with serve(handler, journal=journal) as (_, receiver):  # the dead process's lock is gone with it
        await asyncio.wait_for(receiver.drained(), 5)
    async with serve(handler, journal=journal) as (_, receiver):
        await asyncio.wait_for(receiver.drained(), 5)
    assert handler.ids == ["e-1"]


async def test_one_app_at_a_time_per_journal(tmp_path: Path) -> None:
    journal = tmp_path / "hooks.sqlite"
    async with serve(Recorder(), journal=journal):
        with pytest.raises(CheckpointLockedError):
            async with serve(Recorder(), journal=journal):
                pass


async def test_a_full_queue_with_a_journal_still_acknowledges_and_handles_later(tmp_path: Path) -> None:
    release = asyncio.Event()
    started = asyncio.Event()
    handled: list[str] = []

    async def handler(event: WebhookEvent) -> None:
        started.set()
        await release.wait()
        handled.append(event.meta.id)

    async with serve(handler, journal=tmp_path / "hooks.sqlite", concurrency=1, queue_size=2) as (client, receiver):
        assert (await deliver(client, payload("busy")))[0] == 200
        await asyncio.wait_for(started.wait(), 5)
        for index in range(6):  # two in the queue, four in the journal only
            assert await deliver(client, payload(f"q-{index}")) == (200, {"success": True, "duplicate": False})
        assert (receiver.stats.queued, receiver.stats.running, receiver.stats.refused) == (6, 1, 0)
        assert (await deliver(client, payload("q-5", attempt=2)))[1]["duplicate"] is True
        release.set()
        await asyncio.wait_for(receiver.drained(), 5)
        assert receiver.stats.queued == 0
    assert sorted(handled) == ["busy", *(f"q-{index}" for index in range(6))]


async def test_an_event_the_journal_cannot_record_is_a_503(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    handler = Recorder()
    async with serve(handler, journal=tmp_path / "hooks.sqlite") as (client, receiver):
        store: Any = receiver._store

        def full_disk(event: WebhookEvent, body: str) -> bool:
            raise CheckpointError("checkpoint hooks.sqlite: database or disk is full")

        monkeypatch.setattr(store, "record", full_disk)
        answer = await deliver(client, payload())
    assert answer == (503, {"success": False, "error": "the event cannot be recorded now"})
    assert handler.ids == []


async def test_a_row_that_no_longer_reads_as_an_event_is_marked_failed(tmp_path: Path) -> None:
    journal = tmp_path / "hooks.sqlite"
    async with serve(blocked, journal=journal) as (client, receiver):
        receiver.shutdown_grace = 0.05
        await deliver(client, payload("e-1"))
    with sqlite3.connect(journal) as db:
        db.execute("INSERT INTO webhook_events (id, state, body, received_at) VALUES ('bad', 'pending', '[1]', 0)")
    handler = Recorder()
    async with serve(handler, journal=journal) as (_, receiver):
        await asyncio.wait_for(receiver.drained(), 5)
        assert receiver.failed() == [FailedEvent("bad", "the journal's row does not hold an event: "
                                                        "WebhookPayloadError", 0)]
    assert handler.ids == ["e-1"]


# -- a raising handler ----------------------------------------------------------------------------------------


class Flaky:
    """A handler raising until ``fixed``; counts its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fixed = False

    async def __call__(self, event: WebhookEvent) -> None:
        self.calls.append(event.meta.id)
        if not self.fixed:
            raise RuntimeError("the CRM is down")


@pytest.mark.parametrize("durable", [True, False])
async def test_a_raising_handler_is_retried_then_failed_then_rerun(tmp_path: Path, durable: bool) -> None:
    handler = Flaky()
    options: dict[str, Any] = {"journal": tmp_path / "hooks.sqlite"} if durable else {}
    async with serve(handler, attempts=3, backoff=0.001, **options) as (client, receiver):
        for event_id in ("e-1", "e-2"):
            assert (await deliver(client, payload(event_id)))[0] == 200
        await asyncio.wait_for(receiver.drained(), 10)
        assert sorted(handler.calls) == ["e-1"] * 3 + ["e-2"] * 3
        assert receiver.failed() == [FailedEvent("e-1", "RuntimeError: the CRM is down", 3),
                                     FailedEvent("e-2", "RuntimeError: the CRM is down", 3)]
        assert (receiver.stats.failed, receiver.stats.handled) == (2, 0)
        assert (await deliver(client, payload("e-1", attempt=2)))[1]["duplicate"] is True  # still not re-run
        handler.fixed = True
        assert await receiver.retry_failed() == 2
        await asyncio.wait_for(receiver.drained(), 10)
        assert receiver.failed() == [] and receiver.stats.handled == 2
        assert await receiver.retry_failed() == 0
    assert len(handler.calls) == 8


async def test_a_failed_event_stays_failed_across_a_restart(tmp_path: Path) -> None:
    journal = tmp_path / "hooks.sqlite"
    handler = Flaky()
    async with serve(handler, journal=journal, attempts=2, backoff=0) as (client, receiver):
        await deliver(client, payload("e-1"))
        await asyncio.wait_for(receiver.drained(), 5)
    async with serve(handler, journal=journal, attempts=2, backoff=0) as (client, receiver):
        await asyncio.wait_for(receiver.drained(), 5)
        assert handler.calls == ["e-1", "e-1"]  # not run again by the start
        assert receiver.failed() == [FailedEvent("e-1", "RuntimeError: the CRM is down", 2)]
        handler.fixed = True
        assert await receiver.retry_failed() == 1
        await asyncio.wait_for(receiver.drained(), 5)
    assert rows(journal) == {"e-1": ("handled", 1)}


async def test_the_retries_wait_exponentially_from_backoff_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        if delay:  # asyncio.sleep(0) is aiohttp's and the event loop's, not a retry's wait
            waits.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(receiver_module.asyncio, "sleep", sleep)
    async with serve(Flaky(), attempts=4, backoff=1.0) as (client, receiver):
        await deliver(client, payload("e-1"))
        await asyncio.wait_for(receiver.drained(), 5)
        assert waits == [1.0, 2.0, 4.0]
        waits.clear()
    async with serve(Flaky(), attempts=4, backoff=40) as (client, receiver):
        await deliver(client, payload("e-1"))
        await asyncio.wait_for(receiver.drained(), 5)
        assert waits == [40, MAX_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS]


async def test_a_handler_cancelling_itself_counts_as_a_failure_not_a_lost_worker() -> None:
    calls = 0

    async def cancelled(event: WebhookEvent) -> None:
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError

    async with serve(cancelled, concurrency=1, attempts=2, backoff=0) as (client, receiver):
        await deliver(client, payload("e-1"))
        await asyncio.wait_for(receiver.drained(), 5)
        assert receiver.failed() == [FailedEvent("e-1", "HandlerCancelledError: the handler was cancelled", 2)]
        handler_ok = Recorder()
        receiver._handler = handler_ok  # the worker is still there to take the next event
        await deliver(client, payload("e-2"))
        await asyncio.wait_for(receiver.drained(), 5)
        assert handler_ok.ids == ["e-2"]
    assert calls == 2


async def test_workers_cancelled_from_outside_end_and_leave_the_event_pending(tmp_path: Path) -> None:
    # As asyncio.run does at its end, without the app's clean-up: no worker may swallow that cancellation.
    journal = tmp_path / "hooks.sqlite"
    async with serve(blocked, journal=journal, concurrency=2) as (client, receiver):
        await deliver(client, payload("e-1"))
        await asyncio.sleep(0.05)  # the handler runs
        workers = list(receiver._workers)
        for task in workers:
            task.cancel()
        done, _ = await asyncio.wait(workers, timeout=10)
        assert done == set(workers) and all(task.cancelled() for task in workers)
    assert rows(journal) == {"e-1": ("pending", 0)}


def test_a_journal_row_holds_the_body_as_received_until_handled(tmp_path: Path) -> None:
    # The body is what the restart reads back: it must be the delivery itself.
    with Checkpoint(tmp_path / "hooks.sqlite") as checkpoint:
        events = JournalEvents(checkpoint)
        event = WebhookEvent.from_json(payload("e-1"))
        assert events.record(event, json.dumps(payload("e-1")))
        [pending], more = events.pending(10, ())
        assert pending == event and more is False
        assert events.pending(10, {"e-1"}) == ([], False)
        events.handled(event, 1)
        assert events.pending(10, ()) == ([], False) and events.waiting() == 0
        body = checkpoint.execute("SELECT body FROM webhook_events").fetchone()[0]
    assert body is None


async def test_handled_ids_expire_after_the_retention_and_open_events_stay(tmp_path: Path) -> None:
    journal = tmp_path / "hooks.sqlite"
    async with serve(Flaky(), journal=journal, attempts=1) as (client, receiver):
        for event_id in ("old-failed", "old-handled"):
            await deliver(client, payload(event_id))
        await asyncio.wait_for(receiver.drained(), 5)
    with sqlite3.connect(journal) as db:
        db.execute("UPDATE webhook_events SET received_at = received_at - ?", (JOURNAL_RETENTION_SECONDS + 60,))
        db.execute("UPDATE webhook_events SET state = 'handled', body = NULL WHERE id = 'old-handled'")
        db.execute("INSERT INTO webhook_events (id, state, body, received_at) VALUES ('old-pending', 'pending', ?, 0)",
                   (json.dumps(payload("old-pending")),))
    handler = Recorder()
    async with serve(handler, journal=journal) as (client, receiver):
        await asyncio.wait_for(receiver.drained(), 5)
        assert (await deliver(client, payload("old-handled", attempt=2)))[1]["duplicate"] is False  # forgotten
        await asyncio.wait_for(receiver.drained(), 5)
        assert [failure.id for failure in receiver.failed()] == ["old-failed"]
    assert sorted(handler.ids) == ["old-handled", "old-pending"]


def test_the_journal_reads_what_waits_failed_or_expired_through_indexes(tmp_path: Path) -> None:
    with Checkpoint(tmp_path / "hooks.sqlite") as checkpoint:
        JournalEvents(checkpoint)
        for query in ["SELECT id, body FROM webhook_events WHERE state = 'pending' ORDER BY seq LIMIT 5",
                      "SELECT COUNT(*) FROM webhook_events WHERE state = 'pending'",
                      "SELECT id, reason, attempts FROM webhook_events WHERE state = 'failed' ORDER BY seq",
                      "DELETE FROM webhook_events WHERE state IN ('handled', 'skipped') AND received_at < 5"]:
            plan = " ".join(row[-1] for row in checkpoint.execute("EXPLAIN QUERY PLAN " + query).fetchall())
            assert "USING INDEX webhook_events_" in plan, (query, plan)
