"""What a Redis budget in ``on_redis_error="local"`` mode admits through while its Redis does not answer."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import attrs

from ._limits import Limits
from ._local import RateBudget

logger = logging.getLogger("pipedrive_channels.redis_budget")


class RedisFallback:
    """While Redis does not answer (``on_redis_error="local"``), a local budget with a share of the limits admits.

    Redis is taken as down for a moment after each failure, then asked again; the local budget is built on first
    need and kept (with what it admitted) for the next outage.

    :param key: the Redis budget's key, named in the log lines.
    :param limits: the shared limits; the local budget enforces ``share`` of them, without the search window (that
        is a Redis budget of its own, with a fallback of its own).
    :param share: the local budget's part of the limits, in (0, 1].
    """

    __slots__ = ("_down_until", "_limits", "_share", "key", "local")

    def __init__(self, key: str, limits: Limits, share: float) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"local_share must be in (0, 1], got {share!r}")
        self.key = key
        self._limits = limits
        self._share = share
        self.local: RateBudget | None = None
        """The local budget, built the first time Redis did not answer (None until then)."""
        self._down_until = -math.inf  # until when Redis is taken as down (loop time; -inf: it is up)

    def engaged(self, now: float) -> RateBudget | None:
        """The local budget if Redis is taken as down at ``now`` (loop time), else None: ask Redis."""
        return self._local_budget() if now < self._down_until else None

    def failed(self, error: BaseException, now: float) -> None:
        """Redis did not answer at ``now`` (loop time): take it as down for a moment.

        The first failure after Redis answered is logged at WARNING, and the local budget then admits nothing
        for one window: Redis may have admitted a full window just before, here and in other processes, so the
        local share comes on top of nothing Redis admitted.
        """
        if self._down_until == -math.inf:  # it was up until now
            logger.warning(
                "Redis did not answer (%s): the budget %r falls back to a local %g share of its limits",
                error, self.key, self._share,
            )
            self._local_budget().hold(self._limits.window)
        self._down_until = now + min(1.0, self._limits.window / 2)  # then ask Redis again

    def answered(self) -> None:
        """Redis answered: if it was taken as down, it is up again (logged)."""
        if self._down_until > -math.inf:
            logger.warning("Redis answers again: the shared budget %r is back in use", self.key)
            self._down_until = -math.inf

    def hold(self, seconds: float) -> None:
        """A hold written to Redis holds the local budget too, once there is one (it may be in use soon)."""
        if self.local is not None:
            self.local.hold(seconds)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Rate headers sync the local budget too, once there is one."""
        if self.local is not None:
            self.local.observe(headers)

    def _local_budget(self) -> RateBudget:
        if self.local is None:
            limits = attrs.evolve(self._limits.scaled(self._share), search_requests_per_window=None)
            self.local = RateBudget(**attrs.asdict(limits))
        return self.local
