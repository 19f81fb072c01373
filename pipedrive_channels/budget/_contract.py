"""The budget contract: what the client, the retry policy and the back-fill ask of a rate budget.

The model. A budget stands between the callers and Pipedrive's two limits: a burst window (at most ``N`` requests
in any rolling ``window`` seconds, as the server counts arrivals) and a daily budget of tokens (every operation
costs its documented ``x-token-cost``). :meth:`Budget.acquire` waits until one request of a given cost may be
sent, charges it, and returns an :class:`Admission`; the caller then sends the request and settles the admission
with the answer's headers. A request takes a slot of the window from its admission; the slot frees ``window``
seconds after its answer arrived (the server saw the request before it answered, so no two requests that share a
slot are ever in one server window). An admission never settled frees its slot by itself (a window after its
admission locally, ``window + max_in_flight`` on Redis), so dropping one never leaks a slot. An admission whose
request was never sent is refunded: its slot and its cost come back.

Waiting callers queue in two lanes, :attr:`Priority.INTERACTIVE` before :attr:`Priority.BULK`, each first in, first
out: a waiting call is never overtaken by a later, cheaper one in its lane, and bulk still gets its guaranteed
share of admissions while interactive calls wait too. A call that cannot be admitted before its ``timeout`` fails
at once (it does not sleep the futile time) and is charged nothing; a cancelled one takes nothing either.

The server's word comes in through :meth:`Budget.observe` (every answer's rate headers) and :meth:`Budget.hold`
(a 429's or 503's wait, relayed by the retry policy): they can only slow admissions down, never speed them up.
``search=True`` also takes a slot of the search operations' own window, within the same admission.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Protocol

import attrs

__all__ = ["Admission", "Budget", "BudgetStats", "Priority"]


class Priority(enum.IntEnum):
    """Admission lane: interactive calls (a bot's live reply) go before bulk ones (a back-fill)."""

    INTERACTIVE = 0
    BULK = 1


@attrs.frozen
class BudgetStats:
    """What a budget has admitted so far; waits are in seconds of the budget's clock."""

    tokens_charged: float
    requests_admitted: int
    total_wait: float
    max_wait: float
    queue_length: int


class Admission(Protocol):
    """One admitted request: settle it when its answer arrives, or refund it if it was never sent."""

    def settle(self, headers: Mapping[str, str] | None = None) -> None:
        """The answer arrived: free the slot ``window`` seconds from now, and sync with its rate headers."""

    def refund(self) -> None:
        """Nothing was sent after all: give the slot and the cost back where the budget can (else settle)."""


class Budget(Protocol):
    """A rate budget: :class:`~pipedrive_channels.budget.RateBudget` (one process) or
    :class:`~pipedrive_channels.budget.RedisBudget` (every process sharing a Redis key)."""

    async def acquire(
        self,
        cost: float,
        *,
        priority: Priority = Priority.INTERACTIVE,
        timeout: float | None = None,
        search: bool = False,
    ) -> Admission:
        """Wait until one request costing ``cost`` may be sent (and, with ``search``, a search slot too); charge it.

        :raises BudgetExhaustedError: the daily budget blocks it past ``timeout`` (carries ``retry_at``).
        :raises BudgetTimeoutError: the window or a server-imposed pause blocks it past ``timeout``.
        """
        ...

    def hold(self, seconds: float) -> None:
        """Admit nothing for ``seconds`` (at most a day); holds only lengthen."""

    def observe(self, headers: Mapping[str, str]) -> None:
        """Sync with an answer's rate headers (``x-ratelimit-*``, ``x-daily-ratelimit-token-remaining``)."""

    def stats(self) -> BudgetStats:
        """Tokens charged, requests admitted, total and longest wait, and how many wait now."""
        ...

    def time_for(self, requests: int, tokens: float) -> float:
        """Seconds the budget needs to admit ``requests`` costing ``tokens`` in all, starting full."""
        ...
