"""The Channels target: each record sent with ``receive_message`` as it comes (the back-fill's default).

Pipedrive removed the Channels API on 2026-02-01; the target stays for the accounts and fakes that still answer
it, and as the back-fill's behaviour when no other target is given.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from .._journal import Checkpoint
from .._target import Outcome
from .._wire import RECEIVE_MESSAGE
from ..budget import Priority
from ..models import Message

if TYPE_CHECKING:
    from ..client import ChannelsClient
    from ..notes import Contact

__all__ = ["ChannelsTarget"]


class _NoOutcome:
    """Where a target reports before a run attached it: nowhere."""

    def delivered(self, records: int = 1) -> None:
        pass

    def failed(self, message_id: str | None, reason: str, records: int = 1) -> None:
        pass


class ChannelsTarget:
    """Delivers each record with ``client.receive_message``: sent when ``deliver`` returns, nothing held.

    Idempotent as the contract asks: receive is idempotent on the message ``id``, and a status update is the same
    ``id`` sent again. The journal is not used (the run journals each record it delivers); the contact is ignored.
    """

    def __init__(self) -> None:
        self._outcome: Outcome = _NoOutcome()
        self._priority = Priority.BULK
        self._deadline: float | None = None

    def attach(
        self, journal: Checkpoint | None, outcome: Outcome, *, priority: Priority, deadline: float | None
    ) -> None:
        """Keep where to report, the calls' priority and the run's deadline (``time.monotonic()``)."""
        self._outcome, self._priority, self._deadline = outcome, priority, deadline

    async def deliver(self, client: ChannelsClient, message: Message, *, contact: Contact | None = None) -> None:
        """Send ``message``, waiting for the budget no later than the deadline."""
        deadline = self._deadline
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        await client.receive_message(message, priority=self._priority, timeout=timeout)
        self._outcome.delivered(1)

    async def flush(self, client: ChannelsClient | None = None) -> None:
        """Nothing is held."""

    def estimate(self, records: Iterable[tuple[Message, Contact | None]]) -> tuple[int, int]:
        """One receive per record, at the cost the client is charged."""
        count = sum(1 for _ in records)
        return count, count * RECEIVE_MESSAGE.cost

    def counts(self) -> Mapping[str, int]:
        """Nothing beyond records."""
        return {}
