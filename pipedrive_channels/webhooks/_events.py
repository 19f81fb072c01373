"""The webhooks v2 payload as values: :class:`WebhookEvent` (``meta``, ``data``, ``previous``) and
:class:`WebhookMeta`.

Tolerant of what Pipedrive adds (new meta fields are kept in ``extra``; a new ``action`` or ``entity`` is a plain
string), strict about what it sends today: a known field of the wrong type is a :class:`WebhookPayloadError`
naming it (``meta.user_id``), never a ``KeyError`` in a handler. Pipedrive sends IDs as strings in v2
(``"user_id": "123"``); a decimal string and a JSON integer are both accepted, and kept as the type shown below.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from ..errors import ValidationError
from ..models import parse_datetime

__all__ = ["MAX_ID_LENGTH", "WebhookEvent", "WebhookMeta", "WebhookPayloadError"]

MAX_ID_LENGTH = 256
"""The longest ``meta.id`` (and other string ID) accepted; Pipedrive's are UUIDs (36 characters)."""
_MAX_INT = 2**63 - 1  # IDs are database integers: a longer number is not one


class WebhookPayloadError(ValidationError):
    """A delivery's body is not a webhooks v2 payload; ``field`` names the part at fault (``meta.id``)."""


def _text(meta: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = meta.get(name)
    if value is None:
        if required:
            raise WebhookPayloadError(f"meta.{name}", "is required")
        return None
    if not isinstance(value, str):
        raise WebhookPayloadError(f"meta.{name}", f"must be a string, got {type(value).__name__}")
    if required and not value:
        raise WebhookPayloadError(f"meta.{name}", "must not be empty")
    return value


def _id_text(meta: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    """A string ID; a JSON integer is accepted and kept as its decimal string (``5`` -> ``"5"``)."""
    value = meta.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    elif value is not None and not isinstance(value, str):
        raise WebhookPayloadError(f"meta.{name}", f"must be a string or an integer, got {type(value).__name__}")
    if value is None or value == "":
        if required:
            raise WebhookPayloadError(f"meta.{name}", "is required")
        return None
    if len(value) > MAX_ID_LENGTH:
        raise WebhookPayloadError(f"meta.{name}", f"must be at most {MAX_ID_LENGTH} characters")
    return value


def _integer(meta: Mapping[str, Any], name: str) -> int | None:
    """An integer; a decimal string is accepted (``"123"`` -> ``123``), ``null`` and ``""`` are None."""
    value = meta.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= len(str(_MAX_INT)):
        value = int(value)  # ASCII digits only: "²".isdigit() is true but int("²") fails
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT:
        raise WebhookPayloadError(f"meta.{name}", f"must be a non-negative integer, got {_shown(value)}")
    return value


def _flag(meta: Mapping[str, Any], name: str) -> bool | None:
    value = meta.get(name)
    if value is None or isinstance(value, bool):
        return value
    raise WebhookPayloadError(f"meta.{name}", f"must be a boolean, got {type(value).__name__}")


def _shown(value: Any) -> str:
    return repr(value)[:40] if isinstance(value, (str, int, float)) else type(value).__name__


def _object(payload: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    value = payload.get(name)
    if value is None or isinstance(value, dict):
        return value
    raise WebhookPayloadError(name, f"must be an object or null, got {type(value).__name__}")


_KNOWN = frozenset({
    "id", "action", "entity", "entity_id", "company_id", "user_id", "correlation_id", "timestamp", "type",
    "version", "webhook_id", "change_source", "attempt", "is_bulk_edit", "merged_to_id", "merged_from_id",
})


@attrs.frozen
class WebhookMeta:
    """A delivery's ``meta``: what happened (``action`` on ``entity`` ``entity_id``), by whom, and which delivery.

    :param id: the event's ID, the same on each retry of a delivery (exactly-once handling keys on it). Required;
        a JSON integer is kept as its decimal string.
    :param action: ``"create"``, ``"change"``, ``"delete"``, or anything Pipedrive adds.
    :param entity: ``"note"``, ``"person"``, ``"deal"``, ... or anything Pipedrive adds.
    :param entity_id: the changed object's ID, as a string (Pipedrive's v2 form).
    :param company_id: the company, as an integer.
    :param user_id: the user whose action caused the event, as an integer.
    :param correlation_id: the same for the events one request caused.
    :param timestamp: when it happened, as sent (ISO 8601); :attr:`time` parses it.
    :param type: ``"general"`` or ``"application"``.
    :param version: the webhooks version, ``"2.0"``.
    :param webhook_id: the webhook that delivered it.
    :param change_source: ``"app"`` (a user in Pipedrive) or ``"api"`` (an integration, maybe this bot).
    :param attempt: which delivery attempt this is (1, then 2... on Pipedrive's retries).
    :param is_bulk_edit: whether a bulk edit caused it.
    :param merged_to_id: on a merge, the object this one was merged into.
    :param merged_from_id: on a merge, the object merged into this one.
    :param extra: every other meta field, as sent (``webhook_owner_id``, ``host``, ``permitted_user_ids``...).
    """

    id: str
    action: str
    entity: str
    entity_id: str | None = None
    company_id: int | None = None
    user_id: int | None = None
    correlation_id: str | None = None
    timestamp: str | None = None
    type: str | None = None
    version: str | None = None
    webhook_id: str | None = None
    change_source: str | None = None
    attempt: int | None = None
    is_bulk_edit: bool | None = None
    merged_to_id: int | None = None
    merged_from_id: int | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, hash=False)  # hashable by its known fields

    @property
    def time(self) -> datetime | None:
        """:attr:`timestamp` as an aware datetime (UTC when it has no offset); None when absent or unparsable."""
        if not self.timestamp:
            return None
        try:
            return parse_datetime(self.timestamp)
        except ValueError:
            return None

    @classmethod
    def from_json(cls, meta: Any) -> WebhookMeta:
        """Read a payload's ``meta`` object.

        :raises WebhookPayloadError: not an object, no ``id``/``action``/``entity``, or a known field of the
            wrong type; the error names the field (``meta.attempt``).
        """
        if not isinstance(meta, dict):
            raise WebhookPayloadError("meta", f"must be an object, got {type(meta).__name__}")
        return cls(
            id=_id_text(meta, "id", required=True) or "",
            action=_text(meta, "action", required=True) or "",
            entity=_text(meta, "entity", required=True) or "",
            entity_id=_id_text(meta, "entity_id"),
            company_id=_integer(meta, "company_id"),
            user_id=_integer(meta, "user_id"),
            correlation_id=_text(meta, "correlation_id"),
            timestamp=_text(meta, "timestamp"),
            type=_text(meta, "type"),
            version=_text(meta, "version"),
            webhook_id=_id_text(meta, "webhook_id"),
            change_source=_text(meta, "change_source"),
            attempt=_integer(meta, "attempt"),
            is_bulk_edit=_flag(meta, "is_bulk_edit"),
            merged_to_id=_integer(meta, "merged_to_id"),
            merged_from_id=_integer(meta, "merged_from_id"),
            extra={name: value for name, value in meta.items() if name not in _KNOWN},
        )


@attrs.frozen
class WebhookEvent:
    """One webhooks v2 delivery: ``{"meta": {...}, "data": {...}, "previous": {...}}``.

    :param meta: what happened, see :class:`WebhookMeta`.
    :param data: the object after the change, as sent (None on a delete, or when Pipedrive sends none).
    :param previous: only the fields that changed, with their old values (None on a create).
    """

    meta: WebhookMeta
    # Not in the repr (an agent's note, a customer's email), nor the hash (an event is hashable by its meta).
    data: Mapping[str, Any] | None = attrs.field(default=None, repr=False, hash=False)
    previous: Mapping[str, Any] | None = attrs.field(default=None, repr=False, hash=False)

    @classmethod
    def from_json(cls, payload: Any) -> WebhookEvent:
        """Read a decoded delivery body.

        :raises WebhookPayloadError: the payload is not an object, has no ``meta`` or no ``meta.id``, or a known
            field has the wrong type; the error names the field (``meta``, ``meta.id``, ``data``...).
        """
        if not isinstance(payload, dict):
            raise WebhookPayloadError("body", f"must be a JSON object, got {type(payload).__name__}")
        if payload.get("meta") is None:
            raise WebhookPayloadError("meta", "is required")
        return cls(WebhookMeta.from_json(payload["meta"]), _object(payload, "data"), _object(payload, "previous"))
