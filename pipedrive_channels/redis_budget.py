"""Deprecated home of the Redis budget, kept for one release: import from :mod:`pipedrive_channels.budget`."""

from .budget._redis import BudgetUnavailableError, RedisBudget, RedisReservation

__all__ = ["BudgetUnavailableError", "RedisBudget", "RedisReservation"]
