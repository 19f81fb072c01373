"""What a back-fill counts, and the two views of it: :class:`Progress` after each record, the report at the end."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import attrs

from ..budget import Budget, BudgetStats

__all__ = ["BackfillReport", "Failure", "Progress"]


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
    held: int = 0
    """Records the target took and holds, to be written later (the notes target coalesces writes): done, but not
    yet delivered."""


@attrs.frozen
class BackfillReport:
    """What a back-fill did; ``stopped`` means it ended early and a re-run with its checkpoint resumes it."""

    delivered: int
    """Records that reached Pipedrive during the run, as its target says: for one that holds records and writes
    them later (the notes target), records an earlier, stopped run took are counted when they are written."""
    skipped: int
    failed: int
    failures: tuple[Failure, ...]
    """The first failures (up to ``failures_kept``), in the order they happened."""
    tokens_charged: float
    requests_sent: int
    """Requests admitted by the budget during the run, retries included."""
    elapsed: float
    stopped: bool
    counts: Mapping[str, int] = attrs.field(factory=dict)
    """What the target did beyond records (the notes target: ``persons_found``, ``notes_created``, ...)."""

    @property
    def rate(self) -> float:
        """Delivered messages per second."""
        return self.delivered / self.elapsed if self.elapsed > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (what the CLI prints with ``--json``)."""
        return {**attrs.asdict(self), "counts": dict(self.counts), "rate": self.rate}


class _Tally:
    """One run's counts, and what the budget charged since it started (the budget may be shared).

    It is the run's :class:`~pipedrive_channels._target.Outcome`: the target says what reached Pipedrive.
    """

    def __init__(self, budget: Budget, failures_kept: int) -> None:
        self.budget = budget
        self.failures_kept = failures_kept
        self.started = time.monotonic()
        self.budget_at_start: BudgetStats = budget.stats()
        self.delivered_records = self.skipped = self.failed_records = 0
        self.taken = 0  # records the target's deliver returned for
        self.reported = 0  # records the target reported delivered or failed
        self.failures: list[Failure] = []
        self.stopped = False

    def delivered(self, records: int = 1) -> None:
        self.delivered_records += records
        self.reported += records

    def failed(self, message_id: str | None, reason: str, records: int = 1) -> None:
        self.reported += records
        self.fail(message_id, None, reason, records)

    def fail(self, message_id: str | None, line: int | None, reason: str, records: int = 1) -> None:
        self.failed_records += records
        if len(self.failures) < self.failures_kept:
            self.failures.append(Failure(message_id, line, reason))

    def progress(self) -> Progress:
        budget = self.budget.stats()
        return Progress(
            self.delivered_records,
            self.skipped,
            self.failed_records,
            budget.tokens_charged - self.budget_at_start.tokens_charged,
            budget.requests_admitted - self.budget_at_start.requests_admitted,
            time.monotonic() - self.started,
            budget.queue_length,
            max(0, self.taken - self.reported),  # an earlier run's held records, written now, are not ours
        )

    def report(self, counts: Mapping[str, int]) -> BackfillReport:
        now = self.progress()
        return BackfillReport(
            delivered=now.delivered,
            skipped=now.skipped,
            failed=now.failed,
            failures=tuple(self.failures),
            tokens_charged=now.tokens_charged,
            requests_sent=now.requests_sent,
            elapsed=now.elapsed,
            stopped=self.stopped,
            counts=dict(counts),
        )
