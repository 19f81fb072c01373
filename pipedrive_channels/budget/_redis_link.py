"""The Redis budget's round trips: its scripts run on the shared keys, each one bounded in time.

:class:`RedisLink` knows the keys, the scripts and the limits' numbers as the scripts take them; it runs the
admission script for the head of the gate and the writes (settles, holds, daily syncs) in the background. It
decides nothing about an outage: a round trip that fails or does not answer in time raises one of
:data:`UNANSWERED`, and the budget chooses what that means.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from . import _redis_scripts as scripts
from ._limits import DAY, Limits

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

logger = logging.getLogger("pipedrive_channels.redis_budget")

_RedisErrors: tuple[type[BaseException], ...] = (OSError,)
try:  # the extra may be missing when this module is only imported for its names
    from redis.exceptions import RedisError as _RedisError

    _RedisErrors = (_RedisError, OSError)
except ImportError:  # pragma: no cover
    pass
UNANSWERED: tuple[type[BaseException], ...] = (*_RedisErrors, asyncio.TimeoutError)
"""A round trip that failed, or did not answer in time (asyncio's TimeoutError is no OSError before 3.11)."""
# A caller at its deadline still gets this long for one round trip (Redis nearby answers in a millisecond or
# two), so that ``acquire(timeout=0)`` asks once, as ``RateBudget.acquire(timeout=0)`` admits what fits now.
_LEAST_ROUND_TRIP = 0.05

# What the admission script answers: (admitted, seconds to wait or None for never, the daily budget blocks).
Verdict = tuple[bool, float | None, bool]


class RedisLink:
    """The shared keys under ``key`` and the scripts that read and write them, every round trip bounded.

    :param limits: the shared limits (a search window among them is another budget's, with a link of its own).
    :param redis_timeout: the most seconds one round trip may take (less if the caller's deadline is nearer).
    :param max_in_flight: seconds an admitted, unsettled slot counts before it frees anyway.
    """

    __slots__ = (
        "_admit_script", "_background", "_daily_capacity", "_keys", "_limit_args", "_poll_ms", "_refill_per_ms",
        "_release_script", "_settle_script", "_sync_script", "_window", "max_in_flight", "redis_timeout", "written",
    )

    def __init__(self, redis: Redis, key: str, limits: Limits, redis_timeout: float, max_in_flight: float) -> None:
        if not max_in_flight > 0:
            raise ValueError(f"max_in_flight must be > 0, got {max_in_flight!r}")
        if not 0 < redis_timeout < math.inf:
            raise ValueError(f"redis_timeout must be a finite number > 0, got {redis_timeout!r}")
        self.redis_timeout = float(redis_timeout)
        self.max_in_flight = float(max_in_flight)
        self._window = limits.window
        self._keys = [f"{key}:slots", f"{key}:daily", f"{key}:hold"]
        capacity, per_day = limits.daily_capacity, limits.daily_tokens
        self._daily_capacity = -1.0 if capacity is None else capacity  # -1: no daily bucket
        self._refill_per_ms = 0.0 if per_day is None else per_day / DAY / 1000.0
        # The admission script's first arguments, and how long it tells a caller to wait for a slot in flight.
        self._limit_args = [limits.requests_per_window, limits.window * 1000, self.max_in_flight * 1000]
        self._poll_ms = min(100.0, limits.window * 50)
        self._admit_script: AsyncScript = redis.register_script(scripts.ADMIT)
        self._release_script: AsyncScript = redis.register_script(scripts.RELEASE)
        self._settle_script: AsyncScript = redis.register_script(scripts.SETTLE)
        self._sync_script: AsyncScript = redis.register_script(scripts.SYNC)
        self.written = asyncio.Event()
        """Set when a background write (settle, hold, sync, release) is done, landed or not: ask Redis again."""
        self._background: set[asyncio.Task[Any]] = set()

    async def admit(self, cost: float, member: str, deadline: float | None) -> Verdict:
        """Run the admission script for ``member`` costing ``cost``; the round trip (with its NOSCRIPT reload) is
        bounded by ``redis_timeout`` and ``deadline``.

        If the caller stops waiting (cancelled, or past the bound), whatever Redis admits later is given back in
        the background.

        :raises: one of :data:`UNANSWERED`; a ``TimeoutError`` saying the bound, if Redis did not answer within it.
        """
        loop = asyncio.get_running_loop()
        bound = self.redis_timeout
        if deadline is not None:
            bound = min(bound, max(deadline - loop.time(), _LEAST_ROUND_TRIP))
        args: list[str | float] = [
            *self._limit_args, cost, self._daily_capacity, self._refill_per_ms, member, self._poll_ms,
        ]
        call = loop.create_task(self._admit_script(keys=self._keys, args=args))
        try:
            await asyncio.wait({call}, timeout=bound)  # never cancels the call: it may admit after we stop waiting
        except asyncio.CancelledError:
            self._track(self._release(call, member, cost))
            raise
        if not call.done():
            self._track(self._release(call, member, cost))
            raise TimeoutError(f"no answer within {bound:.2g} s")
        answer = call.result()
        admitted, wait_ms, blocks = int(answer[0]), float(answer[1]), bool(int(answer[2]))
        return bool(admitted), None if wait_ms < 0 else wait_ms / 1000.0, blocks

    async def wait_for_write(self, until: float | None) -> None:
        """Sleep until ``until`` (loop time; None: no limit) or until :attr:`written` is set, whichever is first."""
        kick = asyncio.ensure_future(self.written.wait())
        try:
            delay = None if until is None else until - asyncio.get_running_loop().time()
            if delay is None or delay > 0:
                await asyncio.wait({kick}, timeout=delay)
        finally:
            if not kick.done():
                kick.cancel()

    def settle(self, member: str) -> None:
        """Free ``member``'s slot one window from Redis's now (in the background; only if it is still there)."""
        self._spawn(self._settle_script(keys=self._keys[:1], args=[member, self._window * 1000]))

    def sync(self, hold: float, daily: float | None) -> None:
        """Write a hold (seconds, finite and capped by the caller) and the daily tokens left through to Redis."""
        args = [hold * 1000, -1 if daily is None else daily, self._daily_capacity, self._refill_per_ms]
        self._spawn(self._sync_script(keys=self._keys[1:], args=args))

    async def aclose(self) -> None:
        """Wait for the background writes still running, none past ``redis_timeout``; drop a release still
        waiting for a stalled Redis (its slot frees by itself)."""
        while self._background:
            _, pending = await asyncio.wait(self._background, timeout=self.redis_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _release(self, call: asyncio.Task[Any], member: str, cost: float) -> None:
        """An admission nobody waits for any more: once Redis has run it, give back what it took."""
        try:
            # Past window + max_in_flight a slot it took has freed by itself (unless Redis runs it later still).
            answer = await asyncio.wait_for(call, self._window + self.max_in_flight)
        except UNANSWERED:
            answer = None  # it may have admitted all the same: release it blindly
        if answer is None or int(answer[0]):
            self._spawn(self._release_script(keys=self._keys[:2], args=[member, cost, self._daily_capacity]))

    def _spawn(self, write: Awaitable[Any]) -> None:
        """Send ``write`` to Redis in the background, giving up after ``redis_timeout``."""

        async def run() -> None:
            try:
                await asyncio.wait_for(write, self.redis_timeout)
            except UNANSWERED as error:
                logger.debug("a shared budget write to Redis failed: %r", error)
            self.written.set()

        self._track(run())

    def _track(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
