"""Rate budget: admit a call only when Pipedrive's limits allow it, and charge it its documented cost.

Pipedrive enforces two limits (https://pipedrive.readme.io/docs/core-api-concepts-rate-limiting):

- a burst limit per access token: at most ``N`` requests in any rolling 2-second window, as the server
  counts arrivals;
- a daily token budget per company: every operation costs its ``x-token-cost``, reset daily.

:class:`RateBudget` models both. The window is a log of request slots. A slot is taken at admission and
stays taken until ``window`` seconds after the answer arrived (:meth:`Reservation.settle`): the request reached
the server before its answer came back, so no two requests that share a slot can ever be in one server window.
The daily part is a :class:`TokenBucket` of cost: size ``tokens_per_day * daily_share`` (or ``daily_burst``),
initially full, refilled at ``tokens_per_day * daily_share`` per 24 h.

Waiting callers queue in two FIFO lanes (:class:`Priority`); one timer wakes the head of the queue when the
budget will admit it, so waiting costs no polling. Within a lane nobody overtakes: a waiting 10-cost call
is never passed by later 6-cost calls. Time is injected (``clock``), so every decision is a function of the
time it reads; the timers run on the event loop, whose clock must tick with ``clock`` (the default,
``time.monotonic``, is the loop's own).
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Protocol

import attrs

from ._rate_headers import MAX_SERVER_WAIT, RateHeaders
from .errors import BudgetExhaustedError, BudgetTimeoutError, ValidationError

__all__ = ["BudgetStats", "Plan", "Priority", "RateBudget", "Reservation", "TokenBucket"]

DAY = 86_400.0
"""Seconds in the daily budget's period."""

_BURST_PER_2S = {
    "oauth": (80, 160, 400, 480),
    "api_token": (20, 40, 100, 120),
}


class Plan(enum.Enum):
    """A Pipedrive plan; its value is the daily budget multiplier."""

    LITE = 1
    GROWTH = 2
    PREMIUM = 5
    ULTIMATE = 7


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


class _Policy(Protocol):
    def _delay(self, cost: float, now: float) -> tuple[float, bool]:
        """Seconds until ``cost`` can be admitted (0: now; inf: unknown), and whether the daily budget blocks."""

    def _charge(self, cost: float, now: float) -> None:
        """Take ``cost`` (the caller checked that the delay is 0)."""

    def _abandon(self, admitted_at: float) -> None:
        """An admitted caller was cancelled before it could use its admission (what was charged stays)."""


class _Waiter:
    __slots__ = ("cost", "deadline", "deadline_timer", "enqueued", "future", "lane")

    def __init__(self, cost: float, lane: int, enqueued: float, deadline: float | None, future: asyncio.Future[float]):
        self.cost = cost
        self.lane = lane
        self.enqueued = enqueued
        self.deadline = deadline
        self.future = future
        self.deadline_timer: asyncio.TimerHandle | None = None


class _Gate:
    """The waiting room: FIFO lanes and the one timer that wakes the head when the policy will admit it."""

    def __init__(self, policy: _Policy, clock: Callable[[], float], bulk_share: float) -> None:
        self._policy = policy
        self._clock = clock
        self._lanes: tuple[deque[_Waiter], deque[_Waiter]] = (deque(), deque())
        self._timer: asyncio.TimerHandle | None = None
        # Bulk's guaranteed share: every interactive admission while bulk waits earns bulk this much credit;
        # a full credit admits one bulk waiter ahead of the interactive lane.
        self._bulk_credit_step = bulk_share / (1.0 - bulk_share)
        self._bulk_credit = 0.0
        self.requests = 0
        self.total_wait = 0.0
        self.max_wait = 0.0

    def __len__(self) -> int:
        return len(self._lanes[0]) + len(self._lanes[1])

    async def admit(self, cost: float, lane: int, timeout: float | None) -> float:
        """Queue until ``cost`` is admitted in ``lane``; return the admission time.

        The slow path: callers first try to admit at once, with nobody waiting, without a coroutine.
        """
        now = self._clock()
        deadline = None if timeout is None else now + timeout
        if deadline is not None:
            ahead = sum(w.cost for w in self._lanes[0]) + (sum(w.cost for w in self._lanes[1]) if lane else 0.0)
            delay, daily = self._policy._delay(ahead + cost, now)
            if now + delay > deadline:  # fail now rather than sleep the futile time
                raise _refusal(now, delay, daily)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(cost, lane, now, deadline, loop.create_future())
        self._lanes[lane].append(waiter)
        if deadline is not None:
            waiter.deadline_timer = loop.call_later(deadline - now, self._expire, waiter)
        self.wake()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                self._policy._abandon(future.result())  # admitted just before the cancel: charged all the same
            else:
                self._remove(waiter)  # cancelled while waiting: it takes nothing
                self.wake()
            raise

    def wake(self) -> None:
        """Admit every waiter the policy allows now, then arm the timer for the next head."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = self._clock()
        while (waiter := self._head()) is not None:
            if waiter.future.done():  # cancelled; its task has not run its clean-up yet
                self._remove(waiter)
                continue
            delay, daily = self._policy._delay(waiter.cost, now)
            if delay > 0:
                if waiter.deadline is not None and now + delay > waiter.deadline:
                    self._remove(waiter)
                    waiter.future.set_exception(_refusal(now, delay, daily))
                    continue
                if delay < math.inf:  # inf: waiting for a settle or a header, which call wake() themselves
                    self._timer = asyncio.get_running_loop().call_later(delay, self.wake)
                return
            self._policy._charge(waiter.cost, now)
            self._remove(waiter)
            self._count_admission(waiter.lane)
            wait = now - waiter.enqueued
            self.requests += 1
            self.total_wait += wait
            self.max_wait = max(self.max_wait, wait)
            waiter.future.set_result(now)

    def _head(self) -> _Waiter | None:
        interactive, bulk = self._lanes
        if not bulk:
            return interactive[0] if interactive else None
        if not interactive or self._bulk_credit >= 1.0:
            return bulk[0]
        return interactive[0]

    def _count_admission(self, lane: int) -> None:
        if not self._lanes[Priority.BULK]:
            self._bulk_credit = 0.0  # no banking: credit only accrues while bulk is actually waiting
        elif lane == Priority.BULK:
            self._bulk_credit = max(0.0, self._bulk_credit - 1.0)
        else:
            self._bulk_credit += self._bulk_credit_step

    def _remove(self, waiter: _Waiter) -> None:
        lane = self._lanes[waiter.lane]
        if lane and lane[0] is waiter:
            lane.popleft()
        elif waiter in lane:
            lane.remove(waiter)
        if waiter.deadline_timer is not None:
            waiter.deadline_timer.cancel()

    def _expire(self, waiter: _Waiter) -> None:
        if waiter.future.done():
            return
        now = self._clock()
        self._remove(waiter)
        delay, daily = self._policy._delay(waiter.cost, now)
        waiter.future.set_exception(_refusal(now, max(delay, 0.0), daily))
        self.wake()


def _refusal(now: float, delay: float, daily: bool) -> Exception:
    if daily:
        retry_at = now + delay if delay < math.inf else None
        return BudgetExhaustedError(
            "the token budget is spent", retry_at=retry_at, retry_after=None if retry_at is None else delay
        )
    return BudgetTimeoutError("the rate budget cannot admit the call before its deadline")


def _check_timeout(timeout: float | None) -> float | None:
    """A wait's limit in seconds: ``None`` or ``inf`` for none; NaN or a negative number is refused."""
    if timeout is None or timeout == math.inf:
        return None
    if not timeout >= 0:  # NaN fails it too
        raise ValidationError("timeout", f"must be a number of seconds >= 0 (or None), got {timeout!r}")
    return timeout


def _check_cost(cost: float, capacity: float) -> None:
    # One chained comparison on the hot path; NaN fails it too. A non-number raises TypeError here.
    if not 0 <= cost <= capacity:
        if not cost >= 0:
            raise ValueError(f"cost must be a non-negative number, got {cost!r}")
        raise ValueError(f"cost {cost} exceeds the capacity {capacity}: it could never be admitted")


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
        self._gate = _Gate(self, clock, bulk_share=0.0)

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
        _check_cost(cost, self.capacity)
        if timeout is not None:
            timeout = _check_timeout(timeout)
        if not self._admit_now(cost):
            await self._gate.admit(cost, 0, timeout)

    def try_acquire(self, cost: float) -> bool:
        """Take ``cost`` tokens if they are available now and nobody waits; never waits."""
        _check_cost(cost, self.capacity)
        return self._admit_now(cost)

    def _admit_now(self, cost: float) -> bool:
        if self._gate._lanes[0] or not self._take_now(cost, self._clock()):
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
        if isinstance(requests_per_window, bool) or not isinstance(requests_per_window, int) or requests_per_window < 1:
            raise ValueError(f"requests_per_window must be a positive int, got {requests_per_window!r}")
        if not window > 0:
            raise ValueError(f"window must be > 0, got {window!r}")
        if not 0 < daily_share <= 1:
            raise ValueError(f"daily_share must be in (0, 1], got {daily_share!r}")
        if not 0 <= bulk_share < 1:
            raise ValueError(f"bulk_share must be in [0, 1), got {bulk_share!r}")
        self.requests_per_window = requests_per_window
        self.window = float(window)
        self._clock = clock
        self._daily: TokenBucket | None = None
        if tokens_per_day is not None:
            if not tokens_per_day > 0 or (daily_burst is not None and not daily_burst > 0):
                raise ValueError("tokens_per_day and daily_burst must be > 0")
            share = tokens_per_day * daily_share
            self._daily = TokenBucket(min(share, daily_burst or share), share / DAY, clock=clock)
        self._capacity = self._daily.capacity if self._daily else math.inf
        self._unlimited = False
        self._slot_ends: deque[float] = deque()  # when settled slots free up, ascending
        self._in_flight = 0  # admitted, not yet settled: taken until they settle
        self._dropped: list[float] = []  # admission times of reservations dropped unsettled
        self._hold_until = -math.inf
        self._tokens_charged = 0.0
        self._gate = _Gate(self, clock, bulk_share)
        self.search: RateBudget | None = None
        """The search operations' window (a budget of its own, cost unmetered), or None."""
        if search_requests_per_window is not None:
            self.search = RateBudget(
                requests_per_window=search_requests_per_window, window=window, bulk_share=bulk_share,
                search_requests_per_window=None, clock=clock,
            )

    @classmethod
    def for_plan(cls, plan: Plan, seats: int, auth: str = "oauth", daily_share: float = 1.0) -> RateBudget:
        """The limits of a plan: burst per access token (``auth`` "oauth" or "api_token") and the daily budget."""
        if auth not in _BURST_PER_2S:
            raise ValueError(f"auth must be 'oauth' or 'api_token', got {auth!r}")
        if not isinstance(seats, int) or seats < 1:
            raise ValueError(f"seats must be a positive int, got {seats!r}")
        burst = _BURST_PER_2S[auth][list(Plan).index(plan)]
        return cls(requests_per_window=burst, tokens_per_day=30_000 * plan.value * seats, daily_share=daily_share)

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
        self, cost: float, *, priority: Priority = Priority.INTERACTIVE, timeout: float | None = None
    ) -> Reservation:
        """Wait until one request costing ``cost`` may be sent, and charge it.

        :param priority: the lane to wait in.
        :param timeout: the most seconds to wait (``None`` or ``inf``: no limit); a call that cannot be admitted by
            then fails at once.
        :raises BudgetExhaustedError: the daily budget blocks it past the deadline (carries ``retry_at``).
        :raises BudgetTimeoutError: the window or a server-imposed pause blocks it past the deadline.
        :raises ValidationError: ``timeout`` is negative or NaN.
        :raises ValueError: ``cost`` exceeds the daily capacity, so it could never be admitted.
        """
        if timeout is not None:
            timeout = _check_timeout(timeout)
        if self._unlimited:
            if self._clock() < self._hold_until:
                await self._wait_out_hold(timeout)
            self._tokens_charged += cost
            self._gate.requests += 1
            return _UNLIMITED_RESERVATION
        _check_cost(cost, self._capacity)
        admitted = self._admit_now(cost)  # the common case, without a second coroutine
        if admitted is None:
            admitted = await self._gate.admit(cost, Priority(priority), timeout)
        return Reservation(self, admitted, cost)

    def try_acquire(self, cost: float) -> Reservation | None:
        """Admit and charge a request only if that is possible now with nobody waiting; never waits."""
        if self._unlimited:
            if self._clock() < self._hold_until:
                return None
            self._tokens_charged += cost
            self._gate.requests += 1
            return _UNLIMITED_RESERVATION
        _check_cost(cost, self._capacity)
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
        """Seconds this budget needs to admit ``requests`` costing ``tokens`` in all, starting full.

        The window admits ``requests_per_window`` per ``window``; the daily bucket, once its capacity is spent,
        refills at its rate. Answer latency is not counted (each slot cycle takes a little longer).
        """
        if self._unlimited or requests <= 0:
            return 0.0
        window_time = max(0, requests - self.requests_per_window) * self.window / self.requests_per_window
        daily_time = 0.0
        if self._daily is not None and tokens > self._daily.capacity:
            daily_time = (tokens - self._daily.capacity) / self._daily.refill_per_second
        return max(window_time, daily_time)

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
        lanes = self._gate._lanes
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
        lanes = self._gate._lanes
        if lanes[0] or lanes[1]:
            self._gate.wake()

    def _abandon(self, admitted_at: float) -> None:
        self._dropped.append(admitted_at)

    def _reschedule(self) -> None:
        lanes = self._gate._lanes
        if lanes[0] or lanes[1]:
            self._gate.wake()

