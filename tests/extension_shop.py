"""A provider implementing every endpoint (``Shop``), one with only the required ones (``Minimal``), and the app
serving them on a throwaway test server, as Pipedrive drives it."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pipedrive_channels import Attachment, MessageStatus
from pipedrive_channels.extension import (
    ChannelProvider,
    Conversation,
    ErrorCode,
    ExtensionMessage,
    OutgoingMessage,
    Page,
    Participant,
    ProviderError,
    Sender,
    Template,
    UninstallEvent,
    create_app,
)

CLIENT_ID, CLIENT_SECRET = "pd-client", "pd-secret"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()}
T0 = datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc)
Http = TestClient[web.Request, web.Application]
BASE = "/pipedrive/channels/ch1"
ROUTES = [
    ("GET", f"{BASE}/conversations"), ("GET", f"{BASE}/conversations/c1"), ("POST", f"{BASE}/messages"),
    ("GET", f"{BASE}/messages/m1"), ("GET", f"{BASE}/conversations/c1/messages/m1"), ("GET", f"{BASE}/senders/s"),
    ("GET", f"{BASE}/templates"), ("DELETE", BASE), ("DELETE", "/pipedrive/callback"), ("GET", "/pipedrive/nope"),
]
"""Every route of the app, the three required endpoints first."""


def shop_message(n: int, conversation: str) -> ExtensionMessage:
    return ExtensionMessage(
        id=f"{conversation}-m{n}",
        sender_id="agent" if n % 2 else "alice",
        message=f"hello {n}",
        status=MessageStatus.READ,
        created_at=T0 + timedelta(minutes=n),
        reply_by=T0 + timedelta(days=1) if n == 0 else None,
        attachments=[Attachment("a1", "image/png", "https://files.example.com/a1.png", link_expires=True)]
        if n == 0 else (),
    )


def shop_conversation(cid: str, messages: list[ExtensionMessage], cursor: str | None) -> Conversation:
    return Conversation(
        id=cid,
        link=f"https://chat.example.com/{cid}",
        status="open",
        seen=False,
        participants=[
            Participant("agent", "Agent Smith", "source_user"),
            Participant("alice", "Alice", "end_user", avatar_url="https://img.example.com/alice.png",
                        avatar_expires=True),
        ],
        messages=messages,
        next_messages_cursor=cursor,
    )


class Shop(ChannelProvider):
    """Five conversations of seven messages each on channel ``ch1``; offsets are the cursors."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail_with: BaseException | None = None
        self.answer: Any = None  # when set, returned instead of the real answer (to test the validation)
        self.conversations = {f"c{i}": [shop_message(n, f"c{i}") for n in range(7)] for i in range(5)}

    def _enter(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if self.fail_with is not None:
            raise self.fail_with

    def _page(self, cid: str, limit: int, after: str | None) -> Conversation:
        start = int(after or 0)
        messages = self.conversations[cid][start : start + limit]
        more = start + limit < len(self.conversations[cid])
        return shop_conversation(cid, messages, str(start + limit) if more else None)

    async def get_conversations(
        self, channel_id: str, limit: int, messages_limit: int, after: str | None
    ) -> Page[Conversation]:
        self._enter("get_conversations", channel_id, limit, messages_limit, after)
        if self.answer is not None:
            return self.answer  # type: ignore[no-any-return]
        ids = sorted(self.conversations)
        start = int(after or 0)
        items = [self._page(cid, messages_limit, None) for cid in ids[start : start + limit]]
        return Page(items, str(start + limit) if start + limit < len(ids) else None)

    async def get_conversation(
        self, channel_id: str, conversation_id: str, messages_limit: int, after: str | None
    ) -> Conversation:
        self._enter("get_conversation", channel_id, conversation_id, messages_limit, after)
        if self.answer is not None:
            return self.answer  # type: ignore[no-any-return]
        if conversation_id not in self.conversations:
            raise ProviderError(ErrorCode.NOT_FOUND, f"no conversation {conversation_id}")
        return self._page(conversation_id, messages_limit, after)

    async def post_message(self, channel_id: str, outgoing: OutgoingMessage) -> str:
        self._enter("post_message", channel_id, outgoing)
        return self.answer if self.answer is not None else "msg-1"

    async def get_message(self, channel_id: str, message_id: str, conversation_id: str | None) -> ExtensionMessage:
        self._enter("get_message", channel_id, message_id, conversation_id)
        return shop_message(0, conversation_id or "c0")

    async def get_sender(self, channel_id: str, sender_id: str) -> Sender:
        self._enter("get_sender", channel_id, sender_id)
        return Sender(sender_id, "Alice", "https://img.example.com/alice.png")

    async def get_templates(self, channel_id: str) -> list[Template]:
        self._enter("get_templates", channel_id)
        return [Template("t1", "welcome", "Hello {{1}}", "en"), Template("t2", "bye", "Bye", "en_US")]

    async def delete_channel(self, channel_id: str) -> None:
        self._enter("delete_channel", channel_id)

    async def on_uninstall(self, event: UninstallEvent) -> None:
        self._enter("on_uninstall", event)


class Minimal(ChannelProvider):
    """Only the three required endpoints."""

    async def get_conversations(
        self, channel_id: str, limit: int, messages_limit: int, after: str | None
    ) -> Page[Conversation]:
        return Page([])

    async def get_conversation(
        self, channel_id: str, conversation_id: str, messages_limit: int, after: str | None
    ) -> Conversation:
        raise ProviderError("NOT_FOUND", "nothing here")

    async def post_message(self, channel_id: str, outgoing: OutgoingMessage) -> str:
        return "m"


@pytest.fixture
def shop() -> Shop:
    """A fresh Shop, its calls unrecorded yet."""
    return Shop()


async def serve(provider: ChannelProvider, **options: Any) -> Http:
    """A started test client of ``create_app(provider, ...)``; the caller closes it."""
    client: Http = TestClient(
        TestServer(create_app(provider, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, **options))
    )
    await client.start_server()
    return client


@pytest.fixture
async def http(shop: Shop) -> AsyncIterator[Http]:
    """A test client of the app serving ``shop``."""
    client = await serve(shop)
    yield client
    await client.close()
