"""Deprecated home of the Redis budget, kept for one release: import from :mod:`pipedrive_channels.budget`."""

from .budget._redis import RedisBudget, RedisReservation
from .errors import BudgetUnavailableError

__all__ = ["BudgetUnavailableError", "RedisBudget", "RedisReservation"]
