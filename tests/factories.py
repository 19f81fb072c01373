"""The messages the tests send, built one way: as ``Message`` values and as the JSON Pipedrive receives."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from pipedrive_channels import Message, MessageStatus

TOKEN = "token"
"""The bearer token the shared ``fake`` fixture accepts."""
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
"""When ``message(0)`` was created; ``message(i)`` is ``i`` minutes later."""
STATUSES = (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ)


def message(
    index: int, status: MessageStatus = MessageStatus.SENT, *, channel: str = "ch", conversations: int = 10
) -> Message:
    """Message ``m-{index}`` of ``channel``, in conversation ``c-{index % conversations}``."""
    return Message(id=f"m-{index}", channel_id=channel, sender_id="customer",
                   conversation_id=f"c-{index % conversations}", message=f"text {index}", status=status,
                   created_at=START + timedelta(minutes=index))


def history(n: int, *, channel: str = "ch", conversations: int = 10, updates: bool = True) -> Iterator[Message]:
    """``message(0)`` to ``message(n - 1)``, each (when ``updates``) followed by its delivered and read updates."""
    for index in range(n):
        for status in STATUSES if updates else STATUSES[:1]:
            yield message(index, status, channel=channel, conversations=conversations)


def wire_message(index: int, *, channel: str = "ch", conversations: int = 10, **changes: Any) -> dict[str, Any]:
    """``message(index)`` as JSON, written out by hand (a receive body, a line of a back-fill's input), with
    ``changes`` applied."""
    return {
        "id": f"m-{index}", "channel_id": channel, "sender_id": "customer",
        "conversation_id": f"c-{index % conversations}", "message": f"text {index}", "status": "sent",
        "created_at": f"{START + timedelta(minutes=index):%Y-%m-%d %H:%M}", "attachments": [], **changes,
    }
