"""Bulk back-fill: stream a channel's history into Pipedrive, resumable, in order per message, with progress.

``backfill(client, messages)`` consumes any iterable or async iterable of :class:`Message` lazily, through a
bounded buffer, so memory stays flat whatever the input size, and sends each message with
``receive_message`` at bulk priority, as fast as the client's budget allows.

- **Order**: records of the same message ``id`` (sent, then delivered, then read) are sent one after the other
  in input order; everything else proceeds concurrently.
- **Checkpoint**: a SQLite journal (standard library, WAL mode) records each delivered record, keyed by a digest
  of its body, so a re-run skips exactly what was delivered, status updates included. SQLite rather than an
  append-only file: looking a record up needs no in-memory set of a million keys, and a commit is atomic.
  Each delivery commits before its worker starts another call; in WAL mode with ``synchronous=NORMAL`` a commit
  survives ``kill -9`` (it is in the OS's hands), so a crash re-sends at most ``concurrency`` records, which is
  safe: receive is idempotent on ``id``. A commit costs about 25 us on the event loop: far below what any
  plan's budget lets through (480 requests per 2 s at most), so it is done in line, not in a thread. One run at a
  time may use a journal: a second one is refused (:class:`CheckpointLockedError`), since two would send every
  record twice and put statuses back.
- **Failures** do not stop the run: a record that fails for good (400, retries exhausted, a bad input line) is
  kept in the report and the journal with its reason (a re-run tries it again). A spent daily budget pauses
  the run until the budget allows, or stops it resumably at the ``deadline``; so does ``stop``. An error of the
  run itself (the budget's Redis down, the journal unwritable, ``on_progress`` or the input raising) ends it at
  once, resumably, and is raised: what was delivered is journalled, nothing else is.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import sys
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import attrs

from ..budget import Budget, Priority
from ..client import ChannelsClient
from ..costs import operation_cost
from ..errors import (
    ApiError,
    BudgetExhaustedError,
    BudgetTimeoutError,
    PipedriveError,
    RateLimitError,
    TransportError,
    ValidationError,
)
from ..models import Message, converter

if sys.platform == "win32":
    import msvcrt

    def _lock(file: BinaryIO) -> None:
        msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)  # OSError when another process holds it
else:
    import fcntl

    def _lock(file: BinaryIO) -> None:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError when another one holds it

__all__ = [
    "MAX_CONCURRENCY",
    "BackfillReport",
    "BadInput",
    "Checkpoint",
    "CheckpointError",
    "CheckpointLockedError",
    "Estimate",
    "Failure",
    "Progress",
    "backfill",
    "estimate",
    "read_jsonl",
    "shard_of",
]

_RECEIVE_COST = operation_cost("POST", "/channels/messages/receive")

MAX_CONCURRENCY = 256
"""The most calls a back-fill keeps in flight: past what any plan's burst limit lets through (480 requests per
2 s), while each one costs a task and buffer room."""

# What a delivery may raise that concerns its record only (the run goes on): an error answer, no answer, a
# message the client refuses, or an answer nested too deep to decode. Anything else ends the run.
_RECORD_ERRORS = (ApiError, TransportError, ValidationError, RecursionError)


class CheckpointError(PipedriveError):
    """The checkpoint journal cannot be opened, read or written; names the file. The SQLite error is the cause."""


class CheckpointLockedError(CheckpointError):
    """Another run (in this process or another one) uses the checkpoint; it is held until that run ends."""


@attrs.frozen
class BadInput:
    """An input record that is not a valid message: its line (when read from a file) and why."""

    line: int | None
    reason: str


@attrs.frozen
class Failure:
    """A record that was not delivered: the message ``id`` (or the input line) and the reason."""

    message_id: str | None
    line: int | None
    reason: str


@attrs.frozen
class Progress:
    """Where a back-fill is, passed to ``on_progress`` after each record."""

    delivered: int
    skipped: int
    failed: int
    tokens_charged: float
    requests_sent: int
    elapsed: float
    waiting: int
    """Calls waiting for the budget right now."""


@attrs.frozen
class BackfillReport:
    """What a back-fill did; ``stopped`` means it ended early and a re-run with its checkpoint resumes it."""

    delivered: int
    skipped: int
    failed: int
    failures: tuple[Failure, ...]
    """The first failures (up to ``failures_kept``), in the order they happened."""
    tokens_charged: float
    requests_sent: int
    """Requests admitted by the budget during the run, retries included."""
    elapsed: float
    stopped: bool

    @property
    def rate(self) -> float:
        """Delivered messages per second."""
        return self.delivered / self.elapsed if self.elapsed > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (what the CLI prints with ``--json``)."""
        return {**attrs.asdict(self), "rate": self.rate}


@attrs.frozen
class Estimate:
    """What a back-fill will cost: requests, tokens, and seconds at the budget's limits (from full)."""

    messages: int
    bad_lines: int
    requests: int
    tokens: int
    seconds: float


class Checkpoint:
    """The back-fill journal: a SQLite file (WAL mode) of delivered and failed records, and added channels.

    It holds an exclusive lock on ``<path>.lock`` while open (``flock``, released by the OS when the process dies,
    even by ``kill -9``), so a second run on the same journal is refused with :class:`CheckpointLockedError`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self._lock_file: BinaryIO = open(lock_path, "ab")  # noqa: SIM115 (held until close())
        except OSError as error:
            raise CheckpointError(f"checkpoint {self.path}: cannot create its lock file: {error}") from error
        try:
            _lock(self._lock_file)
        except OSError:
            self._lock_file.close()
            raise CheckpointLockedError(
                f"checkpoint {self.path} is in use by another run (it holds {lock_path}); wait for it to end or "
                f"use another checkpoint"
            ) from None
        try:
            # Autocommit: each statement is its own transaction, committed before the next record goes out.
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as error:
            self._lock_file.close()
            raise CheckpointError(f"checkpoint {self.path}: {error}") from error
        try:
            self._sql("PRAGMA journal_mode=WAL")
            self._sql("PRAGMA synchronous=NORMAL")
            self._sql(
                "CREATE TABLE IF NOT EXISTS records (key BLOB PRIMARY KEY, message_id TEXT NOT NULL, failure TEXT)"
                " WITHOUT ROWID"
            )
            self._sql("CREATE TABLE IF NOT EXISTS channels (provider_channel_id TEXT PRIMARY KEY)")
        except CheckpointError:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r})"

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _sql(self, query: str, parameters: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            return self._db.execute(query, parameters)
        except sqlite3.Error as error:  # a full disk, a read-only file, a corrupt journal: the run cannot go on
            raise CheckpointError(f"checkpoint {self.path}: {error}") from error

    def delivered(self, key: bytes) -> bool:
        """Whether the record with this key was delivered (a failed one is not: a re-run tries it again)."""
        row = self._sql("SELECT failure FROM records WHERE key = ?", (key,)).fetchone()
        return row is not None and row[0] is None

    def record(self, key: bytes, message_id: str, failure: str | None = None) -> None:
        """Journal a record as delivered (``failure`` None) or failed with that reason; committed at once."""
        self._sql("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", (key, message_id, failure))

    def is_empty(self) -> bool:
        """Whether no record was journalled yet (a fresh run need not look anything up)."""
        return self._sql("SELECT 1 FROM records LIMIT 1").fetchone() is None

    def has_channel(self, provider_channel_id: str) -> bool:
        """Whether ``ensure_channels`` already added this channel in an earlier run."""
        query = "SELECT 1 FROM channels WHERE provider_channel_id = ?"
        return self._sql(query, (provider_channel_id,)).fetchone() is not None

    def add_channel(self, provider_channel_id: str) -> None:
        """Journal a channel as added."""
        self._sql("INSERT OR IGNORE INTO channels VALUES (?)", (provider_channel_id,))

    def counts(self) -> tuple[int, int]:
        """(delivered, failed) records in the journal."""
        delivered, failed = self._sql("SELECT COUNT(*) - COUNT(failure), COUNT(failure) FROM records").fetchone()
        return int(delivered), int(failed)

    def close(self) -> None:
        """Close the database, then let another run have it."""
        try:
            self._db.close()
        finally:
            self._lock_file.close()


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[Message | BadInput]:
    """Read messages from a JSON Lines file, one receive-message body per line, lazily.

    A line that is not a valid message becomes a :class:`BadInput` naming the line and the field; blank lines
    are skipped.
    """
    with open(path, "rb") as file:  # bytes: a line that is not UTF-8 is a bad line, not a crash of the run
        for number, raw in enumerate(file, start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw.decode("utf-8"))
                if not isinstance(data, dict):
                    raise TypeError(f"a line must hold a JSON object, got {type(data).__name__}")
                yield converter.structure(data, Message)
            except ValidationError as error:
                yield BadInput(number, str(error))
            except RecursionError:  # json.loads (or structuring) recursing into a line like [[[[...]]]]
                yield BadInput(number, "the JSON is nested too deeply")
            except (ValueError, TypeError, KeyError) as error:
                reason = f"missing field {error}" if isinstance(error, KeyError) else f"{type(error).__name__}: {error}"
                yield BadInput(number, reason)


def shard_of(conversation_id: str, shards: int) -> int:
    """The shard (0 to ``shards - 1``) a conversation belongs to: stable across runs, processes and machines."""
    digest = hashlib.blake2b(conversation_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def estimate(messages: Iterable[Message | BadInput], budget: Budget) -> Estimate:
    """Read ``messages`` once and say what sending them costs, and how long ``budget`` makes it take."""
    count = bad = 0
    for item in messages:
        if isinstance(item, BadInput):
            bad += 1
        else:
            count += 1
    tokens = count * _RECEIVE_COST
    return Estimate(count, bad, count, tokens, budget.time_for(count, tokens))


def _key(message: Message) -> bytes:
    # The digest of the wire body (cattrs writes the fields in one fixed order): an update (same id, new status)
    # is a record of its own, and the same record twice is one.
    return hashlib.blake2b(_encode(converter.unstructure(message)).encode(), digest_size=16).digest()


_encode = json.JSONEncoder(separators=(",", ":")).encode


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
    key: bytes


async def backfill(
    client: ChannelsClient,
    messages: Iterable[Message | BadInput] | AsyncIterable[Message | BadInput],
    *,
    concurrency: int = 16,
    checkpoint: Checkpoint | str | os.PathLike[str] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    ensure_channels: Mapping[str, str] | None = None,
    shard: tuple[int, int] | None = None,
    deadline: float | None = None,
    stop: asyncio.Event | None = None,
    stop_grace: float = 10.0,
    priority: Priority = Priority.BULK,
    failures_kept: int = 100,
) -> BackfillReport:
    """Deliver ``messages`` with ``client.receive_message``; see the module docstring for the guarantees.

    :param concurrency: calls in flight at once, at most :data:`MAX_CONCURRENCY`.
    :param checkpoint: the journal (a path opens or creates one); ``None`` keeps no journal.
    :param on_progress: called with a :class:`Progress` after each record.
    :param ensure_channels: ``{provider_channel_id: name}`` of channels to add first (once per checkpoint).
    :param shard: ``(k, n)``: take only the messages whose conversation is in shard ``k`` of ``n``.
    :param deadline: seconds from now after which the run stops resumably (in-flight calls finish).
    :param stop: set it to stop resumably, e.g. on Ctrl-C: calls in flight get ``stop_grace`` seconds to finish.
    :raises CheckpointError: the journal cannot be used (:class:`CheckpointLockedError`: another run has it).
    :raises BudgetUnavailableError: the shared budget's Redis is down (``on_redis_error="fail"``).

    Any error of the run itself (the two above, an exception of ``on_progress`` or of the input) is raised as soon
    as it happens; the calls in flight are cancelled and, not journalled, re-sent by a re-run.
    """
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be from 1 to {MAX_CONCURRENCY}, got {concurrency}")
    if shard is not None and not 0 <= shard[0] < shard[1]:
        raise ValueError(f"shard must be (k, n) with 0 <= k < n, got {shard}")
    journal = Checkpoint(checkpoint) if isinstance(checkpoint, str | os.PathLike) else checkpoint
    run = _Run(client, journal, concurrency, on_progress, deadline, stop or asyncio.Event(), stop_grace, priority,
               failures_kept)
    try:
        if ensure_channels:
            await run.ensure_channels(ensure_channels)
        await run.deliver_all(messages, shard)
    finally:
        if journal is not None and journal is not checkpoint:
            journal.close()
    return run.report()


class _Run:
    """One back-fill's state: the counters, the buffer, and the per-message-id queues that keep order."""

    def __init__(
        self,
        client: ChannelsClient,
        journal: Checkpoint | None,
        concurrency: int,
        on_progress: Callable[[Progress], None] | None,
        deadline: float | None,
        stop: asyncio.Event,
        stop_grace: float,
        priority: Priority,
        failures_kept: int,
    ) -> None:
        self.client = client
        self.journal = journal
        self.concurrency = concurrency
        self.on_progress = on_progress
        self.started = time.monotonic()
        self.deadline = None if deadline is None else self.started + deadline
        self.stop = stop
        self.stop_grace = stop_grace
        self.priority = priority
        self.failures_kept = failures_kept
        self.budget_at_start = client.budget.stats()
        # A fresh journal has nothing to skip: no look-up per record.
        self.look_up = journal is not None and not journal.is_empty()
        self.delivered = self.skipped = self.failed = 0
        self.failures: list[Failure] = []
        self.stopped = False
        # Records behind the one in flight for the same message id, in input order.
        self.behind: dict[str, deque[_Record]] = {}
        # Ids with a failed record in this run: their later records fail too, so that a re-run, which tries
        # failed records again, re-sends them all in order and never puts a message's status back.
        self.failed_ids: set[str] = set()

    def stopping(self) -> bool:
        if self.stop.is_set() or (self.deadline is not None and time.monotonic() >= self.deadline):
            self.stopped = True
        return self.stopped

    async def ensure_channels(self, channels: Mapping[str, str]) -> None:
        for provider_channel_id, name in channels.items():
            if self.journal is not None and self.journal.has_channel(provider_channel_id):
                continue
            await self.client.add_channel(name=name, provider_channel_id=provider_channel_id, priority=self.priority)
            if self.journal is not None:
                self.journal.add_channel(provider_channel_id)

    async def deliver_all(self, messages: Iterable[Any] | AsyncIterable[Any], shard: tuple[int, int] | None) -> None:
        ready: asyncio.Queue[_Record | None] = asyncio.Queue()
        room = _Room(high=self.concurrency * 4, low=self.concurrency * 2)
        workers = [asyncio.ensure_future(self.work(ready, room)) for _ in range(self.concurrency)]
        # The reader is a task like the workers, so that the first of them to fail ends the run whatever the
        # others wait for: the reader for room a dead worker would never free, a worker for a record.
        tasks = [asyncio.ensure_future(self.feed(messages, shard, ready, room)), *workers]
        watcher = asyncio.ensure_future(self.end_on_stop(workers, room))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:  # cancelled, or a task failed (else all are done): in-flight calls are not journalled, so re-sent
            for task in (*tasks, watcher):
                task.cancel()
            await asyncio.gather(*tasks, watcher, return_exceptions=True)
        for task in tasks:
            if not task.cancelled() and (error := task.exception()) is not None:
                raise error

    async def end_on_stop(self, workers: list[asyncio.Task[None]], room: _Room) -> None:
        """After ``stop``, give in-flight calls ``stop_grace`` seconds, then cancel what still waits.

        A call can wait for hours on a spent daily budget; a cancelled one is not journalled, so the re-run
        sends it (safely: receive is idempotent on ``id``).
        """
        await self.stop.wait()
        self.stopped = True
        _, waiting = await asyncio.wait(workers, timeout=self.stop_grace)
        for worker in waiting:
            worker.cancel()
        room.open()  # the reader may wait for room that the cancelled workers will never free

    async def feed(
        self,
        messages: Iterable[Any] | AsyncIterable[Any],
        shard: tuple[int, int] | None,
        ready: asyncio.Queue[_Record | None],
        room: _Room,
    ) -> None:
        """Read the input, drop what is done or not ours, and queue the rest, one record per message id at a time."""
        async for item in _each(messages):
            if self.stopping():
                break
            if isinstance(item, BadInput):
                self.fail(None, item.line, item.reason)
                continue
            if not isinstance(item, Message):
                self.fail(None, None, f"not a Message: {type(item).__name__}")
                continue
            if shard is not None and shard_of(item.conversation_id, shard[1]) != shard[0]:
                continue
            key = _key(item) if self.journal is not None else b""
            if self.look_up and self.journal is not None and self.journal.delivered(key):
                self.skipped += 1
                self.progress()
                continue
            await room.take()
            record = _Record(item, key)
            if item.id in self.behind:
                self.behind[item.id].append(record)  # an earlier record of this id is in flight
            else:
                self.behind[item.id] = deque()
                ready.put_nowait(record)
        for _ in range(self.concurrency):
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

    async def deliver(self, record: _Record) -> None:
        if record.message.id in self.failed_ids:
            self.record_failure(record, "an earlier record of this message failed in this run")
            return
        while True:
            remaining = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
            try:
                await self.client.receive_message(record.message, priority=self.priority, timeout=remaining)
            except (BudgetExhaustedError, BudgetTimeoutError) as error:
                # Refused by the server (a 429: the daily budget is spent), the budget now holds for its wait, so
                # the next acquire pauses until then; refused by the budget itself, it cannot go before the deadline.
                if self.deadline is None or isinstance(error.__cause__, RateLimitError):
                    continue
                self.stopped = True  # past the deadline: leave it for the re-run
                return
            except _RECORD_ERRORS as error:
                self.failed_ids.add(record.message.id)
                self.record_failure(record, str(error))
                return
            self.delivered += 1
            if self.journal is not None:
                self.journal.record(record.key, record.message.id)
            self.progress()
            return

    def record_failure(self, record: _Record, reason: str) -> None:
        if self.journal is not None:
            self.journal.record(record.key, record.message.id, reason)
        self.fail(record.message.id, None, reason)

    def fail(self, message_id: str | None, line: int | None, reason: str) -> None:
        self.failed += 1
        if len(self.failures) < self.failures_kept:
            self.failures.append(Failure(message_id, line, reason))
        self.progress()

    def progress(self) -> None:
        if self.on_progress is not None:
            budget = self.client.budget.stats()
            self.on_progress(
                Progress(
                    self.delivered,
                    self.skipped,
                    self.failed,
                    budget.tokens_charged - self.budget_at_start.tokens_charged,
                    budget.requests_admitted - self.budget_at_start.requests_admitted,
                    time.monotonic() - self.started,
                    budget.queue_length,
                )
            )

    def report(self) -> BackfillReport:
        budget = self.client.budget.stats()
        return BackfillReport(
            delivered=self.delivered,
            skipped=self.skipped,
            failed=self.failed,
            failures=tuple(self.failures),
            tokens_charged=budget.tokens_charged - self.budget_at_start.tokens_charged,
            requests_sent=budget.requests_admitted - self.budget_at_start.requests_admitted,
            elapsed=time.monotonic() - self.started,
            stopped=self.stopped,
        )
