"""Typed values of the Channels API: frozen, slotted attrs classes and the one converter for them.

Constructing a model validates it, so bad input raises :class:`~pipedrive_channels.errors.ValidationError`
(naming the field) before anything is sent. ``converter`` does all (un)structuring: datetimes are sent in
UTC as ``YYYY-MM-DD HH:MM`` (the format the spec gives) and parsed from that form or ISO 8601; unknown
answer fields are ignored and missing optional ones become ``None``. Structuring never coerces: see
``converter``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._validators import (
    aware_datetime,
    boolean,
    fits_in_utc,
    http_url,
    identifier,
    members,
    message_text,
    non_empty_string,
    require_identifier,
    to_member,
    tuple_of,
)
from .errors import ValidationError

__all__ = [
    "ApiResponse",
    "Attachment",
    "Channel",
    "Message",
    "MessageStatus",
    "NewChannel",
    "ProviderType",
    "converter",
    "format_datetime",
    "parse_datetime",
    "require_identifier",
]


class ProviderType(str, enum.Enum):
    """Which icon Pipedrive shows next to the channel's conversations."""

    FACEBOOK = "facebook"
    WHATSAPP = "whatsapp"
    OTHER = "other"


class MessageStatus(str, enum.Enum):
    """Delivery status of a message; sending the same message ``id`` again updates it."""

    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"


_STATUSES = members(MessageStatus)
_PROVIDER_TYPES = members(ProviderType)


def _to_status(value: MessageStatus | str) -> MessageStatus:
    return to_member(_STATUSES, "status", value)


def _to_provider_type(value: ProviderType | str) -> ProviderType:
    return to_member(_PROVIDER_TYPES, "provider_type", value)


def _size(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ValidationError(attribute.name, f"must be a finite non-negative number, got {value!r}")


@attrs.frozen
class Attachment:
    """A file attached to a message: ``type`` is its MIME type; ``url`` must stay reachable by Pipedrive.

    Set ``link_expires=True`` when ``url`` is short-lived: Pipedrive then re-fetches the message through
    the extension's ``getMessageById`` endpoint for a fresh link.
    """

    id: str = attrs.field(validator=identifier)
    type: str = attrs.field(validator=non_empty_string)
    url: str = attrs.field(validator=http_url)
    name: str | None = None
    size: float | None = attrs.field(default=None, validator=_size)
    preview_url: str | None = attrs.field(default=None, validator=http_url)
    link_expires: bool = False


def _to_attachments(value: Iterable[Attachment]) -> tuple[Attachment, ...]:
    return tuple_of(Attachment, "attachments", value)


@attrs.frozen
class Message:
    """A message as ``receive_message`` sends it (and Pipedrive echoes it).

    Every ID is the provider's own: ``channel_id`` is the ``provider_channel_id`` the channel was added
    with. ``message`` may be empty only when the message has attachments.
    """

    id: str = attrs.field(validator=identifier)
    channel_id: str = attrs.field(validator=identifier)
    sender_id: str = attrs.field(validator=identifier)
    conversation_id: str = attrs.field(validator=identifier)
    message: str = attrs.field(validator=message_text)
    status: MessageStatus = attrs.field(converter=_to_status)
    created_at: datetime = attrs.field(validator=aware_datetime)
    reply_by: datetime | None = attrs.field(default=None, validator=aware_datetime)
    conversation_link: str | None = attrs.field(default=None, validator=http_url)
    attachments: tuple[Attachment, ...] = attrs.field(default=(), converter=_to_attachments)


@attrs.frozen
class NewChannel:
    """The body ``add_channel`` sends: a channel to register under the provider's own ID."""

    name: str = attrs.field(validator=non_empty_string)
    provider_channel_id: str = attrs.field(validator=identifier)
    avatar_url: str | None = attrs.field(default=None, validator=http_url)
    template_support: bool = attrs.field(default=False, validator=boolean)
    provider_type: ProviderType = attrs.field(default=ProviderType.OTHER, converter=_to_provider_type)


@attrs.frozen
class Channel:
    """A registered channel, as ``add_channel`` answers it.

    ``id`` is Pipedrive's internal ID; every later call names the channel by ``provider_channel_id``.
    """

    id: str
    name: str
    provider_channel_id: str
    avatar_url: str | None = None
    marketplace_client_id: str | None = None
    pd_company_id: int | None = None
    pd_user_id: int | None = None
    created_at: datetime | None = None
    provider_type: ProviderType | None = None
    template_support: bool | None = None


@attrs.frozen
class ApiResponse:
    """A generic call's answer: Pipedrive's envelope taken apart.

    ``data`` and ``additional_data`` are the envelope's fields as decoded JSON (``None`` when absent);
    ``headers`` are the response headers (rate-limit headers among them).
    """

    status: int
    data: Any
    additional_data: Any
    headers: Mapping[str, str] = attrs.field(repr=False)


def parse_datetime(value: str) -> datetime:
    """Parse ``YYYY-MM-DD HH:MM[:SS]`` or ISO 8601 (``Z`` allowed); a value without offset is UTC.

    Raises ``ValueError`` for anything else, including a time that has no UTC form (year 1 at ``+05:00``).
    """
    if len(value) in (16, 19) and value[10] in " T":
        value += "+00:00"  # the spec's form (UTC, no offset): cheaper than replace(tzinfo=) afterwards
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        # Python 3.10's fromisoformat does not take "Z"; 3.11 does and never gets here for it.
        text = value.strip()
        if not text.endswith(("Z", "z")):
            raise
        parsed = datetime.fromisoformat(text[:-1] + "+00:00")
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    if parsed.tzinfo is not timezone.utc and not fits_in_utc(parsed):
        raise ValueError(f"{value!r} is out of range in UTC")
    return parsed


def format_datetime(value: datetime) -> str:
    """Format an aware datetime as the spec asks: UTC, ``YYYY-MM-DD HH:MM``."""
    if value.tzinfo is not timezone.utc:
        value = value.astimezone(timezone.utc)
    # One %-format of five fields: a third cheaper than isoformat(" ", "minutes") (which formats the offset too, then
    # sliced off) and than an f-string's five format specs.
    return "%04d-%02d-%02d %02d:%02d" % (value.year, value.month, value.day, value.hour, value.minute)  # noqa: UP031


# The leaf hooks raise TypeError/ValueError without a field name; _structure_model names the field.
def _exactly(cls: type, expected: str) -> Callable[[Any, type], Any]:
    """A hook taking only values of type ``cls`` itself: no subclass (``True`` is not an int), no conversion."""

    def structure(value: Any, _: type) -> Any:
        if type(value) is not cls:
            raise TypeError(f"must be {expected}, got {_json_type(value)}")
        return value

    return structure


def _structure_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"must be a finite number, got {_json_type(value)}")
    return value


def _structure_datetime(value: Any, _: type) -> datetime:
    if isinstance(value, datetime):
        return value
    if type(value) is not str:
        raise TypeError(f"must be a date-time string, got {_json_type(value)}")
    return parse_datetime(value)


def _json_type(value: Any) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
             dict: "an object", list: "an array"}
    return names.get(type(value), type(value).__name__)


def _structure_attachments(items: Any, _: type) -> tuple[Attachment, ...]:
    if not isinstance(items, list | tuple):
        raise TypeError(f"must be an array, got {_json_type(items)}")
    attachments = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ValidationError(f"attachments[{index}]", f"must be an object, got {_json_type(item)}")
        try:
            attachments.append(converter.structure(item, Attachment))
        except ValidationError as error:
            raise ValidationError(f"attachments[{index}].{error.field}", error.reason) from None
    return tuple(attachments)


def _unstructure_attachments(items: tuple[Attachment, ...]) -> list[Any]:
    # Most messages have none, and cattrs' generic hook builds a generator even for an empty tuple.
    return [converter.unstructure(item) for item in items] if items else []


_STRUCTURE_ERRORS = (KeyError, TypeError, ValueError, OverflowError)


def _structure_model(cls: type[Any]) -> Any:
    """The structure function of an attrs class: the generated one, and on failure a ValidationError naming the field.

    The generated function has no per-field bookkeeping (it runs once per message and answer); only when it fails
    are the fields structured one by one again, to find the one at fault.
    """
    attrs.resolve_types(cls)
    generated = make_dict_structure_fn(cls, converter, _cattrs_prefer_attrib_converters=True, **_structured_first(cls))

    def structure(data: Any, _: type) -> Any:
        try:
            return generated(data, cls)
        except ValidationError:
            raise
        except _STRUCTURE_ERRORS as error:
            raise _field_error(cls, data, error) from None

    return structure


def _structured_first(cls: type[Any]) -> dict[str, Any]:
    """The fields whose attrs converter takes only built values (a tuple of models): structured before it runs.

    Any other converter (an enum's) takes the wire value itself, and structuring it first would convert it twice.
    """
    return {
        field.name: override(struct_hook=converter.get_structure_hook(field.type))
        for field in attrs.fields(cls)
        if field.converter is not None and not (isinstance(field.type, type) and issubclass(field.type, enum.Enum))
    }


def _field_error(cls: type[Any], data: Any, error: Exception) -> ValidationError:
    if not isinstance(data, Mapping):
        return ValidationError(cls.__name__, f"must be an object, got {_json_type(data)}")
    for field in attrs.fields(cls):
        if field.name not in data:
            if field.default is attrs.NOTHING:
                return ValidationError(field.name, "is required")
            continue
        try:
            converter.structure(data[field.name], field.type)
        except ValidationError as inner:
            return inner
        except _STRUCTURE_ERRORS as inner:
            return ValidationError(field.name, str(inner))
    return ValidationError(cls.__name__, f"{type(error).__name__}: {error}")


converter = cattrs.Converter(detailed_validation=False)
"""The converter for every model: its (un)structure functions are generated once per class.

Structuring is strict, JSON type for Python type: a ``str`` field takes only a string (never a number, ``null``,
object or array turned into text), an ``int`` field only an integer, a ``float`` field only a finite number, a
``bool`` field only ``true``/``false``, a datetime only a date-time string that has a UTC form. IDs are strings,
as the spec types them: a numeric ID is refused, not converted. Anything else raises
:class:`~pipedrive_channels.errors.ValidationError` naming the field (``attachments[0].url`` for a nested one,
the class name when the value itself is not an object), and so does a missing required field.
"""

converter.register_structure_hook(str, _exactly(str, "a string"))
converter.register_structure_hook(int, _exactly(int, "an integer"))
converter.register_structure_hook(float, _structure_float)
converter.register_structure_hook(bool, _exactly(bool, "true or false"))
converter.register_structure_hook(datetime, _structure_datetime)
converter.register_structure_hook_func(lambda cls: cls == tuple[Attachment, ...], _structure_attachments)
converter.register_structure_hook(MessageStatus, lambda value, _: _to_status(value))
converter.register_structure_hook(ProviderType, lambda value, _: _to_provider_type(value))
converter.register_structure_hook_factory(attrs.has, _structure_model)
converter.register_unstructure_hook(datetime, format_datetime)
# Pipedrive's validator types reply_by and conversation_link as optional keys, and conversation_link as a
# non-null string: leave them out when unset. Attachment's name/size/preview_url are `T | null` there, so
# they are always sent; link_expires only when set.
converter.register_unstructure_hook(
    Message,
    make_dict_unstructure_fn(
        Message,
        converter,
        reply_by=override(omit_if_default=True),
        conversation_link=override(omit_if_default=True),
        attachments=override(unstruct_hook=_unstructure_attachments),
    ),
)
converter.register_unstructure_hook(
    NewChannel, make_dict_unstructure_fn(NewChannel, converter, avatar_url=override(omit_if_default=True))
)
converter.register_unstructure_hook(
    Attachment,
    make_dict_unstructure_fn(Attachment, converter, link_expires=override(omit_if_default=True)),
)
