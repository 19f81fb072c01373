"""Pipedrive's limits as numbers: the plan table, and the one formula for how long a job takes under them.

https://pipedrive.readme.io/docs/core-api-concepts-rate-limiting: the burst window is per access token and depends
on the plan and on how the token was got (OAuth or API token); the daily budget is per company, 30,000 tokens
times the plan's multiplier times its seats; search operations have their own window of 10 per 2 s on every plan.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

__all__ = ["DAY", "Limits", "Plan"]

DAY = 86_400.0
"""Seconds in the daily budget's period."""

_TOKENS_PER_SEAT = 30_000
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


def _positive_int(_: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be a positive int, got {value!r}")


def _none_or_positive_int(owner: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None:
        _positive_int(owner, attribute, value)


def _positive(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if not (value is not None and value > 0):  # NaN fails it too
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _share(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 < value <= 1:
        raise ValueError(f"{attribute.name} must be in (0, 1], got {value!r}")


@attrs.frozen
class Limits:
    """The limits a budget enforces; its fields are the budgets' keyword arguments of the same names
    (``RateBudget(**attrs.asdict(limits))``).

    :param requests_per_window: requests allowed in any rolling ``window`` (80 per 2 s for OAuth on Lite).
    :param window: the window's length in seconds.
    :param tokens_per_day: the company's daily token budget, or ``None`` to leave cost unmetered.
    :param daily_share: the part of the daily budget this budget may spend (0 < share <= 1).
    :param daily_burst: the most tokens spendable at once; smaller than the daily share, it paces a long job
        evenly over the day instead of spending the company's budget in the morning.
    :param search_requests_per_window: search operations' own burst limit (10 per ``window``), or ``None``.
    """

    requests_per_window: int = attrs.field(validator=_positive_int)
    window: float = attrs.field(default=2.0, converter=float, validator=_positive)
    tokens_per_day: float | None = attrs.field(default=None, validator=attrs.validators.optional(_positive))
    daily_share: float = attrs.field(default=1.0, validator=_share)
    daily_burst: float | None = attrs.field(default=None, validator=attrs.validators.optional(_positive))
    search_requests_per_window: int | None = attrs.field(default=10, validator=_none_or_positive_int)

    @classmethod
    def for_plan(cls, plan: Plan, seats: int, auth: str = "oauth", daily_share: float = 1.0) -> Limits:
        """The limits of a plan: burst per access token (``auth`` "oauth" or "api_token") and the daily budget."""
        if auth not in _BURST_PER_2S:
            raise ValueError(f"auth must be 'oauth' or 'api_token', got {auth!r}")
        if isinstance(seats, bool) or not isinstance(seats, int) or seats < 1:
            raise ValueError(f"seats must be a positive int, got {seats!r}")
        burst = _BURST_PER_2S[auth][list(Plan).index(plan)]
        return cls(requests_per_window=burst, tokens_per_day=_TOKENS_PER_SEAT * plan.value * seats,
                   daily_share=daily_share)

    @property
    def daily_tokens(self) -> float | None:
        """Tokens this budget may spend per day (its share of the company's), or ``None`` if unmetered."""
        return None if self.tokens_per_day is None else self.tokens_per_day * self.daily_share

    @property
    def daily_capacity(self) -> float | None:
        """The most tokens spendable at once: the daily share, or ``daily_burst`` if smaller."""
        share = self.daily_tokens
        if share is None:
            return None
        return share if self.daily_burst is None else min(share, self.daily_burst)

    def scaled(self, share: float) -> Limits:
        """``share`` (0 < share <= 1) of these limits, for one of several processes that split them."""
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share!r}")
        search = self.search_requests_per_window
        return attrs.evolve(
            self,
            requests_per_window=max(1, int(self.requests_per_window * share)),
            daily_share=self.daily_share * share,
            daily_burst=None if self.daily_burst is None else self.daily_burst * share,
            search_requests_per_window=None if search is None else max(1, int(search * share)),
        )

    def time_for(self, requests: int, tokens: float) -> float:
        """Seconds these limits need to admit ``requests`` costing ``tokens`` in all, starting full.

        The window admits ``requests_per_window`` per ``window``; the daily bucket, once its capacity is spent,
        refills at the daily share's rate. Answer latency is not counted (each slot cycle takes a little longer).
        """
        if requests <= 0:
            return 0.0
        window_time = max(0, requests - self.requests_per_window) * self.window / self.requests_per_window
        capacity, per_day = self.daily_capacity, self.daily_tokens
        daily_time = 0.0
        if capacity is not None and per_day is not None and tokens > capacity:
            daily_time = (tokens - capacity) / (per_day / DAY)
        return max(window_time, daily_time)
