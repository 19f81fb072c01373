"""Typed values of the Messaging app extension: what a :class:`~.ChannelProvider` returns and receives.

They follow :mod:`pipedrive_channels.models`: frozen, slotted attrs classes whose constructors validate (raising
:class:`~pipedrive_channels.errors.ValidationError` naming the field; strings are strings, never other values
turned into text), unstructured by the shared ``converter``
with the omnichannel spec's field names. Datetimes go out in UTC as ``YYYY-MM-DD HH:MM``; optional fields that are
unset are left out (the spec types them as strings, never null).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Generic, TypeVar

import attrs
from cattrs.gen import make_dict_unstructure_fn, override

from .._validators import (
    aware_datetime,
    boolean,
    http_url,
    identifier,
    members,
    message_text,
    non_empty_string,
    string,
    to_member,
    tuple_of,
)
from ..errors import ValidationError
from ..models import Attachment, MessageStatus, converter

__all__ = [
    "Conversation",
    "ConversationStatus",
    "ExtensionMessage",
    "FilePart",
    "OutgoingMessage",
    "Page",
    "Participant",
    "ParticipantRole",
    "Sender",
    "Template",
    "UninstallEvent",
    "check_participants",
]

_T = TypeVar("_T")


class ConversationStatus(str, enum.Enum):
    """Whether a conversation is still open."""

    OPEN = "open"
    CLOSED = "closed"


class ParticipantRole(str, enum.Enum):
    """``source_user`` is the integration's own user; ``end_user`` is the external person."""

    END_USER = "end_user"
    SOURCE_USER = "source_user"


_STATUSES = members(MessageStatus)
_CONVERSATION_STATUSES = members(ConversationStatus)
_ROLES = members(ParticipantRole)


def _to_status(value: MessageStatus | str) -> MessageStatus:
    return to_member(_STATUSES, "status", value)


def _to_conversation_status(value: ConversationStatus | str) -> ConversationStatus:
    return to_member(_CONVERSATION_STATUSES, "status", value)


def _to_role(value: ParticipantRole | str) -> ParticipantRole:
    return to_member(_ROLES, "role", value)


def _to_attachments(value: Iterable[Attachment]) -> tuple[Attachment, ...]:
    return tuple_of(Attachment, "attachments", value)


def _to_participants(value: Iterable[Participant]) -> tuple[Participant, ...]:
    return tuple_of(Participant, "participants", value)


def _to_messages(value: Iterable[ExtensionMessage]) -> tuple[ExtensionMessage, ...]:
    return tuple_of(ExtensionMessage, "messages", value)


def _to_files(value: Iterable[FilePart]) -> tuple[FilePart, ...]:
    return tuple_of(FilePart, "files", value)


def _to_recipients(value: Iterable[str]) -> tuple[str, ...]:
    return tuple_of(str, "recipient_ids", value)


def _to_tuple(value: Iterable[_T]) -> tuple[_T, ...]:
    return tuple(value)


def _bytes(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bytes):
        raise ValidationError(attribute.name, f"must be bytes, got {type(value).__name__}")


def _integer(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(attribute.name, f"must be an int, got {value!r}")


def _optional_string(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise ValidationError(attribute.name, f"must be a string or None, got {type(value).__name__}")


def _link(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value != "":  # the spec: "Leave it as an empty string if the provider does not have an external chat window"
        http_url(instance, attribute, value)


def _cursor(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValidationError(attribute.name, f"must be a non-empty string or None, got {value!r}")


@attrs.frozen
class Participant:
    """A person in a conversation. ``fetch_avatar``/``avatar_expires`` make Pipedrive call ``getSenderById``."""

    id: str = attrs.field(validator=identifier)
    name: str = attrs.field(validator=non_empty_string)
    role: ParticipantRole = attrs.field(converter=_to_role)
    avatar_url: str | None = attrs.field(default=None, validator=http_url)
    fetch_avatar: bool = attrs.field(default=False, validator=boolean)
    avatar_expires: bool = attrs.field(default=False, validator=boolean)


@attrs.frozen
class ExtensionMessage:
    """A message as the extension endpoints answer it: like :class:`~pipedrive_channels.Message`, but without
    ``channel_id``, ``conversation_id`` or ``conversation_link`` (the spec's message schema has none).

    ``message`` may be empty only when the message has attachments.
    """

    id: str = attrs.field(validator=identifier)
    sender_id: str = attrs.field(validator=identifier)
    message: str = attrs.field(validator=message_text)
    status: MessageStatus = attrs.field(converter=_to_status)
    created_at: datetime = attrs.field(validator=aware_datetime)
    reply_by: datetime | None = attrs.field(default=None, validator=aware_datetime)
    attachments: tuple[Attachment, ...] = attrs.field(default=(), converter=_to_attachments)


def check_participants(participants: tuple[Participant, ...]) -> None:
    """Raise :class:`ValidationError` unless there is exactly one ``source_user`` and at least one ``end_user``."""
    sources = sum(1 for p in participants if p.role is ParticipantRole.SOURCE_USER)
    if sources != 1:
        raise ValidationError("participants", f"must hold exactly one source_user, got {sources}")
    if len(participants) == sources:
        raise ValidationError("participants", "must hold at least one end_user")


@attrs.frozen
class Conversation:
    """A conversation with (a page of) its messages and its participants.

    ``link`` is the conversation's page at the provider, or ``""``. ``next_messages_cursor`` is handed back as
    ``after`` to :meth:`~.ChannelProvider.get_conversation` for older messages; ``None`` when there are no more.
    """

    id: str = attrs.field(validator=identifier)
    link: str = attrs.field(validator=_link)
    status: ConversationStatus = attrs.field(converter=_to_conversation_status)
    seen: bool = attrs.field(validator=boolean)
    participants: tuple[Participant, ...] = attrs.field(converter=_to_participants)
    messages: tuple[ExtensionMessage, ...] = attrs.field(default=(), converter=_to_messages)
    next_messages_cursor: str | None = attrs.field(default=None, validator=_cursor)

    def __attrs_post_init__(self) -> None:
        check_participants(self.participants)


@attrs.frozen
class Sender:
    """A sender as ``getSenderById`` answers it (all three fields are required by the spec)."""

    id: str = attrs.field(validator=identifier)
    name: str = attrs.field(validator=non_empty_string)
    avatar_url: str = attrs.field(validator=http_url)


@attrs.frozen
class Template:
    """A message template (only approved WhatsApp templates are supported by Pipedrive)."""

    id: str = attrs.field(validator=identifier)
    name: str = attrs.field(validator=non_empty_string)
    content: str = attrs.field(validator=non_empty_string)
    language: str = attrs.field(validator=non_empty_string)


@attrs.frozen
class FilePart:
    """One file of a ``postMessage`` form: its file name, its declared MIME type and its bytes."""

    name: str = attrs.field(validator=string)
    content_type: str = attrs.field(validator=string)
    data: bytes = attrs.field(validator=_bytes, repr=lambda data: f"<{len(data)} bytes>")

    @property
    def size(self) -> int:
        """The file's size in bytes."""
        return len(self.data)


@attrs.frozen
class OutgoingMessage:
    """The parsed ``postMessage`` form: what an agent sent from Pipedrive's inbox.

    ``sender_id`` is the ``source_user``; ``recipient_ids`` are the end users (the form's comma-separated
    ``recipientIds``); ``files`` are the attached files in the order they were sent.
    """

    message: str = attrs.field(validator=string)
    sender_id: str = attrs.field(validator=identifier)
    conversation_id: str = attrs.field(validator=identifier)
    recipient_ids: tuple[str, ...] = attrs.field(default=(), converter=_to_recipients)
    files: tuple[FilePart, ...] = attrs.field(default=(), converter=_to_files)


@attrs.frozen
class Page(Generic[_T]):
    """One page of items and the cursor for the next one (``None``: this is the last page).

    Pipedrive sends ``after`` back unchanged to fetch the next page.
    """

    items: tuple[_T, ...] = attrs.field(converter=_to_tuple)
    after: str | None = attrs.field(default=None, validator=_cursor)


@attrs.frozen
class UninstallEvent:
    """The body of the OAuth uninstall callback (``DELETE`` to the app's callback URL)."""

    client_id: str = attrs.field(validator=non_empty_string)
    company_id: int = attrs.field(validator=_integer)
    user_id: int = attrs.field(validator=_integer)
    timestamp: str | None = attrs.field(default=None, validator=_optional_string)
    """As Pipedrive sent it (the docs do not fix its format)."""


def _drop_none(value: dict[str, Any]) -> dict[str, Any]:
    return {key: item for key, item in value.items() if item is not None}


def _unstructure_attachments(items: tuple[Attachment, ...]) -> list[dict[str, Any]]:
    # The omnichannel schema types name/size/preview_url as plain strings/numbers: leave unset ones out.
    return [_drop_none(converter.unstructure(item)) for item in items]


converter.register_unstructure_hook(
    ExtensionMessage,
    make_dict_unstructure_fn(
        ExtensionMessage,
        converter,
        reply_by=override(omit_if_default=True),
        attachments=override(unstruct_hook=_unstructure_attachments),
    ),
)
converter.register_unstructure_hook(
    Participant, make_dict_unstructure_fn(Participant, converter, avatar_url=override(omit_if_default=True))
)
converter.register_unstructure_hook(
    Conversation,
    make_dict_unstructure_fn(Conversation, converter, next_messages_cursor=override(omit_if_default=True)),
)
