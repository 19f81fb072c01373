"""A rate budget shared by every process that points at one Redis: the same limits, enforced together.

:class:`RedisBudget` is a :class:`~pipedrive_channels.budget.RateBudget` whose state lives in Redis, so a
back-fill split over 8 workers or a bot in 3 replicas, all on one token, never exceed the burst window or their
share of the daily budget together. Install the extra: ``pip install 'pipedrive-channels[redis]'``.

The model is the local budget's, kept server-side under ``key``:

- ``{key}:slots``, a sorted set of request slots scored by when they free up: ``window`` after the answer
  arrived (:meth:`RedisReservation.settle`), or ``window + max_in_flight`` after admission while unsettled, so a
  crashed process cannot hold slots forever;
- ``{key}:daily``, the daily cost bucket (tokens and last refill time);
- ``{key}:hold``, a shared pause (a key that expires when it ends), set by a 429's wait or ``hold()``.

Admission is one Lua script (``TIME``, check both limits, charge both) run atomically by the Redis server, with
the server's clock, so host clocks may disagree. It answers "admitted" or how long to wait and whether the daily
budget is what blocks. Every key gets ``PEXPIRE`` and vanishes when idle. Waiting stays local: each process
queues its callers FIFO (interactive before bulk) and only the head asks Redis, sleeping the time it answered.

Every round trip to Redis is bounded (``redis_timeout``, and the caller's deadline): a Redis that stalls is down.
An admission whose caller stopped waiting (cancelled, or Redis too slow) is given back once Redis answers it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from ._rate_headers import MAX_SERVER_WAIT, RateHeaders
from .budget import (
    _BURST_PER_2S,
    DAY,
    BudgetStats,
    Plan,
    Priority,
    RateBudget,
    Reservation,
    _check_cost,
    _check_timeout,
)
from .errors import BudgetExhaustedError, BudgetTimeoutError, PipedriveError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["BudgetUnavailableError", "RedisBudget", "RedisReservation"]

logger = logging.getLogger(__name__)

# KEYS: slots, daily, hold. ARGV: limit, window_ms, in_flight_ms, cost, capacity (-1: no daily bucket),
# refill per ms, member, poll_ms. Answers {1, 0, 0} admitted, or {0, wait_ms, daily?}; wait_ms -1: never.
# Numbers go back as strings: Redis truncates Lua numbers to integers.
_ADMIT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local limit, window, in_flight = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cost, capacity, rate = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local poll = tonumber(ARGV[8])
local hold = redis.call('PTTL', KEYS[3])
if hold > 0 then return {0, tostring(hold), 0} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local count = redis.call('ZCARD', KEYS[1])
local wait = 0
if count >= limit then
  local blocking = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
  wait = tonumber(blocking[2]) - now
  -- Still in flight: its settle will free it sooner, and another process's settle is not announced. Poll.
  if wait > window then wait = poll end
end
local tokens = nil
if capacity >= 0 then
  local state = redis.call('HMGET', KEYS[2], 'tokens', 'at')
  tokens = tonumber(state[1])
  local at = tonumber(state[2])
  if tokens == nil or at == nil then tokens = capacity; at = now end
  if now > at then tokens = math.min(capacity, tokens + (now - at) * rate) end
  if tokens < cost then
    if rate <= 0 then return {0, '-1', 1} end
    local daily_wait = (cost - tokens) / rate
    if daily_wait >= wait then return {0, tostring(daily_wait), 1} end
  end
end
if wait > 0 then return {0, tostring(wait), 0} end
redis.call('ZADD', KEYS[1], now + window + in_flight, ARGV[7])
redis.call('PEXPIRE', KEYS[1], math.ceil(window + in_flight) + 1000)
if tokens ~= nil then
  tokens = tokens - cost
  redis.call('HSET', KEYS[2], 'tokens', tostring(tokens), 'at', tostring(now))
  -- Idle until full again is the same as absent.
  redis.call('PEXPIRE', KEYS[2], math.ceil((capacity - tokens) / rate) + 1000)
end
return {1, '0', 0}
"""

# KEYS: slots, daily. ARGV: member, cost, capacity (-1: no daily bucket). An admission nobody uses: free its
# slot and give back its cost, only if it was admitted and is still there (so releasing twice changes nothing).
_RELEASE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
local capacity = tonumber(ARGV[3])
local tokens = tonumber(redis.call('HGET', KEYS[2], 'tokens'))
if capacity >= 0 and tokens ~= nil then
  redis.call('HSET', KEYS[2], 'tokens', tostring(math.min(capacity, tokens + tonumber(ARGV[2]))))
end
return 1
"""

# KEYS: slots. ARGV: member, window_ms. The slot frees window after now (only if it is still there).
_SETTLE = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
return redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
"""

# KEYS: daily, hold. ARGV: hold_ms (0: none), daily remaining (-1: none), capacity, refill per ms.
# Lengthens the shared hold, lowers the shared daily tokens; never shortens or raises either.
_SYNC = """
if redis.replicate_commands then redis.replicate_commands() end
local hold = tonumber(ARGV[1])
if hold > 0 and redis.call('PTTL', KEYS[2]) < hold then
  redis.call('SET', KEYS[2], '1', 'PX', math.ceil(hold))
end
local remaining, capacity, rate = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if remaining >= 0 and capacity >= 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
  local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
  local tokens, at = tonumber(state[1]), tonumber(state[2])
  if tokens == nil or at == nil then tokens = capacity; at = now end
  if now > at then tokens = math.min(capacity, tokens + (now - at) * rate) end
  tokens = math.max(0, math.min(tokens, remaining))
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
  if rate > 0 then redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate) + 1000) end
end
return 1
"""


class BudgetUnavailableError(PipedriveError):
    """The shared budget's Redis did not answer, so nothing was admitted or sent (``on_redis_error="fail"``).

    The Redis error is chained as ``__cause__``.
    """


class RedisReservation(Reservation):
    """One admitted request's slot in the shared window. :meth:`settle` frees it ``window`` after the answer."""

    __slots__ = ("_member", "_owner")

    def __init__(self, owner: RedisBudget, member: str, admitted_at: float, cost: float) -> None:
        super().__init__(None, admitted_at, cost)
        self.settled = False
        self._owner = owner
        self._member = member

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


class _Waiter:
    __slots__ = ("cost", "lane", "turn")

    def __init__(self, cost: float, lane: int, turn: asyncio.Future[None]) -> None:
        self.cost = cost
        self.lane = lane
        self.turn = turn


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


class RedisBudget(RateBudget):
    """Pipedrive's burst window and daily token budget, shared through Redis by every process using ``key``.

    Usable wherever a :class:`RateBudget` is (``ChannelsClient(budget=RedisBudget(...))``); every process of one
    token must use the same ``key`` and limits.

    :param redis: a ``redis.asyncio.Redis`` client.
    :param key: the prefix of this budget's keys, e.g. ``"pipedrive:budget:{company_id}"``.
    :param requests_per_window: requests allowed in any rolling ``window`` by all the processes together.
    :param window: the window's length in seconds.
    :param tokens_per_day: the company's daily token budget, or ``None`` to leave cost unmetered.
    :param daily_share: the part of the daily budget the processes sharing ``key`` may spend together.
    :param daily_burst: the most tokens spendable at once (paces a long job over the day).
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
        on_redis_error: Literal["fail", "local"] = "fail",
        local_share: float | None = None,
        redis_timeout: float = 0.5,
        max_in_flight: float = 60.0,
        search_requests_per_window: int | None = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            requests_per_window=requests_per_window, window=window, tokens_per_day=tokens_per_day,
            daily_share=daily_share, daily_burst=daily_burst, search_requests_per_window=None, clock=clock,
        )
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
        self.on_redis_error = on_redis_error
        self.redis_timeout = float(redis_timeout)
        self.max_in_flight = float(max_in_flight)
        self._keys = [f"{key}:slots", f"{key}:daily", f"{key}:hold"]
        daily = self._daily
        self._daily_capacity = -1.0 if daily is None else daily.capacity
        self._refill_per_ms = 0.0 if daily is None else daily.refill_per_second / 1000.0
        self._admit_script: AsyncScript = redis.register_script(_ADMIT)
        self._release_script: AsyncScript = redis.register_script(_RELEASE)
        self._settle_script: AsyncScript = redis.register_script(_SETTLE)
        self._sync_script: AsyncScript = redis.register_script(_SYNC)
        self._lanes: tuple[deque[_Waiter], deque[_Waiter]] = (deque(), deque())
        self._kick = asyncio.Event()  # a local settle or hold: the head asks Redis again at once
        self._background: set[asyncio.Task[Any]] = set()
        self._requests = 0
        self._charged = 0.0
        self._total_wait = 0.0
        self._max_wait = 0.0
        # The fallback, built on first need; and until when Redis is taken as down (loop time; -inf: it is up).
        self._local_share = share
        self._local: RateBudget | None = None
        self._down_until = -math.inf
        self.search = None
        if search_requests_per_window is not None:
            self.search = RedisBudget(
                redis, f"{key}:search", requests_per_window=search_requests_per_window, window=window,
                on_redis_error=on_redis_error, local_share=local_share, redis_timeout=redis_timeout,
                max_in_flight=max_in_flight, search_requests_per_window=None, clock=clock,
            )

    @classmethod
    def for_plan(  # type: ignore[override]  # a shared budget needs its Redis and key first
        cls,
        redis: Redis,
        key: str,
        plan: Plan,
        seats: int,
        auth: str = "oauth",
        daily_share: float = 1.0,
        **kw: Any,
    ) -> RedisBudget:
        """The limits of a plan (as :meth:`RateBudget.for_plan`), shared through ``redis`` under ``key``."""
        if auth not in _BURST_PER_2S:
            raise ValueError(f"auth must be 'oauth' or 'api_token', got {auth!r}")
        if not isinstance(seats, int) or seats < 1:
            raise ValueError(f"seats must be a positive int, got {seats!r}")
        burst = _BURST_PER_2S[auth][list(Plan).index(plan)]
        return cls(
            redis, key, requests_per_window=burst, tokens_per_day=30_000 * plan.value * seats,
            daily_share=daily_share, **kw,
        )

    @classmethod
    def unlimited(cls) -> RateBudget:
        """Not shared: an unlimited budget needs no Redis, use :meth:`RateBudget.unlimited`."""
        return RateBudget.unlimited()

    def __repr__(self) -> str:
        daily = f", daily_capacity={self._daily_capacity:g}" if self._daily_capacity >= 0 else ""
        return (
            f"RedisBudget(key={self.key!r}, requests_per_window={self.requests_per_window}, "
            f"window={self.window:g}{daily})"
        )

    # -- admission ------------------------------------------------------------------------------------------

    async def acquire(
        self, cost: float, *, priority: Priority = Priority.INTERACTIVE, timeout: float | None = None
    ) -> Reservation:
        """Wait (FIFO in this process) until the shared budget admits one request costing ``cost``; charge it.

        :raises BudgetExhaustedError: the daily budget blocks it past the deadline (``retry_at`` in loop time).
        :raises BudgetTimeoutError: the window or a shared hold blocks it past the deadline.
        :raises BudgetUnavailableError: Redis did not answer and ``on_redis_error`` is ``"fail"``.
        :raises ValidationError: ``timeout`` is negative or NaN (``None`` or ``inf``: no limit).
        """
        _check_cost(cost, self._capacity)
        timeout = _check_timeout(timeout)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = None if timeout is None else started + timeout
        waiter = _Waiter(cost, Priority(priority), loop.create_future())
        self._lanes[waiter.lane].append(waiter)
        try:
            while True:
                if self._head() is not waiter:
                    if waiter.turn.done():
                        waiter.turn = loop.create_future()
                    await self._sleep(waiter.turn, deadline, loop)
                    continue
                self._kick.clear()
                if loop.time() < self._down_until:
                    # Redis is taken as down: the fallback admits (and waits) on its own.
                    left = None if deadline is None else max(0.0, deadline - loop.time())
                    reservation = await self._local_budget().acquire(cost, priority=priority, timeout=left)
                    self._count(cost, loop.time() - started)
                    return reservation
                member = uuid.uuid4().hex
                admitted, wait, daily = await self._ask(cost, member, loop, deadline)
                now = loop.time()
                if admitted:
                    self._count(cost, now - started)
                    return RedisReservation(self, member, now, cost)
                if deadline is not None and (wait is None or now + wait > deadline):
                    raise _refusal(now, wait, daily)
                await self._sleep(self._kick_future(loop), None if wait is None else now + wait, loop, quiet=True)
        finally:
            self._remove(waiter)

    async def try_acquire(self, cost: float) -> Reservation | None:  # type: ignore[override]
        """Admit and charge a request only if the shared budget allows it now and nobody here waits.

        Unlike :meth:`RateBudget.try_acquire` this is a coroutine: it asks Redis.
        """
        _check_cost(cost, self._capacity)
        if self._lanes[0] or self._lanes[1]:
            return None
        loop = asyncio.get_running_loop()
        if loop.time() < self._down_until:
            return self._local_budget().try_acquire(cost)
        member = uuid.uuid4().hex
        admitted, _, _ = await self._ask(cost, member, loop, None)
        if not admitted:
            return None
        self._count(cost, 0.0)
        return RedisReservation(self, member, loop.time(), cost)

    def hold(self, seconds: float) -> None:
        """Admit nothing, in any process sharing the key, for ``seconds``, at most a day (written in the background).

        Holds only lengthen; zero, a negative number or NaN holds nothing.
        """
        if seconds > 0:
            self._sync(min(seconds, MAX_SERVER_WAIT), None)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Sync the shared state with an answer's rate headers, as :meth:`RateBudget.observe` does locally.

        ``x-ratelimit-remaining: 0`` holds every process for ``x-ratelimit-reset`` seconds (a few windows at most);
        a lower ``x-daily-ratelimit-token-remaining`` lowers the shared daily tokens.
        """
        rate = RateHeaders.from_http(headers)
        hold = 0.0
        if rate.window_spent:
            hold = self.window if rate.reset is None else rate.reset
        daily = rate.daily_remaining if self._daily_capacity >= 0 else None
        if hold > 0 or daily is not None:
            self._sync(hold, daily)

    def stats(self) -> BudgetStats:
        """What this process admitted (tokens, requests, total and longest wait) and how many wait here now."""
        return BudgetStats(
            self._charged, self._requests, self._total_wait, self._max_wait, len(self._lanes[0]) + len(self._lanes[1])
        )

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
            share = self._local_share
            daily = self._daily  # the shared bucket's size and refill rate, times the share
            self._local = RateBudget(
                requests_per_window=max(1, int(self.requests_per_window * share)), window=self.window,
                tokens_per_day=None if daily is None else daily.refill_per_second * DAY, daily_share=share,
                daily_burst=None if daily is None else daily.capacity * share, search_requests_per_window=None,
            )
        return self._local

    def _count(self, cost: float, wait: float) -> None:
        self._requests += 1
        self._charged += cost
        self._total_wait += wait
        self._max_wait = max(self._max_wait, wait)

    def _head(self) -> _Waiter | None:
        interactive, bulk = self._lanes
        return interactive[0] if interactive else bulk[0] if bulk else None

    def _remove(self, waiter: _Waiter) -> None:
        was_head = self._head() is waiter
        lane = self._lanes[waiter.lane]
        if waiter in lane:
            lane.remove(waiter)
        if was_head:
            head = self._head()
            if head is not None and not head.turn.done():
                head.turn.set_result(None)

    def _kick_future(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        return asyncio.ensure_future(self._kick.wait())

    async def _sleep(
        self, future: asyncio.Future[Any], until: float | None, loop: asyncio.AbstractEventLoop, quiet: bool = False
    ) -> None:
        """Wait for ``future`` until ``until`` (loop time; None: no limit); past it raise, unless ``quiet``."""
        try:
            delay = None if until is None else until - loop.time()
            if delay is None or delay > 0:
                await asyncio.wait({future}, timeout=delay)
            if not future.done() and not quiet:
                raise BudgetTimeoutError("the rate budget cannot admit the call before its deadline")
        finally:
            if quiet and not future.done():
                future.cancel()

    def _settle_slot(self, member: str) -> None:
        self._spawn(self._settle_script(keys=self._keys[:1], args=[member, self.window * 1000]))

    def _sync(self, hold: float, daily: float | None) -> None:
        """Write a hold (seconds, finite and capped by the caller) and the daily tokens left through to Redis."""
        if self._local is not None:
            if hold > 0:
                self._local.hold(hold)
            if daily is not None and self._local._daily is not None:
                self._local._daily.lower_to(daily)
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


def _refusal(now: float, wait: float | None, daily: bool) -> Exception:
    if daily:
        retry_at = None if wait is None else now + wait
        return BudgetExhaustedError("the shared token budget is spent", retry_at=retry_at, retry_after=wait)
    return BudgetTimeoutError("the shared rate budget cannot admit the call before its deadline")
