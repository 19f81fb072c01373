"""The answer to a sent message, when Pipedrive echoes it back unchanged: built without validating it twice.

``receive_message`` answers with the message as Pipedrive stored it, which is (on the happy path) the very body the
client sent. Structuring that echo would run every validator again on values the sent :class:`Message` passed a
moment ago; this is a third of the SDK's own cost per call. So the echo is compared with what was sent, JSON type
for JSON type, and only if it is the same is the answer built from the sent message's values, with the datetimes
as the wire carries them (``YYYY-MM-DD HH:MM`` in UTC, as structuring would give). Any other answer, an extra or a
changed field included, is structured and checked in full.
"""

from __future__ import annotations

import functools
from typing import Any

from .models import Message, parse_datetime

_set = object.__setattr__
_wire_datetime = functools.lru_cache(maxsize=256)(parse_datetime)  # a minute's messages share one wire time


class _Unfrozen(Message):
    """A :class:`Message` being built: Message's own slots, without its frozen ``__setattr__``.

    A frozen class's fields are set through ``object.__setattr__`` (about a microsecond each, most of an echo's
    cost); here they are plain attribute stores, and one ``__class__`` assignment, which CPython allows only
    between classes of one layout, makes the finished object the frozen Message.
    """

    __slots__ = ()
    __setattr__ = object.__setattr__
    __delattr__ = object.__delattr__  # with __setattr__: the type's setattr slot is then the plain one


def echoed(message: Message, sent: dict[str, Any], data: Any) -> Message | None:
    """The answer that structuring ``data`` would give, if ``data`` is ``sent`` echoed; else ``None``.

    :param sent: ``message`` unstructured, as the body was encoded from it.
    """
    # Strings only compare equal to strings, and None to None: the top level of a message needs no type checks.
    # Attachments hold numbers and booleans, where 1 == 1.0 == True: those are compared strictly.
    if data != sent or (message.attachments and not _identical(data["attachments"], sent["attachments"])):
        return None
    building: Any = object.__new__(_Unfrozen)  # Any: to mypy a Message's fields are read-only, an _Unfrozen's not
    # Every value is one the sent message's validators passed, and a wire datetime is an aware UTC one. Each field is
    # named, not looped over: a getattr and a setattr per field would cost as much again as all the rest. A field
    # left out here would be missing from the answer, and test_echo's comparison with the structured answer fails.
    building.id, building.channel_id, building.sender_id = message.id, message.channel_id, message.sender_id
    building.conversation_id, building.message = message.conversation_id, message.message
    building.status, building.conversation_link = message.status, message.conversation_link
    building.attachments = message.attachments
    building.created_at = _wire_datetime(sent["created_at"])
    building.reply_by = _wire_datetime(sent["reply_by"]) if "reply_by" in sent else None
    _set(building, "__class__", Message)
    answer: Message = building
    return answer


def _identical(left: Any, right: Any) -> bool:
    """Equal, and of the same JSON type at every level (``True`` is not ``1``, ``1.0`` is not ``1``)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(_identical(value, right[key]) for key, value in left.items())
    if isinstance(left, list):
        return len(left) == len(right) and all(map(_identical, left, right))
    return bool(left == right)


__all__ = ["echoed"]
