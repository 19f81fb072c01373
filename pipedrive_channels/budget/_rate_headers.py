"""Pipedrive's rate headers, read once: the one parser the budgets and the retry policy share (sans I/O).

Every value is a finite, non-negative number or ``None``: a header that is missing, not a number, negative, ``inf``
or ``NaN`` says nothing. Every wait is capped, so one broken or hostile answer cannot freeze a budget:
``x-ratelimit-reset`` at :data:`MAX_BURST_RESET`, ``Retry-After`` at :data:`MAX_SERVER_WAIT`.
Headers: https://pipedrive.readme.io/docs/core-api-concepts-rate-limiting; ``Retry-After``:
https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Retry-After.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

import attrs

__all__ = ["MAX_BURST_RESET", "MAX_SERVER_WAIT", "RateHeaders"]

MAX_BURST_RESET = 6.0
"""The longest ``x-ratelimit-reset`` taken, in seconds: three of Pipedrive's 2-second burst windows."""

MAX_SERVER_WAIT = 86_400.0
"""The longest ``Retry-After`` taken, in seconds: a day, when the daily budget resets at the latest."""

_INF = math.inf

@attrs.frozen
class RateHeaders:
    """What an answer's rate headers say; ``None`` where a header is missing or unusable.

    :param limit: ``x-ratelimit-limit``, requests allowed per burst window.
    :param remaining: ``x-ratelimit-remaining``, requests left in the burst window when the server answered.
    :param reset: ``x-ratelimit-reset``, seconds until the burst window resets (at most :data:`MAX_BURST_RESET`).
    :param daily_remaining: ``x-daily-ratelimit-token-remaining``, the company's daily tokens left.
    :param retry_after: ``Retry-After`` in seconds, given as seconds or an HTTP date (at most
        :data:`MAX_SERVER_WAIT`; a date in the past is 0).
    """

    limit: float | None = None
    remaining: float | None = None
    reset: float | None = None
    daily_remaining: float | None = None
    retry_after: float | None = None

    @classmethod
    def from_http(cls, headers: Mapping[str, str], now: float | None = None) -> RateHeaders:
        """Read ``headers`` (any may be missing); ``now`` is the epoch time for HTTP dates (``time.time()``)."""
        # Every answer passes here: plain look-ups, and one shared instance when there is nothing to read.
        get = headers.get
        limit, remaining, reset = get("x-ratelimit-limit"), get("x-ratelimit-remaining"), get("x-ratelimit-reset")
        daily, retry = get("x-daily-ratelimit-token-remaining"), get("Retry-After")
        if limit is None and remaining is None and reset is None and daily is None and retry is None:
            return _NOTHING
        reset_seconds = _number(reset)
        return cls(
            _number(limit),
            _number(remaining),
            reset_seconds if reset_seconds is None or reset_seconds <= MAX_BURST_RESET else MAX_BURST_RESET,
            _number(daily),
            None if retry is None else _retry_after(retry, now),
        )

    @property
    def window_spent(self) -> bool:
        """The burst window had no request left (``x-ratelimit-remaining`` is 0)."""
        return self.remaining == 0

    @property
    def daily_spent(self) -> bool:
        """The company's daily token budget is spent (``x-daily-ratelimit-token-remaining`` is 0)."""
        return self.daily_remaining == 0

    @property
    def server_wait(self) -> float | None:
        """Seconds a 429 asks to wait: ``Retry-After``, else the burst window's ``x-ratelimit-reset``."""
        return self.reset if self.retry_after is None else self.retry_after


_NOTHING = RateHeaders()


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0.0 <= number < _INF else None  # NaN fails the comparison too


def _retry_after(value: str, now: float | None) -> float | None:
    seconds = _number(value)
    if seconds is None:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            return None
        seconds = max(0.0, when.timestamp() - (time.time() if now is None else now))
    return min(seconds, MAX_SERVER_WAIT)
