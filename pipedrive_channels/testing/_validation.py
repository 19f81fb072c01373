"""The fake's own checks of request bodies, written from Pipedrive's answers, never from the SDK's models.

They are the oracle the SDK is tested against, so they share no code with it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from ._envelopes import JsonDict

ADD_CHANNEL_ERROR = (
    "Expected { name: string; avatar_url?: string; provider_channel_id: string; }, but was incompatible"
)
RECEIVE_ERROR = (
    "Expected { id: string; sender_id: string; conversation_id: string; conversation_link?: string; "
    "channel_id: string; created_at: string; message: string; status: unknown; attachments: { id: string; "
    "type: string; name: string | null; size: number | null; url: string; preview_url: string | null; }[]; "
    "reply_by?: string | null; }, but was incompatible"
)
PROVIDER_TYPES = frozenset({"facebook", "whatsapp", "other"})
_STATUSES = frozenset({"sent", "delivered", "read", "failed"})
# "YYYY-MM-DD HH:MM" (documented), "YYYY-MM-DD HH:MM:SS" and ISO 8601 ("2022-03-01T07:58:35.449Z").
_DATE = re.compile(r"(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d)(?::(\d\d)(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?")


def valid_channel(body: Any) -> bool:
    """Whether ``body`` is an add-channel request Pipedrive accepts."""
    if not isinstance(body, dict):
        return False
    provider_type = body.get("provider_type", "other")
    return (
        _text(body.get("name"))
        and _text(body.get("provider_channel_id"))
        and _optional(body, "avatar_url", str)
        and _optional(body, "template_support", bool)
        and isinstance(provider_type, str)
        and provider_type in PROVIDER_TYPES
    )


def valid_message(body: Any) -> bool:
    """Whether ``body`` is a receive-message request Pipedrive accepts."""
    if not isinstance(body, dict):
        return False
    status = body.get("status")
    reply_by = body.get("reply_by")
    attachments = body.get("attachments", [])  # the spec makes it optional, the live validator may not
    return (
        all(_text(body.get(key)) for key in ("id", "channel_id", "sender_id", "conversation_id"))
        and isinstance(body.get("message"), str)
        and isinstance(status, str)
        and status in _STATUSES
        and _date(body.get("created_at"))
        and (reply_by is None or _date(reply_by))
        and _optional(body, "conversation_link", str)
        and isinstance(attachments, list)
        and all(_valid_attachment(item) for item in attachments)
    )


def _valid_attachment(item: Any) -> bool:
    if not isinstance(item, dict):
        return False
    size = item.get("size")
    return (
        all(isinstance(item.get(key), str) for key in ("id", "type", "url"))
        and isinstance(item.get("name"), (str, type(None)))
        and isinstance(item.get("preview_url"), (str, type(None)))
        and (size is None or (isinstance(size, (int, float)) and not isinstance(size, bool)))
        and _optional(item, "link_expires", bool)
    )


def _text(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _optional(body: JsonDict, key: str, *types: type) -> bool:
    return key not in body or isinstance(body[key], types)


def _date(value: object) -> bool:
    match = _DATE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(part or 0) for part in match.groups())
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError:  # e.g. month 13
        return False
    return True
