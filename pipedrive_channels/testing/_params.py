"""Checks of the path ids and query parameters the persons and notes routes share; each refusal names its field."""

from __future__ import annotations

from collections.abc import Mapping

from ._envelopes import Refused

_MAX_DIGITS = 18  # an id or a count past this is no id of ours, and int() of a huge string is slow


def path_id(path: str) -> int:
    """The positive integer id that ends ``path`` (``/api/v2/persons/7`` gives 7)."""
    segment = path.rstrip("/").rpartition("/")[2]
    return _digits("id", segment, 1)


def query_int(query: Mapping[str, str], name: str, default: int, low: int, high: int | None = None) -> int:
    """The integer query parameter ``name`` (``default`` when absent), from ``low`` to ``high`` (None: no bound)."""
    value = query.get(name)
    if value is None:
        return default
    number = _digits(name, value, low)
    if high is not None and number > high:
        raise Refused(name, f"must be an integer from {low} to {high}, got {number}")
    return number


def query_flag(query: Mapping[str, str], name: str) -> bool:
    """A boolean query parameter: ``true``/``false`` (or ``1``/``0``), False when absent."""
    value = query.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise Refused(name, f"must be true or false, got {value[:40]!r}")
    return value in ("true", "1")


def _digits(name: str, value: str, low: int) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > _MAX_DIGITS or int(value) < low:
        raise Refused(name, f"must be an integer of at least {low}, got {value[:40]!r}")
    return int(value)
