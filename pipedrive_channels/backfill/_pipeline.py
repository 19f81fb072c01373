"""The back-fill's pipeline: a reader task feeding workers through a bounded buffer, in order per message id.

The reader, the workers and the finisher (which flushes the target once every record was delivered) are tasks of
one supervisor: the first of them to fail ends the run, and a stop gives the calls in flight a grace period before
it cancels them. The pipeline knows nothing of where records go: its target delivers them.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs

from .._journal import Checkpoint
from .._target import Target
from .._wire import dumps
from ..budget import Priority
from ..client import ChannelsClient
from ..errors import ApiError, BudgetExhaustedError, BudgetTimeoutError, RateLimitError, TransportError, ValidationError
from ..models import Message, converter
from ..notes import Contact
from ._input import BadInput, WithContact, shard_of
from ._tally import Progress, _Tally

MAX_CONCURRENCY = 256
"""The most calls a back-fill keeps in flight: past what any plan's burst limit lets through (480 requests per
2 s), while each one costs a task and buffer room."""

# What a delivery may raise that concerns its record only (the run goes on): an error answer, no answer, a
# message the client refuses, or an answer nested too deep to decode. Anything else ends the run.
_RECORD_ERRORS = (ApiError, TransportError, ValidationError, RecursionError)


def _check_concurrency(instance: object, attribute: object, value: int) -> None:
    if not 1 <= value <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be from 1 to {MAX_CONCURRENCY}, got {value}")


def _check_shard(instance: object, attribute: object, value: tuple[int, int] | None) -> None:
    if value is not None and not 0 <= value[0] < value[1]:
        raise ValueError(f"shard must be (k, n) with 0 <= k < n, got {value}")


@attrs.frozen(kw_only=True)
class _Options:
    """How a back-fill runs, checked once; see :func:`~pipedrive_channels.backfill.backfill` for each."""

    concurrency: int = attrs.field(validator=_check_concurrency)
    shard: tuple[int, int] | None = attrs.field(validator=_check_shard)
    deadline: float | None
    """Seconds from the start."""
    stop_grace: float
    priority: Priority
    failures_kept: int


def _key(message: Message, contact: Contact | None) -> bytes:
    # The digest of the body the client sends: an update (same id, new status) is a record of its own, and the
    # same record twice is one. A contact, when given, is part of the record (a re-run with a corrected one
    # delivers it again); without one the key is the body's alone, as journals written before contacts hold.
    digest = hashlib.blake2b(dumps(converter.unstructure(message)), digest_size=16)
    if contact is not None:
        digest.update(b"\0contact")
        digest.update(dumps(attrs.asdict(contact)))
    return digest.digest()


async def _each(messages: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(messages, AsyncIterable):
        async for item in messages:
            yield item
    else:
        for count, item in enumerate(messages):
            yield item
            if count % 1000 == 999:
                await asyncio.sleep(0)  # a long run of skipped records must not hold the loop


class _Room:
    """Bounds the records read but not done (memory stays flat), waking the reader in batches.

    The reader waits once the buffer holds ``high`` records and goes on when it is down to ``low``: one wake-up
    per ``high - low`` records instead of one per record (a semaphore's way), which measured 10% of throughput.
    """

    def __init__(self, high: int, low: int) -> None:
        self.high, self.low = high, low
        self.held = 0
        self._drained = asyncio.Event()

    async def take(self) -> None:
        if self.held >= self.high:
            self._drained.clear()
            await self._drained.wait()
        self.held += 1

    def give(self) -> None:
        self.held -= 1
        if self.held <= self.low:
            self._drained.set()

    def open(self) -> None:
        """Let a waiting reader go on whatever the count (the run is ending)."""
        self._drained.set()


@attrs.define
class _Record:
    message: Message
    contact: Contact | None
    key: bytes


class _Pipeline:
    """One back-fill run: the reader, the workers and the per-message-id queues that keep order."""

    def __init__(
        self,
        client: ChannelsClient,
        target: Target,
        journal: Checkpoint | None,
        options: _Options,
        *,
        on_progress: Callable[[Progress], None] | None,
        stop: asyncio.Event,
    ) -> None:
        self.client = client
        self.target = target
        self.journal = journal
        self.options = options
        self.on_progress = on_progress
        self.stop = stop
        self.tally = _Tally(client.budget, options.failures_kept)
        self.deadline = None if options.deadline is None else self.tally.started + options.deadline
        # A fresh journal has nothing to skip: no look-up per record.
        self.look_up = journal is not None and not journal.is_empty()
        # Records behind the one in flight for the same message id, in input order.
        self.behind: dict[str, deque[_Record]] = {}
        # Ids with a failed record in this run: their later records fail too, so that a re-run, which tries
        # failed records again, re-sends them all in order and never puts a message's status back.
        self.failed_ids: set[str] = set()
        target.attach(journal, self.tally, priority=options.priority, deadline=self.deadline)

    def stopping(self) -> bool:
        if self.stop.is_set() or (self.deadline is not None and time.monotonic() >= self.deadline):
            self.tally.stopped = True
        return self.tally.stopped

    async def ensure_channels(self, channels: Mapping[str, str]) -> None:
        """Add each channel the journal does not hold yet, and journal it."""
        for provider_channel_id, name in channels.items():
            if self.journal is not None and self.journal.has_channel(provider_channel_id):
                continue
            await self.client.add_channel(
                name=name, provider_channel_id=provider_channel_id, priority=self.options.priority
            )
            if self.journal is not None:
                self.journal.add_channel(provider_channel_id)

    async def run(self, messages: Iterable[Any] | AsyncIterable[Any]) -> None:
        """Deliver ``messages``; the first error of the reader or of a worker is raised, the others cancelled."""
        concurrency = self.options.concurrency
        ready: asyncio.Queue[_Record | None] = asyncio.Queue()
        room = _Room(high=concurrency * 4, low=concurrency * 2)
        workers = [asyncio.ensure_future(self.work(ready, room)) for _ in range(concurrency)]
        finisher = asyncio.ensure_future(self.finish(workers))
        # The reader is a task like the workers, so that the first of them to fail ends the run whatever the
        # others wait for: the reader for room a dead worker would never free, a worker for a record.
        tasks = [asyncio.ensure_future(self.feed(messages, ready, room)), *workers, finisher]
        watcher = asyncio.ensure_future(self.end_on_stop([*workers, finisher], room))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:  # cancelled, or a task failed (else all are done): in-flight calls are not journalled, so re-sent
            for task in (*tasks, watcher):
                task.cancel()
            await asyncio.gather(*tasks, watcher, return_exceptions=True)
        for task in tasks:
            if not task.cancelled() and (error := task.exception()) is not None:
                raise error

    async def end_on_stop(self, workers: list[asyncio.Future[None]], room: _Room) -> None:
        """After ``stop``, give in-flight calls (the final flush's too) ``stop_grace`` seconds, then cancel what
        still waits.

        A call can wait for hours on a spent daily budget; a cancelled one is not journalled, so the re-run
        delivers it again (safely: a target's delivery is idempotent, as receive is on ``id``).
        """
        await self.stop.wait()
        self.tally.stopped = True
        _, waiting = await asyncio.wait(workers, timeout=self.options.stop_grace)
        for worker in waiting:
            worker.cancel()
        room.open()  # the reader may wait for room that the cancelled workers will never free

    async def feed(
        self, messages: Iterable[Any] | AsyncIterable[Any], ready: asyncio.Queue[_Record | None], room: _Room
    ) -> None:
        """Read the input, drop what is done or not ours, and queue the rest, one record per message id at a time."""
        shard, tally = self.options.shard, self.tally
        async for item in _each(messages):
            if self.stopping():
                break
            if isinstance(item, Message):
                message, contact = item, None
            elif isinstance(item, WithContact):
                message, contact = item.message, item.contact
            elif isinstance(item, BadInput):
                self.fail(None, item.line, item.reason)
                continue
            else:
                self.fail(None, None, f"not a Message: {type(item).__name__}")
                continue
            if shard is not None and shard_of(message.conversation_id, shard[1]) != shard[0]:
                continue
            key = _key(message, contact) if self.journal is not None else b""
            if self.look_up and self.journal is not None and self.journal.delivered(key):
                tally.skipped += 1
                self.progress()
                continue
            await room.take()
            record = _Record(message, contact, key)
            if message.id in self.behind:
                self.behind[message.id].append(record)  # an earlier record of this id is in flight
            else:
                self.behind[message.id] = deque()
                ready.put_nowait(record)
        for _ in range(self.options.concurrency):
            ready.put_nowait(None)  # the end of the input, one for each worker

    async def work(self, ready: asyncio.Queue[_Record | None], room: _Room) -> None:
        while (record := await ready.get()) is not None:
            message_id = record.message.id
            next_record: _Record | None = record
            while next_record is not None:
                if not self.stopping():
                    await self.deliver(next_record)
                room.give()
                queue = self.behind[message_id]
                next_record = queue.popleft() if queue else None
            del self.behind[message_id]

    async def finish(self, workers: list[asyncio.Task[None]]) -> None:
        """Once every record was delivered, have the target write what it holds.

        Not when the run stopped: what the target holds is in the journal, and the re-run writes it.
        """
        await asyncio.wait(workers)
        if self.stopping() or any(not worker.cancelled() and worker.exception() for worker in workers):
            return  # stopped, or ending on a worker's error
        try:
            await self.until_done(lambda: self.target.flush(self.client))
        except _RECORD_ERRORS as error:  # held records stay in the target's journal tables: the re-run writes them
            self.fail(None, None, f"writing what the target held: {error}")
        self.progress()

    async def until_done(self, step: Callable[[], Awaitable[None]], refused: Exception | None = None) -> bool:
        """Run ``step`` (a delivery or the flush) until the budget lets it through; False if the run stops first.

        :param refused: the budget's refusal of an attempt the caller made itself (a record's first one, made
            without this coroutine: it measured 3% of the engine's instructions per record).
        """
        while True:
            # Refused by the server (a 429: the daily budget is spent), the budget now holds for its wait, so the
            # next acquire pauses until then; refused by the budget itself, it cannot go before the deadline.
            if refused is not None and self.deadline is not None and not isinstance(refused.__cause__, RateLimitError):
                self.tally.stopped = True  # past the deadline: leave it for the re-run
                return False
            try:
                await step()
            except (BudgetExhaustedError, BudgetTimeoutError) as error:
                refused = error
                continue
            return True

    async def deliver(self, record: _Record) -> None:
        message = record.message
        if message.id in self.failed_ids:
            self.record_failure(record, "an earlier record of this message failed in this run")
            return
        target, client, contact = self.target, self.client, record.contact
        try:
            try:
                await target.deliver(client, message, contact=contact)
            except (BudgetExhaustedError, BudgetTimeoutError) as refused:
                if not await self.until_done(lambda: target.deliver(client, message, contact=contact), refused):
                    return
        except _RECORD_ERRORS as error:
            self.failed_ids.add(message.id)
            self.record_failure(record, str(error))
            return
        self.tally.taken += 1
        if self.journal is not None:
            self.journal.record(record.key, message.id)
        self.progress()

    def record_failure(self, record: _Record, reason: str) -> None:
        if self.journal is not None:
            self.journal.record(record.key, record.message.id, reason)
        self.fail(record.message.id, None, reason)

    def fail(self, message_id: str | None, line: int | None, reason: str) -> None:
        self.tally.fail(message_id, line, reason)
        self.progress()

    def progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.tally.progress())
