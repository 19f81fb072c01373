"""``WebhookReceiver``: the events acknowledged, queued and handled afterwards by a bounded pool of workers.

The HTTP side (:mod:`._app`) calls :meth:`WebhookReceiver.accept` and answers at once; ``concurrency`` workers
take the queued events and handle each (:mod:`._handling`: the handler, retried with exponential backoff when it
raises), then record how it ended. With a journal every acknowledged event is a row committed before the answer,
so the queue in memory is only a cache of it: past ``queue_size`` (or after a restart) the workers read the
waiting events back from the journal.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import os
from collections import deque

import attrs

from .._journal import Checkpoint, CheckpointError
from ..client import ChannelsClient
from ..errors import ValidationError
from ._events import WebhookEvent
from ._handling import CANCEL_WAIT_SECONDS, MAX_BACKOFF_SECONDS, Attempts, HandlerCancelledError, Outcome, OwnUser
from ._router import Handler
from ._store import FailedEvent, JournalEvents, MemoryEvents

__all__ = [
    "MAX_BACKOFF_SECONDS",
    "SHUTDOWN_GRACE_SECONDS",
    "Acceptance",
    "HandlerCancelledError",
    "WebhookReceiver",
    "WebhookStats",
]

SHUTDOWN_GRACE_SECONDS = 5.0
"""How long a stop waits for running handlers before cancelling them (their events stay pending in the journal)."""

_log = logging.getLogger("pipedrive_channels.webhooks")


class Acceptance(enum.Enum):
    """What :meth:`WebhookReceiver.accept` did with a delivery."""

    ACCEPTED = "accepted"
    """Recorded (in the journal, when there is one) and queued: answer 200."""
    DUPLICATE = "duplicate"
    """Its ``meta.id`` was recorded before: answer 200, it is not handled again."""
    FULL = "full"
    """Not recorded: the queue is full and there is no journal to hold it: answer 503, so that Pipedrive
    retries."""
    STOPPED = "stopped"
    """Not recorded: the receiver is not running (not started yet, or stopping): answer 503."""


@attrs.frozen
class WebhookStats:
    """The receiver's counters since it started, and what waits now.

    :param received: new events acknowledged.
    :param duplicates: deliveries of an event already acknowledged (acknowledged again, not handled).
    :param handled: events whose handler returned.
    :param failed: events whose handler raised on every attempt.
    :param skipped: the bot's own events (``ignore_own``), acknowledged and not handled.
    :param refused: deliveries answered 503 because the queue was full and there is no journal.
    :param queued: events waiting for a worker now (in the journal too, when there is one).
    :param running: events being handled now (retry waits included).
    """

    received: int
    duplicates: int
    handled: int
    failed: int
    skipped: int
    refused: int
    queued: int
    running: int


@attrs.define
class _Counts:
    received: int = 0
    duplicates: int = 0
    handled: int = 0
    failed: int = 0
    skipped: int = 0
    refused: int = 0


class WebhookReceiver:
    """The queue and the workers behind :func:`create_webhook_app`; ``app[RECEIVER]`` is the app's.

    For operators: :attr:`stats`, :meth:`failed` and :meth:`retry_failed`; :meth:`drained` waits until nothing
    is queued or running. Events are handled at most ``concurrency`` at a time, in no guaranteed order.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        journal: str | os.PathLike[str] | None = None,
        concurrency: int = 8,
        queue_size: int = 1000,
        ignore_own: bool = False,
        client: ChannelsClient | None = None,
        attempts: int = 4,
        backoff: float = 1.0,
    ) -> None:
        """See :func:`create_webhook_app` for the parameters.

        :raises ValidationError: a parameter out of range, or ``ignore_own`` without ``client``.
        """
        if not callable(handler):
            raise ValidationError("handler", f"must be an async callable, got {type(handler).__name__}")
        for name, value in (("concurrency", concurrency), ("queue_size", queue_size), ("attempts", attempts)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(name, f"must be a positive integer, got {value!r}")
        if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not 0 <= backoff < math.inf:
            raise ValidationError("backoff", f"must be a finite number of seconds >= 0, got {backoff!r}")
        if ignore_own and client is None:
            raise ValidationError("client", "is required with ignore_own=True (it reads the token's user)")
        own = OwnUser(client) if ignore_own and client is not None else None
        self._handler = handler
        self._attempts = Attempts(attempts=attempts, backoff=float(backoff), own=own)
        self._journal_path = journal
        self._concurrency = concurrency
        self._queue_size = queue_size
        self.shutdown_grace = SHUTDOWN_GRACE_SECONDS
        """Seconds a stop waits for running handlers before cancelling them."""
        self._journal: Checkpoint | None = None
        self._store: JournalEvents | MemoryEvents | None = None
        self._queue: deque[WebhookEvent] = deque()
        self._running: dict[str, WebhookEvent] = {}
        self._backlog = False  # events wait in the store beyond the queue (a restart, an overflow, a retry)
        self._workers: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._counts = _Counts()

    def __repr__(self) -> str:
        journal = None if self._journal_path is None else os.fspath(self._journal_path)
        return f"WebhookReceiver(journal={journal!r}, concurrency={self._concurrency})"

    @property
    def durable(self) -> bool:
        """Whether acknowledged events are kept in a journal (and so survive a restart)."""
        return self._journal_path is not None

    @property
    def stats(self) -> WebhookStats:
        """The counters since the start, and what is queued and running now."""
        if isinstance(self._store, JournalEvents):
            queued = max(self._store.waiting() - len(self._running), 0)
        else:
            queued = len(self._queue) + (self._store.waiting() if self._store is not None else 0)
        return WebhookStats(**attrs.asdict(self._counts), queued=queued, running=len(self._running))

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the journal (taking its lock) and start the workers; the journal's waiting events are queued.

        :raises CheckpointError: the journal cannot be opened, or another run holds it
            (:class:`~pipedrive_channels.CheckpointLockedError`).
        """
        if self._workers:
            raise ValidationError("receiver", "is running already")
        if self._journal_path is not None:
            self._journal = Checkpoint(self._journal_path)
            try:
                self._store = JournalEvents(self._journal)
            except CheckpointError:
                self._journal.close()
                self._journal = None
                raise
            self._backlog = True  # acknowledged before a crash or a stop, never handled: handle them now
        else:
            self._store = MemoryEvents()
        self._stopping = False
        self._queue.clear()
        # Made anew per start: an asyncio primitive belongs to the loop it was first used in.
        self._wake, self._idle = asyncio.Event(), asyncio.Event()
        if self._attempts.own is not None:
            self._attempts.own.restart()
        self._update_idle()
        self._workers = [asyncio.create_task(self._work(), name=f"webhook-worker-{n}")
                         for n in range(self._concurrency)]

    async def stop(self) -> None:
        """Stop the workers: running handlers get :attr:`shutdown_grace` seconds, then are cancelled.

        With a journal the events not handled stay pending and are handled at the next start; without one they
        are lost (logged). Then the journal is closed. Never hangs, leaves no task.
        """
        self._stopping = True
        self._wake.set()
        workers, self._workers = self._workers, []
        late: set[asyncio.Task[None]] = set()
        if workers:
            _, late = await asyncio.wait(workers, timeout=self.shutdown_grace)
        unfinished = len(self._queue) + len(self._running)
        for task in late:
            task.cancel()
        if late:
            _, stuck = await asyncio.wait(late, timeout=CANCEL_WAIT_SECONDS * 2)
            if stuck:  # never a hang: a handler ignoring its cancellation is left, and said
                _log.error("webhooks: %d handlers ignored their cancellation and still run", len(stuck))
        for task in workers:
            if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                _log.error("webhooks: a worker failed", exc_info=error)
        if unfinished and self._journal is None:
            _log.warning("webhooks: %d acknowledged events were not handled and are lost (no journal)", unfinished)
        elif unfinished:
            _log.info("webhooks: %d events stay pending in the journal for the next start", unfinished)
        self._queue.clear()
        self._running.clear()
        self._backlog = False
        self._update_idle()
        if self._journal is not None:
            self._journal.close()
            self._journal = None
            self._store = None  # its rows are read again at the next start

    async def drained(self) -> None:
        """Wait until no event is queued (nor waiting in the journal) and no handler runs."""
        while not self._idle.is_set():
            await self._idle.wait()

    # -- the HTTP side -------------------------------------------------------------------------------------

    def accept(self, event: WebhookEvent, body: str) -> Acceptance:
        """Record a delivery and queue it (or not); the answer follows from the result.

        With a journal the event is committed when this returns, even when the queue is full (it is read back
        later); without one a full queue refuses it (:attr:`Acceptance.FULL`), remembering nothing.
        A receiver not running refuses everything (:attr:`Acceptance.STOPPED`).

        :raises CheckpointError: the journal could not record it (answer 503: Pipedrive retries).
        """
        store = self._store
        if store is None or self._stopping:
            return Acceptance.STOPPED
        full = len(self._queue) >= self._queue_size
        if isinstance(store, MemoryEvents) and full and not store.knows(event.meta.id):
            self._counts.refused += 1
            return Acceptance.FULL
        if not store.record(event, body):
            self._counts.duplicates += 1
            return Acceptance.DUPLICATE
        self._counts.received += 1
        if full:
            self._backlog = True
        else:
            self._queue.append(event)
        self._update_idle()
        self._wake.set()
        return Acceptance.ACCEPTED

    # -- operators -------------------------------------------------------------------------------------------

    def failed(self) -> list[FailedEvent]:
        """The events whose handler raised on every attempt, oldest first: ``(id, reason, attempts)``."""
        return [] if self._store is None else self._store.failures()

    async def retry_failed(self) -> int:
        """Queue the failed events again (each gets ``attempts`` more); how many. Wait with :meth:`drained`.

        :raises ValidationError: the receiver is not running.
        """
        if self._store is None or self._stopping:
            raise ValidationError("receiver", "is not running")
        count = self._store.reopen_failed()
        if count:
            self._backlog = True
            self._update_idle()
            self._wake.set()
        return count

    # -- the workers -----------------------------------------------------------------------------------------

    async def _work(self) -> None:
        while (event := await self._next()) is not None:
            self._running[event.meta.id] = event
            try:
                self._settle(event, await self._attempts.run(self._handler, event))
            finally:
                self._running.pop(event.meta.id, None)
                self._update_idle()

    async def _next(self) -> WebhookEvent | None:
        """The next event to handle, waiting for one; None once the receiver stops."""
        while not self._stopping:
            if not self._queue and self._backlog:
                self._refill()
            if self._queue:
                return self._queue.popleft()
            self._wake.clear()
            self._update_idle()
            await self._wake.wait()
        return None

    def _refill(self) -> None:
        """Queue the events waiting in the store, up to ``queue_size``."""
        assert self._store is not None
        busy = {event.meta.id for event in self._queue} | self._running.keys()
        try:
            events, self._backlog = self._store.pending(self._queue_size - len(self._queue), busy)
        except CheckpointError as error:  # read again at the next delivery, retry or start
            _log.error("webhooks: the waiting events cannot be read from the journal: %s", error)
            self._backlog = False
            return
        self._queue.extend(events)

    def _settle(self, event: WebhookEvent, outcome: Outcome) -> None:
        """Record how an event ended; a journal that cannot be written leaves it pending (handled again later)."""
        assert self._store is not None
        try:
            if outcome.failure is not None:
                self._store.failed(event, outcome.failure, outcome.attempts)
            else:
                self._store.handled(event, outcome.attempts, skipped=outcome.skipped)
        except CheckpointError as error:
            _log.error("webhook event %s: its outcome cannot be journalled, it stays pending: %s", event.meta.id,
                       error)
        if outcome.failure is not None:
            self._counts.failed += 1
        elif outcome.skipped:
            self._counts.skipped += 1
        else:
            self._counts.handled += 1

    def _update_idle(self) -> None:
        if self._queue or self._running or self._backlog:
            self._idle.clear()
        else:
            self._idle.set()
