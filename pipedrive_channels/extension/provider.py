"""``ChannelProvider``, the class a bot author subclasses, and ``ProviderError``, the errors it may answer."""

from __future__ import annotations

import abc
import enum
from datetime import datetime, timezone
from typing import Any

from ..errors import ValidationError
from .models import Conversation, ExtensionMessage, OutgoingMessage, Page, Sender, Template, UninstallEvent

__all__ = ["OPTIONAL_METHODS", "ChannelProvider", "ErrorCode", "ProviderError", "implemented"]


class ErrorCode(str, enum.Enum):
    """The error codes Pipedrive understands from an integration (``data.code`` of an error answer)."""

    INVALID_BODY = "INVALID_BODY"
    BAD_REQUEST = "BAD_REQUEST"
    UNAUTHORIZED = "UNAUTHORIZED"
    ACCOUNT_SUSPENDED = "ACCOUNT_SUSPENDED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"


_STATUS = {
    ErrorCode.INVALID_BODY: 400,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.ACCOUNT_SUSPENDED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.RATE_LIMIT_EXCEEDED: 429,
}


class ProviderError(Exception):
    """Raise it from a :class:`ChannelProvider` method to answer Pipedrive with one of the spec's errors.

    The answer is ``{"success": false, "data": {"message": message, "code": code}}`` with HTTP ``status``
    (default: the code's status in the spec: 400, 401, 403, 404 or 429). ``retry_by`` (an aware datetime) is
    added as ``data.retry_by`` and a ``Retry-After`` header; give it with ``RATE_LIMIT_EXCEEDED``.
    """

    def __init__(
        self, code: ErrorCode | str, message: str, status: int | None = None, retry_by: datetime | None = None
    ) -> None:
        try:
            self.code = ErrorCode(code)
        except ValueError:
            raise ValidationError("code", f"must be one of {', '.join(c.value for c in ErrorCode)}") from None
        if status is None:
            status = _STATUS[self.code]
        if not 400 <= status <= 499:
            raise ValidationError("status", f"must be a 4xx status, got {status!r}")
        if retry_by is not None and retry_by.utcoffset() is None:
            raise ValidationError("retry_by", "must be timezone-aware")
        super().__init__(f"{self.code.value}: {message}")
        self.message = message
        self.status = status
        self.retry_by = retry_by

    def body(self) -> dict[str, Any]:
        """The JSON answer, in the spec's error shape."""
        data: dict[str, Any] = {"message": self.message, "code": self.code.value}
        if self.retry_by is not None:
            data["retry_by"] = self.retry_by.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"success": False, "data": data}


class ChannelProvider(abc.ABC):
    """What an integration implements; :func:`~.create_app` serves it to Pipedrive.

    The three abstract methods are required. The optional ones (``get_sender``, ``get_templates``,
    ``get_message``, ``delete_channel``, ``on_uninstall``) are served, and listed in the manifest, only when a
    subclass overrides them. Every ID is the provider's own. Raise :class:`ProviderError` to answer an error;
    any other exception becomes a generic 500 (logged with its trace).
    """

    @abc.abstractmethod
    async def get_conversations(
        self, channel_id: str, limit: int, messages_limit: int, after: str | None
    ) -> Page[Conversation]:
        """A page of at most ``limit`` conversations (each with at most ``messages_limit`` messages).

        ``after`` is ``None`` for the first page, else the ``after`` of the previous page.
        """

    @abc.abstractmethod
    async def get_conversation(
        self, channel_id: str, conversation_id: str, messages_limit: int, after: str | None
    ) -> Conversation:
        """One conversation with at most ``messages_limit`` messages.

        ``after`` is ``None`` for the newest messages, else a ``next_messages_cursor`` this method returned.
        """

    @abc.abstractmethod
    async def post_message(self, channel_id: str, outgoing: OutgoingMessage) -> str:
        """Send what an agent typed in Pipedrive; return the new message's provider ID.

        Push its later status changes with :meth:`~pipedrive_channels.ChannelsClient.receive_message` (same ID).
        """

    async def get_sender(self, channel_id: str, sender_id: str) -> Sender:
        """Optional: a participant's current name and avatar (``getSenderById``)."""
        raise NotImplementedError

    async def get_templates(self, channel_id: str) -> list[Template]:
        """Optional: the channel's message templates (``getTemplates``)."""
        raise NotImplementedError

    async def get_message(self, channel_id: str, message_id: str, conversation_id: str | None) -> ExtensionMessage:
        """Optional: one message with fresh attachment links (``getMessageById``).

        ``conversation_id`` is ``None`` when Pipedrive used the URL form without it.
        """
        raise NotImplementedError

    async def delete_channel(self, channel_id: str) -> None:
        """Optional: the user removed the channel in Pipedrive (``deleteChannelById``)."""
        raise NotImplementedError

    async def on_uninstall(self, event: UninstallEvent) -> None:
        """Optional: the app was uninstalled (the OAuth uninstall callback)."""
        raise NotImplementedError


OPTIONAL_METHODS = ("get_sender", "get_templates", "get_message", "delete_channel", "on_uninstall")
"""The :class:`ChannelProvider` methods a subclass may leave out."""


def implemented(provider: ChannelProvider | type[ChannelProvider], method: str) -> bool:
    """Whether ``provider`` (an instance or a subclass) overrides the optional ``method``."""
    cls = provider if isinstance(provider, type) else type(provider)
    return getattr(cls, method, None) is not getattr(ChannelProvider, method)
