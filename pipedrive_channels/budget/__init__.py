"""Rate budgets: admit a call only when Pipedrive's limits allow it, and charge it its documented cost.

One contract (:class:`Budget`, :class:`Admission`; the model is stated in ``_contract.py``), two implementations:
:class:`RateBudget` for one process, :class:`RedisBudget` for every process sharing a Redis key (install the
extra: ``pip install 'pipedrive-channels[redis]'``). :class:`Limits` holds the numbers and the plan table.
"""

from typing import TYPE_CHECKING, Any

from ..errors import BudgetUnavailableError
from ._contract import Admission, Budget, BudgetStats, Priority
from ._limits import DAY, Limits, Plan
from ._local import RateBudget, Reservation, TokenBucket

if TYPE_CHECKING:
    from ._redis import RedisBudget, RedisReservation

__all__ = [
    "DAY",
    "Admission",
    "Budget",
    "BudgetStats",
    "BudgetUnavailableError",
    "Limits",
    "Plan",
    "Priority",
    "RateBudget",
    "RedisBudget",
    "RedisReservation",
    "Reservation",
    "TokenBucket",
]

_REDIS_NAMES = frozenset({"RedisBudget", "RedisReservation"})


def __getattr__(name: str) -> Any:
    # The Redis budget loads the redis library (the extra): only for whoever asks for one of its names.
    if name in _REDIS_NAMES:
        from . import _redis

        return getattr(_redis, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
