"""The field checks both model modules build on: attrs validators and converters raising ``ValidationError``.

:mod:`pipedrive_channels.models` (the Channels API) and :mod:`pipedrive_channels.extension.models` (the Messaging
app extension) state one rule once here, so it reads and fails the same in both. Strings are strings: nothing is
turned into text. A validator has attrs' signature, ``(instance, attribute, value)``, and names the field by the
attribute. attrs' mypy plugin types a field from a converter only when it is a named function, so each model module
wraps ``to_member`` and ``tuple_of`` in a one-line converter of its own; the rule stays here.

Some of these run several times for every message sent and every answer parsed: the cheap test comes first, and
the reason is worked out only when it fails.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar

import attrs

from .errors import ValidationError

_E = TypeVar("_E", bound=enum.Enum)
_T = TypeVar("_T")
_UTC = timezone.utc
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 (U+0085 is a line break too)


def string(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A ``str``, empty or not."""
    if not isinstance(value, str):
        raise ValidationError(attribute.name, f"must be a string, got {type(value).__name__}")


def non_empty_string(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A ``str`` with at least one character."""
    if not isinstance(value, str) or not value:
        raise ValidationError(attribute.name, f"must be a non-empty string, got {value!r}")


def boolean(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """``True`` or ``False``, not a value that is merely truthy."""
    if not isinstance(value, bool):
        raise ValidationError(attribute.name, f"must be a bool, got {value!r}")


def require_identifier(field: str, value: Any) -> str:
    """Return ``value`` if it is a usable provider ID: a non-empty string without control characters.

    IDs end up in URL paths and in Pipedrive's manifest URLs, where control characters are never right.
    """
    # isprintable() is the fast check (this runs four times per message); the exact tests run only if it fails.
    if type(value) is str and value.isprintable() and value:
        return value
    if not isinstance(value, str) or not value:
        raise ValidationError(field, f"must be a non-empty string, got {value!r}")
    if _CONTROL_CHARS.search(value):
        raise ValidationError(field, "must not contain control characters")
    return value


def identifier(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A provider ID (see :func:`require_identifier`)."""
    if type(value) is not str or not value.isprintable() or not value:  # the fast check, inlined: 4 per message
        require_identifier(attribute.name, value)


def http_url(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """An ``http://`` or ``https://`` URL; ``None`` too when the field defaults to ``None``."""
    if value is None and attribute.default is None:
        return
    if not isinstance(value, str) or not value.startswith(("http://", "https://")) or len(value) < 10:
        raise ValidationError(attribute.name, f"must be an http(s) URL, got {value!r}")


def aware_datetime(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A timezone-aware datetime that has a UTC form; ``None`` too when the field defaults to ``None``."""
    if value is None and attribute.default is None:
        return
    if not isinstance(value, datetime):
        raise ValidationError(attribute.name, f"must be a datetime, got {type(value).__name__}")
    if value.tzinfo is not _UTC:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValidationError(attribute.name, "must be timezone-aware (naive datetimes are ambiguous)")
        if not fits_in_utc(value):
            raise ValidationError(attribute.name, f"is out of range in UTC: {value.isoformat()}")


def fits_in_utc(value: datetime) -> bool:
    """Whether an aware ``value`` has a UTC form (formatting it for the wire would raise ``OverflowError``)."""
    # 0001-01-01T00:00+05:00 is a valid datetime but has no UTC form.
    try:
        value.astimezone(_UTC)
    except OverflowError:
        return False
    return True


def message_text(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """A message's text: a string, empty only when the message has attachments.

    attrs runs validators once every field is set, so ``instance.attachments`` is already the converted tuple.
    """
    if not isinstance(value, str):
        raise ValidationError(attribute.name, f"must be a string, got {type(value).__name__}")
    if not value and not instance.attachments:
        raise ValidationError(attribute.name, "must not be empty when the message has no attachments")


def members(enum_cls: type[_E]) -> Mapping[object, _E]:
    """The lookup :func:`to_member` takes: each member of ``enum_cls`` under its value and under itself."""
    return {**{member.value: member for member in enum_cls}, **{member: member for member in enum_cls}}


def to_member(lookup: Mapping[object, _E], field: str, value: object) -> _E:
    """The member that ``value`` is or names (see :func:`members`); anything else raises ``ValidationError``."""
    # A dict lookup instead of enum_cls(value): this runs for every message sent and every answer parsed.
    try:
        return lookup[value]
    except (KeyError, TypeError):  # TypeError: an unhashable value
        allowed = ", ".join(repr(member.value) for member in dict.fromkeys(lookup.values()))
        raise ValidationError(field, f"must be one of {allowed}, got {value!r}") from None


def tuple_of(cls: type[_T], field: str, value: Iterable[Any]) -> tuple[_T, ...]:
    """``value``'s items as a tuple, each an instance of ``cls``; ``field[index]`` names the first that is not."""
    if type(value) is not tuple and type(value) is not list:  # the usual two, taken without further checks
        _require_items(cls, field, value)
    items = tuple(value)
    for item in items:
        if not isinstance(item, cls):
            index = next(at for at, candidate in enumerate(items) if not isinstance(candidate, cls))
            article = "an" if cls.__name__[:1] in "AEIOU" else "a"
            raise ValidationError(f"{field}[{index}]", f"must be {article} {cls.__name__}, got {type(item).__name__}")
    return items


def _require_items(cls: type[Any], field: str, value: object) -> None:
    # A string is iterable but never meant as a sequence of items.
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValidationError(field, f"must be a sequence of {cls.__name__}, got {type(value).__name__}")
