"""Bulk back-fill: stream a channel's history into Pipedrive, resumable, in order per message, with progress.

``backfill(client, messages)`` consumes any iterable or async iterable of :class:`Message` (or
:class:`WithContact`: a message and its conversation's customer) lazily, through a bounded buffer, so memory stays
flat whatever the input size, and hands each record to its target at bulk priority, as fast as the client's budget
allows. The default target, :class:`ChannelsTarget`, sends each message with ``receive_message``;
``target=NotesTarget(...)`` (:mod:`pipedrive_channels.notes`) writes transcripts as notes on the matched person,
which is what works on live accounts since Pipedrive removed the Channels API. Any object implementing
:class:`~pipedrive_channels._target.Target` is a target: the pipeline knows nothing else of it.

- **Order**: records of the same message ``id`` (sent, then delivered, then read) are sent one after the other
  in input order; everything else proceeds concurrently.
- **Checkpoint**: a SQLite journal (standard library, WAL mode) records each delivered record, keyed by a digest
  of its body (and of its contact, when it has one), so a re-run skips exactly what was delivered, status
  updates included. SQLite rather than an append-only file: looking a record up needs no in-memory set of a
  million keys, and a commit is atomic. A record is journalled once its target took it (sent, or held in the
  target's own journal tables to be written later), and each commits before its worker starts another call; in
  WAL mode with ``synchronous=NORMAL`` a commit survives ``kill -9`` (it is in the OS's hands), so a crash
  re-delivers at most ``concurrency`` records, which is safe: a target's delivery is idempotent (receive is, on
  ``id``). A commit costs about 25 us on the event loop: far below what any plan's budget lets through (480
  requests per 2 s at most), so it is done in line, not in a thread. One run at a time may use a journal: a
  second one is refused (:class:`CheckpointLockedError`), since two would send every record twice and put
  statuses back.
- **Failures** do not stop the run: a record that fails for good (400, retries exhausted, a bad input line) is
  kept in the report and the journal with its reason (a re-run tries it again); records a target took and then
  reports failed (the notes target's contact that matches nobody) are in the report, and the target keeps them.
  A spent daily budget pauses the run until the budget allows, or stops it resumably at the ``deadline``; so
  does ``stop``. An error of the run itself (the budget's Redis down, the journal unwritable, ``on_progress`` or
  the input raising) ends it at once, resumably, and is raised: what was delivered is journalled, nothing else
  is.
- **The end**: once the input is read and every record delivered, the run calls the target's ``flush`` (a
  target that coalesces writes, like the notes target, writes what it holds), under the same budget waits,
  deadline and stop. A run that stopped early does not: what the target holds stays in the journal, and the
  re-run (which skips the journalled records) writes it at its own end.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Mapping

import attrs

from .._journal import Checkpoint, CheckpointError, CheckpointLockedError
from .._target import Outcome, Target
from ..budget import Budget, Priority
from ..client import ChannelsClient
from ..models import Message
from ..notes import Contact
from ._channels import ChannelsTarget
from ._input import BadInput, WithContact, read_jsonl, shard_of
from ._pipeline import MAX_CONCURRENCY, _Options, _Pipeline
from ._tally import BackfillReport, Failure, Progress

__all__ = [
    "MAX_CONCURRENCY",
    "BackfillReport",
    "BadInput",
    "ChannelsTarget",
    "Checkpoint",
    "CheckpointError",
    "CheckpointLockedError",
    "Estimate",
    "Failure",
    "Outcome",
    "Progress",
    "Target",
    "WithContact",
    "backfill",
    "estimate",
    "read_jsonl",
    "shard_of",
]


@attrs.frozen
class Estimate:
    """What a back-fill will cost: requests, tokens, and seconds at the budget's limits (from full)."""

    messages: int
    bad_lines: int
    requests: int
    tokens: int
    seconds: float


def estimate(
    messages: Iterable[Message | WithContact | BadInput], budget: Budget, target: Target | None = None
) -> Estimate:
    """Read ``messages`` once and say what delivering them through ``target`` (default: the Channels target)
    costs at most, and how long ``budget`` makes it take."""
    counted = {"records": 0, "bad": 0}

    def records() -> Iterator[tuple[Message, Contact | None]]:
        for item in messages:
            if isinstance(item, BadInput):
                counted["bad"] += 1
                continue
            counted["records"] += 1
            yield (item.message, item.contact) if isinstance(item, WithContact) else (item, None)

    requests, tokens = (target or ChannelsTarget()).estimate(records())
    return Estimate(counted["records"], counted["bad"], requests, tokens, budget.time_for(requests, tokens))


async def backfill(
    client: ChannelsClient,
    messages: Iterable[Message | WithContact | BadInput] | AsyncIterable[Message | WithContact | BadInput],
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
    target: Target | None = None,
) -> BackfillReport:
    """Deliver ``messages`` through ``target`` (default: each with ``client.receive_message``); see the module
    docstring for the guarantees.

    :param concurrency: calls in flight at once, at most :data:`MAX_CONCURRENCY`.
    :param checkpoint: the journal (a path opens or creates one); ``None`` keeps no journal.
    :param on_progress: called with a :class:`Progress` after each record.
    :param ensure_channels: ``{provider_channel_id: name}`` of channels to add first (once per checkpoint).
    :param shard: ``(k, n)``: take only the messages whose conversation is in shard ``k`` of ``n``.
    :param deadline: seconds from now after which the run stops resumably (in-flight calls finish).
    :param stop: set it to stop resumably, e.g. on Ctrl-C: calls in flight get ``stop_grace`` seconds to finish.
    :param target: where records go (attached to this run and its journal); ``None``: a :class:`ChannelsTarget`.
    :raises CheckpointError: the journal cannot be used (:class:`CheckpointLockedError`: another run has it).
    :raises BudgetUnavailableError: the shared budget's Redis is down (``on_redis_error="fail"``).

    Any error of the run itself (the two above, an exception of ``on_progress`` or of the input) is raised as soon
    as it happens; the calls in flight are cancelled and, not journalled, re-sent by a re-run.
    """
    options = _Options(concurrency=concurrency, shard=shard, deadline=deadline, stop_grace=stop_grace,
                       priority=priority, failures_kept=failures_kept)
    journal = Checkpoint(checkpoint) if isinstance(checkpoint, str | os.PathLike) else checkpoint
    target = target or ChannelsTarget()
    pipeline = _Pipeline(client, target, journal, options, on_progress=on_progress, stop=stop or asyncio.Event())
    try:
        if ensure_channels:
            await pipeline.ensure_channels(ensure_channels)
        await pipeline.run(messages)
    finally:
        if journal is not None and journal is not checkpoint:
            journal.close()
    return pipeline.tally.report(target.counts())
