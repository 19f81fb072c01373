"""Rate budgets: admit a call only when Pipedrive's limits allow it, and charge it its documented cost.

One contract (:class:`Budget`, :class:`Admission`; the model is stated in ``_contract.py``), two implementations:
:class:`RateBudget` for one process, :class:`RedisBudget` for every process sharing a Redis key (install the
extra: ``pip install 'pipedrive-channels[redis]'``). :class:`Limits` holds the numbers and the plan table.
"""

from ._contract import Admission, Budget, BudgetStats, Priority
from ._limits import DAY, Limits, Plan
from ._local import RateBudget, Reservation, TokenBucket
from ._redis import BudgetUnavailableError, RedisBudget, RedisReservation

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
