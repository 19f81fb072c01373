"""A rate budget shared by every process that points at one Redis: the same limits, enforced together.

:class:`RedisBudget` keeps the :class:`~pipedrive_channels.budget.Budget` contract with its state in Redis, so
a back-fill split over 8 workers or a bot in 3 replicas, all on one token, never exceed the burst window or their
share of the daily budget together. Install the extra: ``pip install 'pipedrive-channels[redis]'``.

The model is the local budget's, kept server-side under ``key``:

- ``{key}:slots``, a sorted set of request slots scored by when they free up: ``window`` after the answer
  arrived (:meth:`RedisReservation.settle`), or ``window + max_in_flight`` after admission while unsettled, so a
  crashed process cannot hold slots forever;
- ``{key}:daily``, the daily cost bucket (tokens and last refill time);
- ``{key}:hold``, a shared pause (a key that expires when it ends), set by a 429's wait or ``hold()``.

Admission is one Lua script (``TIME``, check both limits, charge both; ``_redis_scripts.py``) run atomically by
the Redis server, with the server's clock, so host clocks may disagree. It answers "admitted" or how long to wait
and whether the daily budget is what blocks. Every key gets ``PEXPIRE`` and vanishes when idle. Waiting stays
local: each process queues its callers in the shared gate (the same lanes and bulk share as the local budget) and
only the head asks Redis, sleeping the time it answered.

Every round trip to Redis is bounded (``redis_timeout``, and the caller's deadline): a Redis that stalls is down.
An admission whose caller stopped waiting (cancelled, or Redis too slow) is given back once Redis answers it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs

from ..errors import BudgetUnavailableError
from . import _redis_scripts as scripts
from ._contract import Admission, BudgetStats, Priority
from ._gate import Gate, check_cost, check_timeout, refusal
from ._limits import DAY, Limits, Plan
from ._local import RateBudget
from ._rate_headers import MAX_SERVER_WAIT, RateHeaders
from ._search import SearchAdmission, with_search_slot

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["BudgetUnavailableError", "RedisBudget", "RedisReservation"]

# The name it has always logged under, where users' logging configuration finds it.
logger = logging.getLogger("pipedrive_channels.redis_budget")


class RedisReservation:
    """One admitted request's slot in the shared window. :meth:`settle` frees it ``window`` after the answer."""

    __slots__ = ("_member", "_owner", "admitted_at", "cost", "settled")

    def __init__(self, owner: RedisBudget, member: str, admitted_at: float, cost: float) -> None:
        self._owner = owner
        self._member = member
        self.admitted_at = admitted_at
        self.cost = cost
        self.settled = False

    def settle(self, headers: Mapping[str, str] | None = None) -> None:
        """The answer arrived: free the slot ``window`` seconds from now (Redis's now) and sync the headers.

        The writes to Redis run in the background (this is called from synchronous code). A reservation never
        settled frees ``window + max_in_flight`` after its admission.
        """
        if not self.settled:
            self.settled = True
            self._owner._settle_slot(self._member)
        if headers:
            self._owner.observe(headers)

    def refund(self) -> None:
        """Nothing was sent after all; a shared slot is not given back (another process may count on the window
        being full), so this settles it."""
        self.settle()


_RedisErrors: tuple[type[BaseException], ...] = (OSError,)
try:  # the extra may be missing when this module is only imported for its names
    from redis.exceptions import RedisError as _RedisError

    _RedisErrors = (_RedisError, OSError)
except ImportError:  # pragma: no cover
    pass
# A round trip that failed, or did not answer in time (asyncio's TimeoutError is no OSError before 3.11).
_Unanswered: tuple[type[BaseException], ...] = (*_RedisErrors, asyncio.TimeoutError)
# A caller at its deadline still gets this long for one round trip (Redis nearby answers in a millisecond or
# two), so that ``acquire(timeout=0)`` asks once, as ``RateBudget.acquire(timeout=0)`` admits what fits now.
_LEAST_ROUND_TRIP = 0.05


class RedisBudget:
    """Pipedrive's burst window and daily token budget, shared through Redis by every process using ``key``.

    A :class:`~pipedrive_channels.budget.Budget`, usable wherever a :class:`RateBudget` is
    (``ChannelsClient(budget=RedisBudget(...))``); every process of one token must use the same ``key`` and limits.

    :param redis: a ``redis.asyncio.Redis`` client.
    :param key: the prefix of this budget's keys, e.g. ``"pipedrive:budget:{company_id}"``.
    :param requests_per_window: requests allowed in any rolling ``window`` by all the processes together.
    :param window: the window's length in seconds.
    :param tokens_per_day: the company's daily token budget, or ``None`` to leave cost unmetered.
    :param daily_share: the part of the daily budget the processes sharing ``key`` may spend together.
    :param daily_burst: the most tokens spendable at once (paces a long job over the day).
    :param bulk_share: the least share of this process's admissions ``Priority.BULK`` gets while interactive calls
        also wait.
    :param on_redis_error: ``"fail"`` raises :class:`BudgetUnavailableError` when Redis does not answer;
        ``"local"`` falls back to a local :class:`RateBudget` with ``local_share`` of the limits (logged once at
        WARNING) and goes back to Redis once it answers again. The fallback admits nothing in its first
        ``window``: Redis may have admitted a full window just before it stopped answering.
    :param local_share: the fallback's part of the limits (default 1/4: four processes share the token).
    :param redis_timeout: the most seconds one round trip to Redis may take (less if the caller's deadline is
        nearer); past it Redis is taken as down, as if it had refused the connection.
    :param max_in_flight: seconds an admitted request may stay unanswered before its slot frees anyway.
    :param search_requests_per_window: search operations' own shared window (10 per 2 s), under ``{key}:search``.
    :param clock: seconds, for the waits in :meth:`stats` only; admission uses the Redis server's clock.
    """

    def __init__(
        self,
        redis: Redis,
        key: str,
        *,
        requests_per_window: int,
        window: float = 2.0,
        tokens_per_day: float | None = None,
        daily_share: float = 1.0,
        daily_burst: float | None = None,
        bulk_share: float = 0.2,
        on_redis_error: Literal["fail", "local"] = "fail",
        local_share: float | None = None,
        redis_timeout: float = 0.5,
        max_in_flight: float = 60.0,
        search_requests_per_window: int | None = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits = Limits(
            requests_per_window, window, tokens_per_day, daily_share, daily_burst, search_requests_per_window
        )
        """The limits every process sharing ``key`` enforces together."""
        if on_redis_error not in ("fail", "local"):
            raise ValueError(f"on_redis_error must be 'fail' or 'local', got {on_redis_error!r}")
        share = 0.25 if local_share is None else local_share
        if not 0 < share <= 1:
            raise ValueError(f"local_share must be in (0, 1], got {local_share!r}")
        if not max_in_flight > 0:
            raise ValueError(f"max_in_flight must be > 0, got {max_in_flight!r}")
        if not 0 < redis_timeout < math.inf:
            raise ValueError(f"redis_timeout must be a finite number > 0, got {redis_timeout!r}")
        self.redis = redis
        self.key = key
        self.requests_per_window = requests_per_window
        self.window = limits.window
        self.on_redis_error = on_redis_error
        self.redis_timeout = float(redis_timeout)
        self.max_in_flight = float(max_in_flight)
        self._keys = [f"{key}:slots", f"{key}:daily", f"{key}:hold"]
        capacity, per_day = limits.daily_capacity, limits.daily_tokens
        self._capacity = math.inf if capacity is None else capacity
        self._daily_capacity = -1.0 if capacity is None else capacity
        self._refill_per_ms = 0.0 if per_day is None else per_day / DAY / 1000.0
        self._admit_script: AsyncScript = redis.register_script(scripts.ADMIT)
        self._release_script: AsyncScript = redis.register_script(scripts.RELEASE)
        self._settle_script: AsyncScript = redis.register_script(scripts.SETTLE)
        self._sync_script: AsyncScript = redis.register_script(scripts.SYNC)
        self._gate = Gate(None, clock, bulk_share)
        self._kick = asyncio.Event()  # a local settle or hold: the head asks Redis again at once
        self._background: set[asyncio.Task[Any]] = set()
        self._charged = 0.0
        # The fallback, built on first need; and until when Redis is taken as down (loop time; -inf: it is up).
        self._local_share = share
        self._local: RateBudget | None = None
        self._down_until = -math.inf
        self.search: RedisBudget | None = None
        """The search operations' shared window (under ``{key}:search``, cost unmetered), or None."""
        if search_requests_per_window is not None:
            self.search = RedisBudget(
                redis, f"{key}:search", requests_per_window=search_requests_per_window, window=window,
                bulk_share=bulk_share, on_redis_error=on_redis_error, local_share=local_share,
                redis_timeout=redis_timeout, max_in_flight=max_in_flight, search_requests_per_window=None, clock=clock,
            )

    @classmethod
    def for_plan(
        cls,
        redis: Redis,
        key: str,
        plan: Plan,
        seats: int,
        auth: str = "oauth",
        daily_share: float = 1.0,
        **kw: Any,
    ) -> RedisBudget:
        """The limits of a plan (:meth:`Limits.for_plan`), shared through ``redis`` under ``key``; ``kw`` are
        further keyword arguments of :class:`RedisBudget`."""
        return cls(redis, key, **{**attrs.asdict(Limits.for_plan(plan, seats, auth, daily_share)), **kw})

    @classmethod
    def unlimited(cls) -> RateBudget:
        """Not shared: an unlimited budget needs no Redis, so this is :meth:`RateBudget.unlimited`."""
        return RateBudget.unlimited()

    def __repr__(self) -> str:
        daily = f", daily_capacity={self._daily_capacity:g}" if self._daily_capacity >= 0 else ""
        return (
            f"RedisBudget(key={self.key!r}, requests_per_window={self.requests_per_window}, "
            f"window={self.window:g}{daily})"
        )

    # -- admission ------------------------------------------------------------------------------------------

    async def acquire(
        self,
        cost: float,
        *,
        priority: Priority = Priority.INTERACTIVE,
        timeout: float | None = None,
        search: bool = False,
    ) -> Admission:
        """Wait (in this process's gate) until the shared budget admits one request costing ``cost``; charge it.

        :param search: it is a search operation: it takes a slot of the shared search window (:attr:`search`) too,
            first, within the same ``timeout``; settling or refunding the admission does the same to that slot.
        :raises BudgetExhaustedError: the daily budget blocks it past the deadline (``retry_at`` in loop time).
        :raises BudgetTimeoutError: the window or a shared hold blocks it past the deadline.
        :raises BudgetUnavailableError: Redis did not answer and ``on_redis_error`` is ``"fail"``.
        :raises ValidationError: ``timeout`` is negative or NaN (``None`` or ``inf``: no limit).
        """
        check_cost(cost, self._capacity)
        timeout = check_timeout(timeout)
        lane = Priority(priority)
        if search and self.search is not None:
            admit = functools.partial(self._admit, cost, lane)
            main, slot = await with_search_slot(self.search, admit, lane, timeout, asyncio.get_running_loop().time)
            return SearchAdmission(main, slot)
        return await self._admit(cost, lane, timeout)

    async def try_acquire(self, cost: float) -> Admission | None:
        """Admit and charge a request only if the shared budget allows it now and nobody here waits.

        Unlike :meth:`RateBudget.try_acquire` this is a coroutine: it asks Redis.
        """
        check_cost(cost, self._capacity)
        if len(self._gate):
            return None
        loop = asyncio.get_running_loop()
        if loop.time() < self._down_until:
            return self._local_budget().try_acquire(cost)
        member = uuid.uuid4().hex
        admitted, _, _ = await self._ask(cost, member, loop, None)
        if not admitted:
            return None
        self._charged += cost
        self._gate.requests += 1
        return RedisReservation(self, member, loop.time(), cost)

    def hold(self, seconds: float) -> None:
        """Admit nothing, in any process sharing the key, for ``seconds``, at most a day (written in the background).

        Holds only lengthen; zero, a negative number or NaN holds nothing.
        """
        if seconds > 0:
            seconds = min(seconds, MAX_SERVER_WAIT)
            if self._local is not None:
                self._local.hold(seconds)
            self._sync(seconds, None)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Sync the shared state with an answer's rate headers, as :meth:`RateBudget.observe` does locally.

        ``x-ratelimit-remaining: 0`` holds every process for ``x-ratelimit-reset`` seconds (a few windows at most);
        a lower ``x-daily-ratelimit-token-remaining`` lowers the shared daily tokens.
        """
        if self._local is not None:
            self._local.observe(headers)
        rate = RateHeaders.from_http(headers)
        hold = 0.0
        if rate.window_spent:
            hold = self.window if rate.reset is None else rate.reset
        daily = rate.daily_remaining if self._daily_capacity >= 0 else None
        if hold > 0 or daily is not None:
            self._sync(hold, daily)

    def time_for(self, requests: int, tokens: float) -> float:
        """Seconds the processes sharing the key need to admit ``requests`` costing ``tokens`` together, starting
        full (:meth:`Limits.time_for`)."""
        return self.limits.time_for(requests, tokens)

    def stats(self) -> BudgetStats:
        """What this process admitted (tokens, requests, total and longest wait) and how many wait here now."""
        gate = self._gate
        return BudgetStats(self._charged, gate.requests, gate.total_wait, gate.max_wait, len(gate))

    async def aclose(self) -> None:
        """Wait for the background writes still running (settles, holds, releases), none past ``redis_timeout``.

        A release still waiting for a stalled Redis is dropped: its slot frees by itself (``window +
        max_in_flight`` after admission).
        """
        while self._background:
            _, pending = await asyncio.wait(self._background, timeout=self.redis_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)

    # -- internals ------------------------------------------------------------------------------------------

    async def _admit(self, cost: float, lane: Priority, timeout: float | None) -> Admission:
        """Queue in the gate; at its turn, ask Redis (or the fallback) until admitted or past the deadline."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        gate = self._gate
        waiter = gate.join(cost, lane)
        try:
            while True:
                await gate.turn(waiter, deadline)
                self._kick.clear()
                if loop.time() < self._down_until:
                    # Redis is taken as down: the fallback admits (and waits) on its own.
                    left = None if deadline is None else max(0.0, deadline - loop.time())
                    admission: Admission = await self._local_budget().acquire(cost, priority=lane, timeout=left)
                    break
                member = uuid.uuid4().hex
                admitted, wait, daily = await self._ask(cost, member, loop, deadline)
                now = loop.time()
                if admitted:
                    admission = RedisReservation(self, member, now, cost)
                    break
                if deadline is not None and (wait is None or now + wait > deadline):
                    raise refusal(now, wait, daily, shared=True)
                await self._wait_for_kick(None if wait is None else now + wait, loop)
            self._charged += cost
            gate.admitted(waiter)
            return admission
        finally:
            gate.leave(waiter)

    async def _wait_for_kick(self, until: float | None, loop: asyncio.AbstractEventLoop) -> None:
        """Sleep until ``until`` (loop time; None: no limit) or a local settle, hold or write, whichever is first."""
        kick = asyncio.ensure_future(self._kick.wait())
        try:
            delay = None if until is None else until - loop.time()
            if delay is None or delay > 0:
                await asyncio.wait({kick}, timeout=delay)
        finally:
            if not kick.done():
                kick.cancel()

    async def _ask(
        self, cost: float, member: str, loop: asyncio.AbstractEventLoop, deadline: float | None
    ) -> tuple[bool, float | None, bool]:
        """Run the admission script: (admitted, seconds to wait or None for never, daily blocks).

        The round trip (with its NOSCRIPT reload) is bounded by ``redis_timeout`` and the deadline.
        """
        args: list[str | float] = [
            self.requests_per_window, self.window * 1000, self.max_in_flight * 1000, cost, self._daily_capacity,
            self._refill_per_ms, member, min(100.0, self.window * 50),
        ]
        bound = self.redis_timeout
        if deadline is not None:
            bound = min(bound, max(deadline - loop.time(), _LEAST_ROUND_TRIP))
        call = loop.create_task(self._admit_script(keys=self._keys, args=args))
        try:
            await asyncio.wait({call}, timeout=bound)  # never cancels the call: it may admit after we stop waiting
        except asyncio.CancelledError:
            self._track(self._release(call, member, cost))
            raise
        if not call.done():
            self._track(self._release(call, member, cost))
            self._redis_failed(TimeoutError(f"no answer within {bound:.2g} s"), loop)
            return False, 0.0, False
        try:
            answer = call.result()
        except _RedisErrors as error:
            self._redis_failed(error, loop)
            return False, 0.0, False  # the head loops once more, onto the fallback
        if self._down_until > -math.inf:
            logger.warning("Redis answers again: the shared budget %r is back in use", self.key)
            self._down_until = -math.inf
        admitted, wait_ms, daily = int(answer[0]), float(answer[1]), bool(int(answer[2]))
        return bool(admitted), None if wait_ms < 0 else wait_ms / 1000.0, daily

    async def _release(self, call: asyncio.Task[Any], member: str, cost: float) -> None:
        """An admission nobody waits for any more: once Redis has run it, give back what it took."""
        try:
            # Past window + max_in_flight a slot it took has freed by itself (unless Redis runs it later still).
            answer = await asyncio.wait_for(call, self.window + self.max_in_flight)
        except _Unanswered:
            answer = None  # it may have admitted all the same: release it blindly
        if answer is None or int(answer[0]):
            self._spawn(self._release_script(keys=self._keys[:2], args=[member, cost, self._daily_capacity]))

    def _redis_failed(self, error: BaseException, loop: asyncio.AbstractEventLoop) -> None:
        if self.on_redis_error == "fail":
            raise BudgetUnavailableError(f"the shared budget's Redis did not answer: {error}") from error
        if self._down_until == -math.inf:  # it was up until now
            logger.warning(
                "Redis did not answer (%s): the budget %r falls back to a local %g share of its limits",
                error, self.key, self._local_share,
            )
            # Redis may have admitted a full window just now, here and in other processes: the fallback starts
            # with no free slot, so its share comes on top of nothing Redis admitted.
            self._local_budget().hold(self.window)
        self._down_until = loop.time() + min(1.0, self.window / 2)  # then ask Redis again

    def _local_budget(self) -> RateBudget:
        if self._local is None:
            # The search window is a RedisBudget of its own, with a fallback of its own.
            limits = attrs.evolve(self.limits.scaled(self._local_share), search_requests_per_window=None)
            self._local = RateBudget(**attrs.asdict(limits))
        return self._local

    def _settle_slot(self, member: str) -> None:
        self._spawn(self._settle_script(keys=self._keys[:1], args=[member, self.window * 1000]))

    def _sync(self, hold: float, daily: float | None) -> None:
        """Write a hold (seconds, finite and capped by the caller) and the daily tokens left through to Redis."""
        args = [hold * 1000, -1 if daily is None else daily, self._daily_capacity, self._refill_per_ms]
        self._spawn(self._sync_script(keys=self._keys[1:], args=args))

    def _spawn(self, write: Awaitable[Any]) -> None:
        """Send ``write`` to Redis in the background, giving up after ``redis_timeout``."""

        async def run() -> None:
            try:
                await asyncio.wait_for(write, self.redis_timeout)
            except _Unanswered as error:
                logger.debug("a shared budget write to Redis failed: %r", error)
            self._kick.set()

        self._track(run())

    def _track(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
