"""Where the receiver keeps the events it acknowledged: a table on the journal, or a bounded window in memory.

Both stores answer the same questions: was this ``meta.id`` seen (a duplicate), which acknowledged events wait
to be handled beyond those already queued, which failed. The journal's table, ``webhook_events``, holds one row
per event: its ``state`` (``pending`` until handled, then ``handled``, ``skipped`` or ``failed``), the body as
received while it may still be needed (pending or failed), the attempts and the last failure's reason.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Collection
from typing import NamedTuple

from .._journal import Checkpoint, CheckpointError
from ._events import WebhookEvent, WebhookPayloadError

__all__ = [
    "JOURNAL_RETENTION_SECONDS",
    "MAX_FAILED_IN_MEMORY",
    "RECENT_IDS",
    "FailedEvent",
    "JournalEvents",
    "MemoryEvents",
]

RECENT_IDS = 10_000
"""Without a journal, how many recent event IDs are remembered to drop duplicates (Pipedrive retries within
about three minutes, so this covers some 50 events a second)."""
MAX_FAILED_IN_MEMORY = 1_000
"""Without a journal, how many failed events are kept for :meth:`WebhookReceiver.retry_failed` (oldest dropped)."""
JOURNAL_RETENTION_SECONDS = 7 * 24 * 3600
"""How long a handled (or skipped) event's ID stays in the journal to drop duplicates; failed and pending
events stay until handled."""
MAX_REASON = 500
"""The longest failure reason kept."""
_PRUNE_EVERY = 1_000  # events recorded between two deletions of expired handled rows

_log = logging.getLogger("pipedrive_channels.webhooks")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS webhook_events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
    " state TEXT NOT NULL, body TEXT, attempts INTEGER NOT NULL DEFAULT 0, reason TEXT,"
    " received_at REAL NOT NULL)",
    # Partial indexes, one per question (SQLite uses one only when the query names its state): a start-up or a
    # backlog reads what waits, an operator what failed, a prune what expired; never the whole history.
    "CREATE INDEX IF NOT EXISTS webhook_events_pending ON webhook_events (seq) WHERE state = 'pending'",
    "CREATE INDEX IF NOT EXISTS webhook_events_failed ON webhook_events (seq) WHERE state = 'failed'",
    "CREATE INDEX IF NOT EXISTS webhook_events_done ON webhook_events (received_at)"
    " WHERE state IN ('handled', 'skipped')",
)


class FailedEvent(NamedTuple):
    """An event whose handler kept raising: its ID, the last error (type and message) and the attempts made."""

    id: str
    reason: str
    attempts: int


class JournalEvents:
    """The acknowledged events in the journal's ``webhook_events`` table (durable: committed, and synced to the
    disk, before the 200)."""

    def __init__(self, journal: Checkpoint) -> None:
        self._journal = journal
        self._since_prune = 0
        # Each commit reaches the disk before it returns (the journal's default, NORMAL, may lose the last
        # commits on a power cut): after the 200 Pipedrive never sends the event again.
        journal.execute("PRAGMA synchronous=FULL")
        for statement in _SCHEMA:
            journal.execute(statement)
        self._prune()

    def __repr__(self) -> str:
        return f"JournalEvents({self._journal!r})"

    def record(self, event: WebhookEvent, body: str) -> bool:
        """Add an acknowledged event as pending (committed when this returns); False if its ID is known."""
        cursor = self._journal.execute(
            "INSERT OR IGNORE INTO webhook_events (id, state, body, received_at) VALUES (?, 'pending', ?, ?)",
            (event.meta.id, body, time.time()),
        )
        if cursor.rowcount == 0:
            return False
        self._since_prune += 1
        if self._since_prune >= _PRUNE_EVERY:
            self._prune()
        return True

    def pending(self, limit: int, queued: Collection[str]) -> tuple[list[WebhookEvent], bool]:
        """Up to ``limit`` pending events, oldest first, but those in ``queued``; and whether more may wait."""
        rows = self._journal.execute(
            "SELECT id, body FROM webhook_events WHERE state = 'pending' ORDER BY seq LIMIT ?",
            (limit + len(queued),),
        ).fetchall()
        events: list[WebhookEvent] = []
        for event_id, body in rows:
            if event_id in queued:
                continue
            event = self._read(event_id, body)
            if event is not None:
                events.append(event)
            if len(events) == limit:
                break
        return events, len(rows) == limit + len(queued)

    def handled(self, event: WebhookEvent, attempts: int, *, skipped: bool = False) -> None:
        """Mark an event handled (or skipped as the bot's own); its body is no longer kept."""
        self._journal.execute(
            "UPDATE webhook_events SET state = ?, body = NULL, attempts = ?, reason = NULL WHERE id = ?",
            ("skipped" if skipped else "handled", attempts, event.meta.id),
        )

    def failed(self, event: WebhookEvent, reason: str, attempts: int) -> None:
        """Mark an event failed after ``attempts``; it stays (with its body) until :meth:`reopen_failed`."""
        self._journal.execute(
            "UPDATE webhook_events SET state = 'failed', attempts = ?, reason = ? WHERE id = ?",
            (attempts, reason[:MAX_REASON], event.meta.id),
        )

    def failures(self) -> list[FailedEvent]:
        """The failed events, oldest first."""
        rows = self._journal.execute(
            "SELECT id, reason, attempts FROM webhook_events WHERE state = 'failed' ORDER BY seq"
        ).fetchall()
        return [FailedEvent(str(event_id), str(reason or ""), int(attempts)) for event_id, reason, attempts in rows]

    def reopen_failed(self) -> int:
        """Make the failed events pending again (their attempts start over); how many. A row whose body could not
        be read back stays failed: there is nothing to run."""
        cursor = self._journal.execute(
            "UPDATE webhook_events SET state = 'pending', attempts = 0 WHERE state = 'failed' AND body IS NOT NULL"
        )
        return cursor.rowcount

    def waiting(self) -> int:
        """How many events are pending (queued, running, or only in the journal)."""
        return int(self._journal.execute("SELECT COUNT(*) FROM webhook_events WHERE state = 'pending'").fetchone()[0])

    def _read(self, event_id: str, body: object) -> WebhookEvent | None:
        """A pending row's event; a row that no longer reads as one is marked failed (it would never succeed)."""
        try:
            if not isinstance(body, str):
                raise WebhookPayloadError("body", "is missing from the journal")
            return WebhookEvent.from_json(json.loads(body))
        except (ValueError, RecursionError) as error:  # WebhookPayloadError is a ValueError, as is bad JSON
            reason = f"the journal's row does not hold an event: {type(error).__name__}"
            _log.error("webhook event %s: %s; marked failed", event_id, reason)
            self._journal.execute(
                "UPDATE webhook_events SET state = 'failed', body = NULL, reason = ? WHERE id = ?",
                (reason, event_id),
            )
            return None

    def _prune(self) -> None:
        self._since_prune = 0
        try:
            self._journal.execute(
                "DELETE FROM webhook_events WHERE state IN ('handled', 'skipped') AND received_at < ?",
                (time.time() - JOURNAL_RETENTION_SECONDS,),
            )
        except CheckpointError as error:  # a full disk: the table only grows until the next prune
            _log.warning("webhook journal: expired events not deleted: %s", error)


class MemoryEvents:
    """Without a journal: the last :data:`RECENT_IDS` event IDs, and up to :data:`MAX_FAILED_IN_MEMORY` failed
    events. Nothing survives the process: the events queued at a stop are lost (Pipedrive does not resend them)."""

    def __init__(self) -> None:
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._failed: OrderedDict[str, tuple[WebhookEvent, FailedEvent]] = OrderedDict()
        self._reopened: deque[WebhookEvent] = deque()

    def __repr__(self) -> str:
        return f"MemoryEvents(recent={len(self._recent)}, failed={len(self._failed)})"

    def record(self, event: WebhookEvent, body: str) -> bool:
        """Remember an event's ID; False if it is among the recent ones."""
        if self.knows(event.meta.id):
            return False
        self._recent[event.meta.id] = None
        if len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)
        return True

    def pending(self, limit: int, queued: Collection[str]) -> tuple[list[WebhookEvent], bool]:
        """Up to ``limit`` of the events :meth:`reopen_failed` made pending; and whether more wait."""
        events = [self._reopened.popleft() for _ in range(min(limit, len(self._reopened)))]
        return events, bool(self._reopened)

    def knows(self, event_id: str) -> bool:
        """Whether the ID is among the recent ones (a duplicate)."""
        return event_id in self._recent

    def handled(self, event: WebhookEvent, attempts: int, *, skipped: bool = False) -> None:
        """Nothing to keep: the ID stays in the recent window."""

    def failed(self, event: WebhookEvent, reason: str, attempts: int) -> None:
        """Keep a failed event (the oldest is dropped past :data:`MAX_FAILED_IN_MEMORY`, logged)."""
        event_id = event.meta.id
        self._failed[event_id] = (event, FailedEvent(event_id, reason[:MAX_REASON], attempts))
        if len(self._failed) > MAX_FAILED_IN_MEMORY:
            dropped, _ = self._failed.popitem(last=False)
            _log.error("webhook event %s: dropped from the failed events kept in memory (at most %d)",
                       dropped, MAX_FAILED_IN_MEMORY)

    def failures(self) -> list[FailedEvent]:
        """The failed events kept, oldest first."""
        return [failure for _, failure in self._failed.values()]

    def reopen_failed(self) -> int:
        """Make the failed events pending again; how many."""
        count = len(self._failed)
        self._reopened.extend(event for event, _ in self._failed.values())
        self._failed.clear()
        return count

    def waiting(self) -> int:
        """How many reopened events wait beyond the queue."""
        return len(self._reopened)
