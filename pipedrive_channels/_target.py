"""Where a back-fill delivers: the contract between the pipeline and a target (Channels today, notes, ...).

The model, in plain words. A back-fill reads records in input order and hands each one to its target with
``deliver``, concurrently across records, one at a time per message id. ``deliver`` returns once the record is
safe: sent (the Channels target) or kept in the journal to be written later (the notes target, which coalesces
many records into one write). What a target holds it writes when it chooses (a group is complete, a linger
expired) and, at the latest, when the run calls ``flush`` at its end. Whether a record reached Pipedrive the
target says through the run's :class:`Outcome`: ``delivered`` when it did, ``failed`` when it cannot (a contact
that matches nobody, a 400); the run counts and reports both.

The run retries ``deliver`` and ``flush`` while they raise ``BudgetExhaustedError`` (a spent daily budget: the
budget then holds until it resets) and stops resumably at its deadline, so both must be idempotent: a record
delivered twice is one record. Any other error of a record (``ApiError``, ``TransportError``,
``ValidationError``) raised by ``deliver`` is that record's failure; the run goes on. Anything else ends the run.

A target keeps its state in the run's journal (:class:`~pipedrive_channels.Checkpoint`, via ``execute``, in
tables of its own), so that a re-run after a crash resumes it: the run passes it to ``attach`` before the first
record (``None`` when the run keeps no journal).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

from ._journal import Checkpoint
from .budget import Priority
from .models import Message

if TYPE_CHECKING:
    from .client import ChannelsClient
    from .notes import Contact

__all__ = ["Outcome", "Target"]


class Outcome(Protocol):
    """What a target reports to the run it delivers for (the run's tally implements it)."""

    def delivered(self, records: int = 1) -> None:
        """``records`` records reached Pipedrive."""

    def failed(self, message_id: str | None, reason: str, records: int = 1) -> None:
        """``records`` records of message ``message_id`` (or of no one message) will not reach it, and why."""


class Target(Protocol):
    """A place a back-fill delivers records to; see the module docstring for the model."""

    def attach(
        self, journal: Checkpoint | None, outcome: Outcome, *, priority: Priority, deadline: float | None
    ) -> None:
        """Called by a run before its first record: its journal, where to report, the priority of every call, and
        the ``time.monotonic()`` after which no call may wait (``None``: no deadline)."""

    async def deliver(self, client: ChannelsClient, message: Message, *, contact: Contact | None = None) -> None:
        """Take one record; return once it is sent or safely held."""

    async def flush(self, client: ChannelsClient | None = None) -> None:
        """Write everything held (the run's end, or a service shutting down), with ``client`` (a run passes its
        own: what a target holds may come from an earlier run, and a re-run that skips every record delivers
        nothing that would give the target a client)."""

    def estimate(self, records: Iterable[tuple[Message, Contact | None]]) -> tuple[int, int]:
        """``(requests, tokens)`` delivering ``records`` would take at most, read once (for ``--dry-run``)."""

    def counts(self) -> Mapping[str, int]:
        """What the target did beyond records (e.g. ``notes_created``), for the report; may be empty."""
