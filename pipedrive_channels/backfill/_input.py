"""The back-fill's input: messages (with their contact, when a line names one) read lazily from JSON Lines, bad
lines kept as such, and stable shards."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

import attrs

from ..errors import ValidationError
from ..models import Message, _json_type, converter
from ..notes import Contact

__all__ = ["BadInput", "WithContact", "read_jsonl", "shard_of"]


@attrs.frozen
class BadInput:
    """An input record that is not a valid message: its line (when read from a file) and why."""

    line: int | None
    reason: str


@attrs.frozen
class WithContact:
    """A message and its conversation's customer, as a line with a ``"contact"`` names them.

    One record of a conversation carrying the contact is enough for a target that needs it (the notes target
    keeps it for the conversation); the Channels target ignores it.
    """

    message: Message
    contact: Contact


_CONTACT_FIELDS = frozenset(field.name for field in attrs.fields(Contact))


def _contact(data: Any) -> Contact:
    """The ``"contact"`` of a line, strictly: an object of known fields of exact JSON types."""
    if not isinstance(data, dict):
        raise ValidationError("contact", f"must be an object, got {_json_type(data)}")
    for name in data:
        if name not in _CONTACT_FIELDS:
            raise ValidationError(f"contact.{name}", f"is not a field (expected {', '.join(sorted(_CONTACT_FIELDS))})")
    try:
        contact: Contact = converter.structure(data, Contact)
    except ValidationError as error:  # the contact's own field, named inside the line: contact.phone
        field = error.field if error.field == "contact" else f"contact.{error.field}"
        raise ValidationError(field, error.reason) from None
    return contact


def _item(data: Any) -> Message | WithContact:
    if not isinstance(data, dict):
        raise TypeError(f"a line must hold a JSON object, got {type(data).__name__}")
    contact = data.pop("contact", None)  # not a field of the body the Channels API receives
    message: Message = converter.structure(data, Message)
    return message if contact is None else WithContact(message, _contact(contact))


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[Message | WithContact | BadInput]:
    """Read messages from a JSON Lines file, one receive-message body per line, lazily.

    A line may also carry ``"contact": {"person_id"?, "name"?, "phone"?, "email"?}`` (the conversation's
    customer, at least one of them): it is read as a :class:`WithContact`; a line without it (or with ``null``)
    as a :class:`Message`. A line that is not a valid message or contact becomes a :class:`BadInput` naming the
    line and the field (``contact.phone: ...``); blank lines are skipped.
    """
    with open(path, "rb") as file:  # bytes: a line that is not UTF-8 is a bad line, not a crash of the run
        for number, raw in enumerate(file, start=1):
            if not raw.strip():
                continue
            try:
                yield _item(json.loads(raw.decode("utf-8")))
            except ValidationError as error:
                yield BadInput(number, str(error))
            except RecursionError:  # json.loads (or structuring) recursing into a line like [[[[...]]]]
                yield BadInput(number, "the JSON is nested too deeply")
            except (ValueError, TypeError, KeyError) as error:
                reason = f"missing field {error}" if isinstance(error, KeyError) else f"{type(error).__name__}: {error}"
                yield BadInput(number, reason)


def shard_of(conversation_id: str, shards: int) -> int:
    """The shard (0 to ``shards - 1``) a conversation belongs to: stable across runs, processes and machines."""
    digest = hashlib.blake2b(conversation_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards
