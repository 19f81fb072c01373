"""An example integration: a bot that echoes every message an agent sends from Pipedrive.

When Pipedrive posts a message, the bot answers with the new message's ID at once; then, in the background, it
pushes the message's status updates (``sent`` -> ``delivered`` -> ``read``, receives of the same ID) and an
echo reply from the recipient through :meth:`~pipedrive_channels.ChannelsClient.receive_message`.

Run it with ``python -m pipedrive_channels.extension.echo_bot --port 8080``. It reads ``PIPEDRIVE_CLIENT_ID`` and
``PIPEDRIVE_CLIENT_SECRET`` (what Pipedrive authenticates with), ``PIPEDRIVE_ACCESS_TOKEN`` (to push messages) and
optionally ``PIPEDRIVE_BASE_URL``. Print its manifest with
``python -m pipedrive_channels manifest --base-url URL --provider pipedrive_channels.extension.echo_bot:EchoBot``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timezone

from aiohttp import web

from ..client import ChannelsClient
from ..models import Message, MessageStatus
from .app import create_app
from .models import (
    Conversation,
    ConversationStatus,
    ExtensionMessage,
    OutgoingMessage,
    Page,
    Participant,
    ParticipantRole,
)
from .provider import ChannelProvider, ErrorCode, ProviderError

__all__ = ["EchoBot", "main"]

_log = logging.getLogger("pipedrive_channels.extension.echo_bot")
_STATUSES = (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ)


class EchoBot(ChannelProvider):
    """A :class:`ChannelProvider` keeping its conversations in memory and echoing what agents send.

    :param client: the client the bot pushes messages with (opened and closed by the caller).
    :param status_delay: seconds between the status updates and before the reply.
    """

    def __init__(self, client: ChannelsClient, *, status_delay: float = 0.0) -> None:
        self.client = client
        """The client messages are pushed with."""
        self.status_delay = status_delay
        """Seconds between the status updates and before the reply."""
        self.conversations: dict[tuple[str, str], Conversation] = {}
        """The conversations seen so far, by ``(channel_id, conversation_id)``, messages newest first."""
        self._tasks: set[asyncio.Task[None]] = set()

    async def get_conversations(
        self, channel_id: str, limit: int, messages_limit: int, after: str | None
    ) -> Page[Conversation]:
        """The channel's conversations, ``limit`` at a time; the cursor is the offset of the next page."""
        ours = [c for (channel, _), c in sorted(self.conversations.items()) if channel == channel_id]
        start = int(after) if after and after.isdigit() else 0
        chunk = ours[start : start + limit]
        items = [_first_messages(c, messages_limit, 0) for c in chunk]
        more = start + limit < len(ours)
        return Page(items, str(start + limit) if more else None)

    async def get_conversation(
        self, channel_id: str, conversation_id: str, messages_limit: int, after: str | None
    ) -> Conversation:
        """One conversation; ``after`` is the offset of the next (older) messages."""
        conversation = self.conversations.get((channel_id, conversation_id))
        if conversation is None:
            raise ProviderError(ErrorCode.NOT_FOUND, f"conversation {conversation_id} not found")
        start = int(after) if after and after.isdigit() else 0
        return _first_messages(conversation, messages_limit, start)

    async def post_message(self, channel_id: str, outgoing: OutgoingMessage) -> str:
        """Record the agent's message, answer its ID, and echo it back in the background."""
        message_id = f"out-{uuid.uuid4()}"
        now = datetime.now(timezone.utc)
        text = outgoing.message or f"({len(outgoing.files)} file(s))"
        posted = ExtensionMessage(message_id, outgoing.sender_id, text, MessageStatus.SENT, now)
        self._remember(channel_id, outgoing, posted)
        task = asyncio.create_task(self._echo(channel_id, outgoing, message_id, text, now))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return message_id

    async def wait_idle(self) -> None:
        """Wait until every background echo has been pushed (or has failed, which is logged)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel the background echoes still running."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _remember(self, channel_id: str, outgoing: OutgoingMessage, message: ExtensionMessage) -> None:
        key = (channel_id, outgoing.conversation_id)
        old = self.conversations.get(key)
        if old is None:
            people = [Participant(outgoing.sender_id, "Agent", ParticipantRole.SOURCE_USER)]
            people += [Participant(r, r, ParticipantRole.END_USER) for r in outgoing.recipient_ids or ("end-user",)]
            old = Conversation(outgoing.conversation_id, "", ConversationStatus.OPEN, True, people)
        messages = (message, *(m for m in old.messages if m.id != message.id))
        self.conversations[key] = Conversation(old.id, old.link, old.status, old.seen, old.participants, messages)

    async def _echo(self, channel_id: str, outgoing: OutgoingMessage, message_id: str, text: str, at: datetime) -> None:
        try:
            for status in _STATUSES:
                await self._push(message_id, channel_id, outgoing.conversation_id, outgoing.sender_id, text, status, at)
                await asyncio.sleep(self.status_delay)
            recipient = outgoing.recipient_ids[0] if outgoing.recipient_ids else "end-user"
            names = ", ".join(f.name for f in outgoing.files)
            reply = f"Echo: {outgoing.message}" + (f" [files: {names}]" if names else "")
            reply_id = f"echo-{uuid.uuid4()}"
            now = datetime.now(timezone.utc)
            await self._push(reply_id, channel_id, outgoing.conversation_id, recipient, reply, MessageStatus.SENT, now)
            self._remember(channel_id, outgoing, ExtensionMessage(reply_id, recipient, reply, MessageStatus.SENT, now))
        except Exception:
            _log.exception("echoing message %s of channel %s failed", message_id, channel_id)

    async def _push(
        self, message_id: str, channel_id: str, conversation_id: str, sender_id: str, text: str,
        status: MessageStatus, at: datetime,
    ) -> None:
        await self.client.receive_message(
            Message(id=message_id, channel_id=channel_id, sender_id=sender_id, conversation_id=conversation_id,
                    message=text, status=status, created_at=at)
        )


def _first_messages(conversation: Conversation, limit: int, start: int) -> Conversation:
    messages = conversation.messages[start : start + limit]
    more = start + limit < len(conversation.messages)
    return Conversation(
        conversation.id, conversation.link, conversation.status, conversation.seen, conversation.participants,
        messages, str(start + limit) if more else None,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the echo bot (``python -m pipedrive_channels.extension.echo_bot``)."""
    parser = argparse.ArgumentParser(prog="python -m pipedrive_channels.extension.echo_bot", description=__doc__)
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--prefix", default="/pipedrive", help="path prefix of the routes (default /pipedrive)")
    args = parser.parse_args(argv)
    env = {name: os.environ.get(name, "") for name in
           ("PIPEDRIVE_CLIENT_ID", "PIPEDRIVE_CLIENT_SECRET", "PIPEDRIVE_ACCESS_TOKEN")}
    missing = [name for name, value in env.items() if not value]
    if missing:
        print(f"echo_bot: error: set {', '.join(missing)}", file=sys.stderr)
        raise SystemExit(2)
    logging.basicConfig(level=logging.INFO)
    client = ChannelsClient(env["PIPEDRIVE_ACCESS_TOKEN"], base_url=os.environ.get("PIPEDRIVE_BASE_URL") or None)
    bot = EchoBot(client)
    app = create_app(bot, client_id=env["PIPEDRIVE_CLIENT_ID"], client_secret=env["PIPEDRIVE_CLIENT_SECRET"],
                     prefix=args.prefix)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with client:
            yield
            await bot.aclose()

    app.cleanup_ctx.append(lifecycle)
    web.run_app(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
