"""The waiting room both budgets share: two FIFO lanes, bulk's guaranteed share, deadlines and the wait statistics.

A budget whose check is local arithmetic (:class:`~pipedrive_channels.budget.RateBudget`) gives the gate its policy:
the gate asks it when the head of the queue can be admitted, admits it then with one timer, and fails a waiter whose
deadline the policy says it cannot meet. A budget whose check is a round trip (the Redis budget) has no answer to
give synchronously: its waiters take turns instead (:meth:`Gate.join`, :meth:`Gate.turn`, :meth:`Gate.admitted`),
and only the head of the queue asks. The order is the same either way.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from typing import Protocol

from ..errors import BudgetExhaustedError, BudgetTimeoutError, ValidationError
from ._contract import Priority


class Policy(Protocol):
    def _delay(self, cost: float, now: float) -> tuple[float, bool]:
        """Seconds until ``cost`` can be admitted (0: now; inf: unknown), and whether the daily budget blocks."""

    def _charge(self, cost: float, now: float) -> None:
        """Take ``cost`` (the caller checked that the delay is 0)."""

    def _abandon(self, admitted_at: float) -> None:
        """An admitted caller was cancelled before it could use its admission (what was charged stays)."""


class Waiter:
    """One queued caller. ``future`` gets the admission time (with a policy) or the time its turn came."""

    __slots__ = ("cost", "deadline", "deadline_timer", "enqueued", "future", "lane")

    def __init__(self, cost: float, lane: int, enqueued: float, deadline: float | None, future: asyncio.Future[float]):
        self.cost = cost
        self.lane = lane
        self.enqueued = enqueued
        self.deadline = deadline
        self.future = future
        self.deadline_timer: asyncio.TimerHandle | None = None


class Gate:
    """The waiting room: FIFO lanes, bulk's share, and (with a policy) the one timer that wakes the head."""

    def __init__(self, policy: Policy | None, clock: Callable[[], float], bulk_share: float) -> None:
        if not 0 <= bulk_share < 1:
            raise ValueError(f"bulk_share must be in [0, 1), got {bulk_share!r}")
        self._policy = policy
        self._clock = clock
        self.lanes: tuple[deque[Waiter], deque[Waiter]] = (deque(), deque())
        self._timer: asyncio.TimerHandle | None = None
        # Bulk's guaranteed share: every interactive admission while bulk waits earns bulk this much credit;
        # a full credit admits one bulk waiter ahead of the interactive lane.
        self._bulk_credit_step = bulk_share / (1.0 - bulk_share)
        self._bulk_credit = 0.0
        self.requests = 0
        self.total_wait = 0.0
        self.max_wait = 0.0

    def __len__(self) -> int:
        return len(self.lanes[0]) + len(self.lanes[1])

    # -- with a policy: the gate admits --------------------------------------------------------------------

    async def admit(self, cost: float, lane: int, timeout: float | None) -> float:
        """Queue until ``cost`` is admitted in ``lane``; return the admission time.

        The slow path: callers first try to admit at once, with nobody waiting, without a coroutine.
        """
        policy = self._policy
        assert policy is not None
        now = self._clock()
        deadline = None if timeout is None else now + timeout
        if deadline is not None:
            ahead = sum(w.cost for w in self.lanes[0]) + (sum(w.cost for w in self.lanes[1]) if lane else 0.0)
            delay, daily = policy._delay(ahead + cost, now)
            if now + delay > deadline:  # fail now rather than sleep the futile time
                raise refusal(now, delay, daily)
        loop = asyncio.get_running_loop()
        waiter = Waiter(cost, lane, now, deadline, loop.create_future())
        self.lanes[lane].append(waiter)
        if deadline is not None:
            waiter.deadline_timer = loop.call_later(deadline - now, self._expire, waiter)
        self.wake()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                policy._abandon(future.result())  # admitted just before the cancel: charged all the same
            else:
                self._remove(waiter)  # cancelled while waiting: it takes nothing
                self.wake()
            raise

    def wake(self) -> None:
        """Admit every waiter the policy allows now, then arm the timer for the next head."""
        policy = self._policy
        assert policy is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = self._clock()
        while (waiter := self._head()) is not None:
            if waiter.future.done():  # cancelled; its task has not run its clean-up yet
                self._remove(waiter)
                continue
            delay, daily = policy._delay(waiter.cost, now)
            if delay > 0:
                if waiter.deadline is not None and now + delay > waiter.deadline:
                    self._remove(waiter)
                    waiter.future.set_exception(refusal(now, delay, daily))
                    continue
                if delay < math.inf:  # inf: waiting for a settle or a header, which call wake() themselves
                    self._timer = asyncio.get_running_loop().call_later(delay, self.wake)
                return
            policy._charge(waiter.cost, now)
            self._admitted(waiter, now)
            waiter.future.set_result(now)

    def _expire(self, waiter: Waiter) -> None:
        policy = self._policy
        assert policy is not None  # only admit() arms deadline timers
        if waiter.future.done():
            return
        now = self._clock()
        self._remove(waiter)
        delay, daily = policy._delay(waiter.cost, now)
        waiter.future.set_exception(refusal(now, max(delay, 0.0), daily))
        self.wake()

    # -- without one: the head of the queue asks for itself ------------------------------------------------

    def join(self, cost: float, lane: int) -> Waiter:
        """Queue a caller in ``lane``; it asks for admission when :meth:`turn` says it heads the queue."""
        waiter = Waiter(cost, lane, self._clock(), None, asyncio.get_running_loop().create_future())
        self.lanes[lane].append(waiter)
        self._pass_turn()
        return waiter

    async def turn(self, waiter: Waiter, deadline: float | None) -> None:
        """Wait until ``waiter`` heads the queue (it may lose its turn to a later interactive or bulk's share).

        :param deadline: loop time; past it, :class:`BudgetTimeoutError`.
        """
        loop = asyncio.get_running_loop()
        while self._head() is not waiter:
            if waiter.future.done():
                waiter.future = loop.create_future()
            delay = None if deadline is None else deadline - loop.time()
            if delay is not None and delay <= 0:
                raise BudgetTimeoutError("the rate budget cannot admit the call before its deadline")
            await asyncio.wait({waiter.future}, timeout=delay)

    def admitted(self, waiter: Waiter) -> None:
        """``waiter`` was admitted: count it and pass the turn on."""
        self._admitted(waiter, self._clock())
        self._pass_turn()

    def leave(self, waiter: Waiter) -> None:
        """``waiter`` stops waiting (admitted, refused or cancelled): pass the turn on if it had it."""
        self._remove(waiter)
        self._pass_turn()

    def _pass_turn(self) -> None:
        head = self._head()
        if head is not None and not head.future.done():
            head.future.set_result(self._clock())

    # -- the order ------------------------------------------------------------------------------------------

    def _head(self) -> Waiter | None:
        interactive, bulk = self.lanes
        if not bulk:
            return interactive[0] if interactive else None
        if not interactive or self._bulk_credit >= 1.0:
            return bulk[0]
        return interactive[0]

    def _admitted(self, waiter: Waiter, now: float) -> None:
        self._remove(waiter)
        if not self.lanes[Priority.BULK]:
            self._bulk_credit = 0.0  # no banking: credit only accrues while bulk is actually waiting
        elif waiter.lane == Priority.BULK:
            self._bulk_credit = max(0.0, self._bulk_credit - 1.0)
        else:
            self._bulk_credit += self._bulk_credit_step
        wait = now - waiter.enqueued
        self.requests += 1
        self.total_wait += wait
        self.max_wait = max(self.max_wait, wait)

    def _remove(self, waiter: Waiter) -> None:
        lane = self.lanes[waiter.lane]
        if lane and lane[0] is waiter:
            lane.popleft()
        elif waiter in lane:
            lane.remove(waiter)
        if waiter.deadline_timer is not None:
            waiter.deadline_timer.cancel()


def refusal(now: float, delay: float | None, daily: bool, shared: bool = False) -> Exception:
    """The error for a call that cannot be admitted before its deadline (``delay`` None or inf: unknown)."""
    which = "shared " if shared else ""
    if daily:
        retry_after = None if delay is None or delay == math.inf else delay
        return BudgetExhaustedError(
            f"the {which}token budget is spent",
            retry_at=None if retry_after is None else now + retry_after, retry_after=retry_after,
        )
    return BudgetTimeoutError(f"the {which}rate budget cannot admit the call before its deadline")


def check_timeout(timeout: float | None) -> float | None:
    """A wait's limit in seconds: ``None`` or ``inf`` for none; NaN or a negative number is refused."""
    if timeout is None or timeout == math.inf:
        return None
    if not timeout >= 0:  # NaN fails it too
        raise ValidationError("timeout", f"must be a number of seconds >= 0 (or None), got {timeout!r}")
    return timeout


def check_cost(cost: float, capacity: float) -> None:
    """Refuse a cost that is not a non-negative number, or that exceeds ``capacity`` (it could never be admitted)."""
    # One chained comparison on the hot path; NaN fails it too. A non-number raises TypeError here.
    if not 0 <= cost <= capacity:
        if not cost >= 0:
            raise ValueError(f"cost must be a non-negative number, got {cost!r}")
        raise ValueError(f"cost {cost} exceeds the capacity {capacity}: it could never be admitted")
