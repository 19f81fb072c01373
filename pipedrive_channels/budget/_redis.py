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

:class:`RedisBudget` wires the gate to its two parts: the round trips (``_redis_link.py``) and, with
``on_redis_error="local"``, the local budget used while Redis does not answer (``_redis_fallback.py``).
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs

from ..errors import BudgetUnavailableError
from ._contract import Admission, BudgetStats, Priority
from ._gate import Gate, check_cost, check_timeout, refusal
from ._limits import Limits, Plan
from ._local import RateBudget
from ._rate_headers import MAX_SERVER_WAIT, RateHeaders
from ._redis_fallback import RedisFallback
from ._redis_link import UNANSWERED, RedisLink, Verdict
from ._search import SearchAdmission, with_search_slot

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["BudgetUnavailableError", "RedisBudget", "RedisReservation"]


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
            self._owner._link.settle(self._member)
        if headers:
            self._owner.observe(headers)

    def refund(self) -> None:
        """Nothing was sent after all; a shared slot is not given back (another process may count on the window
        being full), so this settles it."""
        self.settle()


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
        self._fallback = RedisFallback(key, limits, 0.25 if local_share is None else local_share)
        self._link = link = RedisLink(redis, key, limits, redis_timeout, max_in_flight)
        self.redis = redis
        self.key = key
        self.requests_per_window = requests_per_window
        self.window = limits.window
        self.on_redis_error = on_redis_error
        self.redis_timeout = link.redis_timeout
        self.max_in_flight = link.max_in_flight
        capacity = limits.daily_capacity
        self._capacity = math.inf if capacity is None else capacity
        self._gate = Gate(None, clock, bulk_share)
        self._charged = 0.0
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
        capacity = self.limits.daily_capacity
        daily = "" if capacity is None else f", daily_capacity={capacity:g}"
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
        local = self._fallback.engaged(loop.time())
        if local is not None:
            return local.try_acquire(cost)
        member = uuid.uuid4().hex
        admitted, _, _ = await self._ask(cost, member, None)
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
            self._fallback.hold(seconds)
            self._link.sync(seconds, None)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Sync the shared state with an answer's rate headers, as :meth:`RateBudget.observe` does locally.

        ``x-ratelimit-remaining: 0`` holds every process for ``x-ratelimit-reset`` seconds (a few windows at most);
        a lower ``x-daily-ratelimit-token-remaining`` lowers the shared daily tokens.
        """
        self._fallback.observe(headers)
        rate = RateHeaders.from_http(headers)
        hold = 0.0
        if rate.window_spent:
            hold = self.window if rate.reset is None else rate.reset
        daily = None if self.limits.daily_capacity is None else rate.daily_remaining
        if hold > 0 or daily is not None:
            self._link.sync(hold, daily)

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
        await self._link.aclose()

    # -- internals ------------------------------------------------------------------------------------------

    async def _admit(self, cost: float, lane: Priority, timeout: float | None) -> Admission:
        """Queue in the gate; at its turn, ask Redis (or the fallback) until admitted or past the deadline."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        gate, link = self._gate, self._link
        waiter = gate.join(cost, lane)
        try:
            while True:
                await gate.turn(waiter, deadline)
                link.written.clear()
                local = self._fallback.engaged(loop.time())
                if local is not None:
                    # Redis is taken as down: the fallback admits (and waits) on its own.
                    left = None if deadline is None else max(0.0, deadline - loop.time())
                    admission: Admission = await local.acquire(cost, priority=lane, timeout=left)
                    break
                member = uuid.uuid4().hex
                admitted, wait, daily = await self._ask(cost, member, deadline)
                now = loop.time()
                if admitted:
                    admission = RedisReservation(self, member, now, cost)
                    break
                if deadline is not None and (wait is None or now + wait > deadline):
                    raise refusal(now, wait, daily, shared=True)
                await link.wait_for_write(None if wait is None else now + wait)
            self._charged += cost
            gate.admitted(waiter)
            return admission
        finally:
            gate.leave(waiter)

    async def _ask(self, cost: float, member: str, deadline: float | None) -> Verdict:
        """Ask Redis to admit ``member``; if it does not answer, raise (``"fail"``) or fall back for a moment."""
        try:
            verdict = await self._link.admit(cost, member, deadline)
        except UNANSWERED as error:
            if self.on_redis_error == "fail":
                raise BudgetUnavailableError(f"the shared budget's Redis did not answer: {error}") from error
            self._fallback.failed(error, asyncio.get_running_loop().time())
            return False, 0.0, False  # the head loops once more, onto the fallback
        self._fallback.answered()
        return verdict
