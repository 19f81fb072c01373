"""The rate budget of one process: Pipedrive's burst window and daily token budget, enforced before each request.

:class:`RateBudget` models both limits (the model: :mod:`pipedrive_channels.budget._contract`). The window is a log
of request slots. A slot is taken at admission and stays taken until ``window`` seconds after the answer arrived
(:meth:`Reservation.settle`). The daily part is a :class:`TokenBucket` of cost: size ``tokens_per_day *
daily_share`` (or ``daily_burst``), initially full, refilled at ``tokens_per_day * daily_share`` per 24 h.

Waiting callers queue in the shared gate; one timer wakes the head of the queue when the budget will admit it, so
waiting costs no polling. Time is injected (``clock``), so every decision is a function of the time it reads; the
timers run on the event loop, whose clock must tick with ``clock`` (the default, ``time.monotonic``, is the loop's
own).
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import math
import time
from collections import deque
from collections.abc import Callable, Mapping

import attrs

from ..errors import BudgetTimeoutError
from ._contract import Admission, BudgetStats, Priority
from ._gate import Gate, check_cost, check_timeout
from ._limits import DAY, Limits, Plan
from ._rate_headers import MAX_SERVER_WAIT, RateHeaders
from ._search import with_search_slot

__all__ = ["RateBudget", "Reservation", "TokenBucket"]


class TokenBucket:
    """A token bucket of size ``capacity``, initially full, refilled at ``refill_per_second``, charged by cost.

    ``await bucket.acquire(cost)`` waits (FIFO) until ``cost`` tokens are there and takes them;
    ``bucket.try_acquire(cost)`` takes them only if they are there now. A cost above the capacity could never be
    admitted and raises ``ValueError`` at once.
    """

    def __init__(self, capacity: float, refill_per_second: float, *, clock: Callable[[], float] = time.monotonic):
        if not capacity > 0 or not refill_per_second >= 0:
            raise ValueError("capacity must be > 0 and refill_per_second >= 0")
        self.capacity = float(capacity)
        self.refill_per_second = float(refill_per_second)
        self._clock = clock
        self._tokens = self.capacity
        self._updated = clock()
        self._gate = Gate(self, clock, bulk_share=0.0)

    def __repr__(self) -> str:
        return f"TokenBucket(capacity={self.capacity}, refill_per_second={self.refill_per_second})"

    @property
    def tokens(self) -> float:
        """Tokens available now."""
        self._refill(self._clock())
        return self._tokens

    async def acquire(self, cost: float, *, timeout: float | None = None) -> None:
        """Wait until ``cost`` tokens are available and take them (FIFO with other waiters).

        :param timeout: the most seconds to wait (``None`` or ``inf``: no limit).
        :raises BudgetExhaustedError: they cannot be available within ``timeout`` seconds (nothing is taken).
        :raises ValidationError: ``timeout`` is negative or NaN.
        """
        check_cost(cost, self.capacity)
        if timeout is not None:
            timeout = check_timeout(timeout)
        if not self._admit_now(cost):
            await self._gate.admit(cost, 0, timeout)

    def try_acquire(self, cost: float) -> bool:
        """Take ``cost`` tokens if they are available now and nobody waits; never waits."""
        check_cost(cost, self.capacity)
        return self._admit_now(cost)

    def _admit_now(self, cost: float) -> bool:
        if self._gate.lanes[0] or not self._take_now(cost, self._clock()):
            return False
        self._gate.requests += 1
        return True

    def lower_to(self, tokens: float) -> None:
        """Lower the available tokens to ``tokens`` (e.g. what the server says is left); never raises them."""
        self._refill(self._clock())
        self._tokens = min(self._tokens, max(0.0, tokens))

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.refill_per_second)
            self._updated = now

    def _take_now(self, cost: float, now: float) -> bool:
        """Take ``cost`` if it is there at ``now``: the hot path's whole check, in one call (refill inlined)."""
        tokens = self._tokens
        if now > self._updated:
            tokens = min(self.capacity, tokens + (now - self._updated) * self.refill_per_second)
            self._updated = now
        if tokens < cost:
            self._tokens = tokens
            return False
        self._tokens = tokens - cost
        return True

    def _delay(self, cost: float, now: float) -> tuple[float, bool]:
        self._refill(now)
        missing = cost - self._tokens
        if missing <= 0:
            return 0.0, True
        return (missing / self.refill_per_second if self.refill_per_second else math.inf), True

    def _charge(self, cost: float, now: float) -> None:
        self._tokens -= cost

    def _abandon(self, admitted_at: float) -> None:
        pass  # the tokens were taken: a bucket does not give back what it admitted


class Reservation:
    """One admitted request's slot in the window. Call :meth:`settle` when its answer arrives.

    Until then the slot counts as taken; after, it frees ``window`` seconds later. A reservation dropped
    unsettled settles as of its admission (a plain sliding-window slot), so ignoring it never leaks a slot.
    """

    __slots__ = ("_budget", "admitted_at", "cost", "settled")

    def __init__(self, budget: RateBudget | None, admitted_at: float, cost: float) -> None:
        self._budget = budget
        self.admitted_at = admitted_at
        self.cost = cost
        self.settled = budget is None

    def settle(self, headers: Mapping[str, str] | None = None) -> None:
        """The answer arrived: free the slot ``window`` seconds from now, and sync with its rate headers."""
        if self._budget is None:
            return
        if not self.settled:
            self.settled = True
            self._budget._settle()
        if headers:
            self._budget.observe(headers)

    def refund(self) -> None:
        """Nothing was sent after all: free the slot at once and give the cost back, as if never admitted.

        A reservation already settled, or whose budget cannot give back (unlimited, shared), settles instead.
        """
        budget = self._budget
        if budget is None or self.settled:
            self.settle()
            return
        self.settled = True
        budget._in_flight -= 1
        budget._tokens_charged -= self.cost
        budget._gate.requests -= 1
        if budget._daily is not None:
            daily = budget._daily
            daily._refill(budget._clock())
            daily._tokens = min(daily.capacity, daily._tokens + self.cost)
        budget._reschedule()

    def __del__(self) -> None:
        if not self.settled and self._budget is not None:
            # Only a list append here: a finaliser may run in the middle of the budget's own bookkeeping.
            self._budget._dropped.append(self.admitted_at)


_UNLIMITED_RESERVATION = Reservation(None, 0.0, 0.0)


class _SearchReservation(Reservation):
    """A search request's reservation: it holds a slot of the search window too, settled or refunded alongside."""

    __slots__ = ("_search",)

    def __init__(self, budget: RateBudget, admitted_at: float, cost: float, search: Admission) -> None:
        super().__init__(budget, admitted_at, cost)
        self._search = search

    def settle(self, headers: Mapping[str, str] | None = None) -> None:
        super().settle(headers)
        self._search.settle()

    def refund(self) -> None:
        super().refund()
        self._search.refund()


class RateBudget:
    """Pipedrive's burst window and daily token budget, enforced before each request is sent.

    :param requests_per_window: requests allowed in any rolling ``window`` (80 per 2 s for OAuth on Lite).
    :param window: the window's length in seconds.
    :param tokens_per_day: the company's daily token budget, or ``None`` to leave cost unmetered.
    :param daily_share: the part of the daily budget this budget may spend (0 < share <= 1).
    :param daily_burst: the most tokens spendable at once; smaller than the daily share, it paces a long job
        evenly over the day instead of spending the company's budget in the morning.
    :param bulk_share: the least share of admissions ``Priority.BULK`` gets while interactive calls also wait.
    :param search_requests_per_window: search operations' own burst limit on every plan (10 per 2 s), applied on
        top of the general window through :attr:`search`; ``None`` for none.
    :param clock: seconds, monotonic; the event loop's timers must tick with it.
    """

    def __init__(
        self,
        *,
        requests_per_window: int,
        window: float = 2.0,
        tokens_per_day: float | None = None,
        daily_share: float = 1.0,
        daily_burst: float | None = None,
        bulk_share: float = 0.2,
        search_requests_per_window: int | None = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits = Limits(
            requests_per_window, window, tokens_per_day, daily_share, daily_burst, search_requests_per_window
        )
        """The limits this budget enforces."""
        self.requests_per_window = requests_per_window
        self.window = limits.window
        self._clock = clock
        self._daily: TokenBucket | None = None
        if limits.daily_tokens is not None and limits.daily_capacity is not None:
            self._daily = TokenBucket(limits.daily_capacity, limits.daily_tokens / DAY, clock=clock)
        self._capacity = self._daily.capacity if self._daily else math.inf
        self._unlimited = False
        self._slot_ends: deque[float] = deque()  # when settled slots free up, ascending
        self._in_flight = 0  # admitted, not yet settled: taken until they settle
        self._dropped: list[float] = []  # admission times of reservations dropped unsettled
        self._hold_until = -math.inf
        self._tokens_charged = 0.0
        self._gate = Gate(self, clock, bulk_share)
        self.search: RateBudget | None = None
        """The search operations' window (a budget of its own, cost unmetered), or None."""
        if search_requests_per_window is not None:
            self.search = RateBudget(
                requests_per_window=search_requests_per_window, window=window, bulk_share=bulk_share,
                search_requests_per_window=None, clock=clock,
            )

    @classmethod
    def for_plan(cls, plan: Plan, seats: int, auth: str = "oauth", daily_share: float = 1.0) -> RateBudget:
        """The limits of a plan (:meth:`Limits.for_plan`): burst per access token (``auth`` "oauth" or
        "api_token") and the daily budget."""
        return cls(**attrs.asdict(Limits.for_plan(plan, seats, auth, daily_share)))

    @classmethod
    def unlimited(cls) -> RateBudget:
        """A budget that admits everything at once (for tests and benchmarks; it still counts).

        It models no limit, so it ignores the rate headers, but it obeys :meth:`hold`: the retry policy's relay of
        the server's own word (a 429's or 503's ``Retry-After``, a spent daily budget), so nobody hammers.
        """
        budget = cls(requests_per_window=1, search_requests_per_window=None)
        budget._unlimited = True
        return budget

    def __repr__(self) -> str:
        if self._unlimited:
            return "RateBudget.unlimited()"
        daily = f", daily_capacity={self._daily.capacity:g}" if self._daily else ""
        return f"RateBudget(requests_per_window={self.requests_per_window}, window={self.window:g}{daily})"

    async def acquire(
        self,
        cost: float,
        *,
        priority: Priority = Priority.INTERACTIVE,
        timeout: float | None = None,
        search: bool = False,
    ) -> Reservation:
        """Wait until one request costing ``cost`` may be sent, and charge it.

        :param priority: the lane to wait in.
        :param search: it is a search operation: it takes a slot of the search window (:attr:`search`) too, first,
            within the same ``timeout``; settling or refunding the reservation does the same to that slot.
        :param timeout: the most seconds to wait (``None`` or ``inf``: no limit); a call that cannot be admitted by
            then fails at once.
        :raises BudgetExhaustedError: the daily budget blocks it past the deadline (carries ``retry_at``).
        :raises BudgetTimeoutError: the window or a server-imposed pause blocks it past the deadline.
        :raises ValidationError: ``timeout`` is negative or NaN.
        :raises ValueError: ``cost`` exceeds the daily capacity, so it could never be admitted.
        """
        if timeout is not None:
            timeout = check_timeout(timeout)
        if self._unlimited:
            if self._clock() < self._hold_until:
                await self._wait_out_hold(timeout)
            self._tokens_charged += cost
            self._gate.requests += 1
            return _UNLIMITED_RESERVATION
        if not 0 <= cost <= self._capacity:  # inline: a call fewer on the hot path; check_cost says what is wrong
            check_cost(cost, self._capacity)
        if search and self.search is not None:
            admit = functools.partial(self._admit, cost, priority)
            at, slot = await with_search_slot(self.search, admit, priority, timeout, self._clock)
            return _SearchReservation(self, at, cost, slot)
        admitted = self._admit_now(cost)  # the common case, without a second coroutine
        if admitted is None:
            admitted = await self._gate.admit(cost, Priority(priority), timeout)
        return Reservation(self, admitted, cost)

    async def _admit(self, cost: float, priority: Priority, timeout: float | None) -> float:
        admitted = self._admit_now(cost)
        return await self._gate.admit(cost, Priority(priority), timeout) if admitted is None else admitted

    def try_acquire(self, cost: float) -> Reservation | None:
        """Admit and charge a request only if that is possible now with nobody waiting; never waits."""
        if self._unlimited:
            if self._clock() < self._hold_until:
                return None
            self._tokens_charged += cost
            self._gate.requests += 1
            return _UNLIMITED_RESERVATION
        check_cost(cost, self._capacity)
        admitted = self._admit_now(cost)
        return None if admitted is None else Reservation(self, admitted, cost)

    def hold(self, seconds: float) -> None:
        """Admit nothing for ``seconds``, at most a day (the server said the window is spent, or to retry later).

        Holds only lengthen; zero, a negative number or NaN holds nothing.
        """
        if seconds > 0:
            self._hold_until = max(self._hold_until, self._clock() + min(seconds, MAX_SERVER_WAIT))
            self._reschedule()

    def observe(self, headers: Mapping[str, str]) -> None:
        """Sync with an answer's rate headers (any may be missing or unusable: see ``RateHeaders``).

        ``x-ratelimit-remaining: 0`` holds every waiter for ``x-ratelimit-reset`` seconds (a few windows at most;
        one window when the reset is missing), as other processes may share the token; a lower
        ``x-daily-ratelimit-token-remaining`` lowers the daily bucket. A remaining count above zero is not acted on:
        it was counted when the server answered, and slots freed since then would make it look lower than it is,
        throttling a lone process for nothing.
        """
        if self._unlimited:
            return
        rate = RateHeaders.from_http(headers)
        if rate.window_spent:
            hold = self.window if rate.reset is None else rate.reset  # "0.000" is a real answer, not a missing one
            self._hold_until = max(self._hold_until, self._clock() + hold)
        if rate.daily_remaining is not None and self._daily is not None:
            self._daily.lower_to(rate.daily_remaining)
        self._reschedule()

    def time_for(self, requests: int, tokens: float) -> float:
        """Seconds this budget needs to admit ``requests`` costing ``tokens`` in all, starting full
        (:meth:`Limits.time_for`; 0 for an unlimited budget)."""
        return 0.0 if self._unlimited else self.limits.time_for(requests, tokens)

    def stats(self) -> BudgetStats:
        """Tokens charged, requests admitted, total and longest wait, and how many wait now."""
        gate = self._gate
        return BudgetStats(self._tokens_charged, gate.requests, gate.total_wait, gate.max_wait, len(gate))

    async def _wait_out_hold(self, timeout: float | None) -> None:
        """An unlimited budget's only wait: until the hold ends (it may lengthen meanwhile), or refuse at once."""
        started = now = self._clock()
        while now < self._hold_until:
            if timeout is not None and self._hold_until > started + timeout:
                raise BudgetTimeoutError("a server-imposed pause holds the budget past the call's deadline")
            await asyncio.sleep(self._hold_until - now)
            now = self._clock()
        gate = self._gate
        gate.total_wait += now - started
        gate.max_wait = max(gate.max_wait, now - started)

    def _admit_now(self, cost: float) -> float | None:
        """Admit and charge at once if nobody waits and both limits allow it; return the admission time."""
        lanes = self._gate.lanes
        if lanes[0] or lanes[1]:
            return None  # never overtake a waiter
        now = self._clock()
        if now < self._hold_until or self._free(now) < 1:
            return None
        if self._daily is not None and not self._daily._take_now(cost, now):
            return None
        self._in_flight += 1
        self._tokens_charged += cost
        self._gate.requests += 1
        return now

    # -- the policy the gate asks --------------------------------------------------------------------------

    def _delay(self, cost: float, now: float) -> tuple[float, bool]:
        delay = self._hold_until - now
        free = self._free(now)
        if free < 1:
            # The (1 - free)-th settled slot to free up admits us; past the settled ones, only a settle can.
            index = int(1 - free) - 1
            delay = max(delay, self._slot_ends[index] - now if index < len(self._slot_ends) else math.inf)
        if self._daily is not None:
            daily_delay, _ = self._daily._delay(cost, now)
            if daily_delay > 0 and daily_delay >= delay:
                return daily_delay, True
        return max(delay, 0.0), False

    def _charge(self, cost: float, now: float) -> None:
        if self._daily is not None:
            self._daily._charge(cost, now)
        self._in_flight += 1
        self._tokens_charged += cost

    def _free(self, now: float) -> float:
        ends = self._slot_ends
        if self._dropped:
            dropped, self._dropped = self._dropped, []
            for admitted_at in dropped:
                self._in_flight -= 1
                bisect.insort(ends, admitted_at + self.window)
        while ends and ends[0] <= now:
            ends.popleft()
        return self.requests_per_window - self._in_flight - len(ends)

    def _settle(self) -> None:
        self._in_flight -= 1
        # now + window is never earlier than any slot end already there, so the deque stays sorted.
        self._slot_ends.append(self._clock() + self.window)
        lanes = self._gate.lanes
        if lanes[0] or lanes[1]:
            self._gate.wake()

    def _abandon(self, admitted_at: float) -> None:
        self._dropped.append(admitted_at)

    def _reschedule(self) -> None:
        lanes = self._gate.lanes
        if lanes[0] or lanes[1]:
            self._gate.wake()

