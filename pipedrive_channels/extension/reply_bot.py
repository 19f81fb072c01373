"""An example bot: an agent answers a customer from Pipedrive by writing a note that starts with ``Reply:``.

It lives beside :mod:`~pipedrive_channels.extension.echo_bot`, the other example bot, and is its successor: with
the Channels API gone, Pipedrive no longer posts an agent's message to a messaging app, so the agent writes a note
on the customer's person (``<p>Reply: on my way</p>``) and Pipedrive's webhooks v2 tell the bot. The bot finds the
person's conversation in its :class:`~pipedrive_channels.notes.NotesTarget` journal (the most recent one when
there are several), sends the text to the customer through a ``send(conversation_id, text)`` of your own (your
channel: SMS, WhatsApp, a chat widget), and records the reply as the agent's line in that conversation's
transcript note. Each event is handled once (the receiver's journal); the bot's own note writes come back as
webhooks too and are skipped (``ignore_own``), so nothing loops.

Run it with ``python -m pipedrive_channels.extension.reply_bot --port 8080``. It reads ``PIPEDRIVE_ACCESS_TOKEN``,
``WEBHOOK_USER`` and ``WEBHOOK_PASSWORD`` (the Basic credentials of the webhook), and optionally
``PIPEDRIVE_BASE_URL``, ``NOTES_JOURNAL`` (the transcripts' journal, default ``reply_bot_notes.db``) and
``WEBHOOK_JOURNAL`` (the events', default ``reply_bot_webhooks.db``); ``--public-url`` subscribes the bot's URL to
note events first (:func:`~pipedrive_channels.webhooks.ensure_webhook`). Its ``send`` only logs each reply: a real
bot passes its channel's send to :class:`ReplyBot` or :func:`create_reply_bot_app`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timezone
from html.parser import HTMLParser

from aiohttp import web

from ..client import ChannelsClient
from ..errors import PipedriveError, ValidationError
from ..models import Message, MessageStatus
from ..notes import NotesTarget
from ..webhooks import DEFAULT_PATH, Router, WebhookEvent, create_webhook_app, ensure_webhook

__all__ = ["REPLY_BOT", "ReplyBot", "Send", "create_reply_bot_app", "main", "note_text"]

_log = logging.getLogger("pipedrive_channels.extension.reply_bot")

Send = Callable[[str, str], Awaitable[None]]
"""How a reply reaches the customer: ``await send(conversation_id, text)``; raising makes the event retried."""

_BLOCKS = frozenset({"p", "div", "li", "ul", "ol", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "tr"})


class _Text(HTMLParser):
    """A note's HTML as the text an agent typed: tags dropped, entities unescaped, blocks and ``<br>`` as lines."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0  # inside <script> or <style>: not text

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._hidden += 1
        elif tag == "br" or tag in _BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._hidden = max(self._hidden - 1, 0)
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def note_text(content: str) -> str:
    """A note's HTML ``content`` as plain text: tags stripped, entities unescaped, one line per block or ``<br>``,
    each line's spaces trimmed and blank lines dropped."""
    parser = _Text()
    parser.feed(content)
    parser.close()
    lines = (line.strip() for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


class ReplyBot:
    """Sends what agents write in ``Reply:`` notes to the customer's conversation, and records it in its transcript.

    ``bot.router`` is the webhook handler (``note`` ``create`` and ``change``); serve it with
    :func:`create_reply_bot_app`, or ``create_webhook_app(bot.router, ..., ignore_own=True, client=client)``.

    :param client: writes the transcript notes (and, in the app, reads the token's user for ``ignore_own``).
    :param target: the :class:`NotesTarget` the conversations' transcripts are delivered with: it knows each
        conversation's person, and records the replies (open it with ``async with``).
    :param send: ``await send(conversation_id, text)`` sends a reply to the customer. If it raises, the event is
        retried (then kept as failed in the receiver's journal), and nothing is recorded.
    :param prefix: what a note's text starts with to be a reply (case-sensitive, after leading spaces).
    :param channel_id: the ``channel_id`` of the recorded replies' :class:`Message` (not shown in transcripts).
    """

    def __init__(self, client: ChannelsClient, target: NotesTarget, send: Send, *, prefix: str = "Reply:",
                 channel_id: str = "reply-bot") -> None:
        if not callable(send):
            raise ValidationError("send", f"must be an async callable, got {type(send).__name__}")
        for name, value in (("prefix", prefix), ("channel_id", channel_id)):
            if not isinstance(value, str) or not value.strip():
                raise ValidationError(name, f"must be a non-empty string, got {value!r}")
        self.client = client
        self.target = target
        self.send = send
        self.prefix = prefix
        self.channel_id = channel_id
        self.router = Router()
        """The webhook handler: notes created and changed go to :meth:`handle`."""
        self.router.on("note", "create")(self.handle)
        self.router.on("note", "change")(self.handle)

    def __repr__(self) -> str:
        return f"ReplyBot(prefix={self.prefix!r})"

    def reply_of(self, event: WebhookEvent) -> tuple[int, str] | None:
        """``(person_id, text)`` when ``event`` is a note on a person, created or changed by a user in Pipedrive
        (``change_source`` ``"app"``), whose text starts with :attr:`prefix`; on a change, only when its content
        changed. None otherwise: an integration's notes (this bot's among them) are never replies."""
        meta, data = event.meta, event.data or {}
        if meta.entity != "note" or meta.action not in ("create", "change") or meta.change_source != "app":
            return None
        if meta.action == "change" and "content" not in (event.previous or {}):
            return None  # pinned, moved...: what the agent wrote did not change
        content, person_id = data.get("content"), data.get("person_id")
        if not isinstance(content, str) or type(person_id) is not int or person_id < 1:
            return None
        text = note_text(content)
        if not text.startswith(self.prefix):
            return None
        reply = text[len(self.prefix):].strip()
        return (person_id, reply) if reply else None

    async def handle(self, event: WebhookEvent) -> None:
        """Send one ``Reply:`` note to its person's latest conversation and record it there; other notes are
        ignored, and a person with no conversation is logged."""
        found = self.reply_of(event)
        if found is None:
            return
        person_id, text = found
        conversations = self.target.conversations_of(person_id)
        if not conversations:
            _log.warning("note %s (event %s) is a reply on person %d, who has no conversation: not sent",
                         event.meta.entity_id, event.meta.id, person_id)
            return
        conversation_id = conversations[0]
        await self.send(conversation_id, text)
        # The id comes from the event's, so that handling it again rewrites the line rather than adding one.
        agent = f"agent-{event.meta.user_id}" if event.meta.user_id is not None else "agent"
        line = Message(id=f"reply-{event.meta.id}", channel_id=self.channel_id, sender_id=agent,
                       conversation_id=conversation_id, message=text, status=MessageStatus.SENT,
                       created_at=datetime.now(timezone.utc))
        try:
            await self.target.deliver(self.client, line)
        except PipedriveError as error:
            # Not raised: a retry would send the reply to the customer again. A line journalled before the error
            # stays pending, and the target's next write writes it.
            _log.error("the reply of event %s was sent to conversation %s but not recorded in its transcript: %s",
                       event.meta.id, conversation_id, type(error).__name__)


REPLY_BOT = web.AppKey("pipedrive_channels.extension.reply_bot", ReplyBot)
"""``app[REPLY_BOT]`` is the :class:`ReplyBot` of an app made by :func:`create_reply_bot_app`."""


def create_reply_bot_app(
    client: ChannelsClient,
    target: NotesTarget,
    send: Send,
    *,
    username: str,
    password: str,
    journal: str | os.PathLike[str] | None = None,
    prefix: str = "Reply:",
    path: str = DEFAULT_PATH,
    concurrency: int = 8,
    attempts: int = 4,
    backoff: float = 1.0,
) -> web.Application:
    """The webhook app serving a :class:`ReplyBot` (``app[REPLY_BOT]``; its receiver is ``app[RECEIVER]``), with
    ``ignore_own=True`` so that the bot's own transcript writes are skipped.

    The caller opens and closes ``client`` and ``target`` around the app's life: the receiver stops (its handlers
    end) at the app's clean-up, before they may be closed. See :func:`~pipedrive_channels.webhooks.create_webhook_app`
    for ``username``, ``password``, ``journal`` (give one: exactly once across restarts), ``path``,
    ``concurrency``, ``attempts`` and ``backoff``.
    """
    bot = ReplyBot(client, target, send, prefix=prefix)
    app = create_webhook_app(bot.router, username=username, password=password, journal=journal, path=path,
                             concurrency=concurrency, attempts=attempts, backoff=backoff, ignore_own=True,
                             client=client)
    app[REPLY_BOT] = bot
    return app


_REQUIRED = ("PIPEDRIVE_ACCESS_TOKEN", "WEBHOOK_USER", "WEBHOOK_PASSWORD")
_SETTINGS = (*_REQUIRED, "PIPEDRIVE_BASE_URL", "NOTES_JOURNAL", "WEBHOOK_JOURNAL")


async def _log_reply(conversation_id: str, text: str) -> None:
    _log.info("reply to conversation %s (a real bot sends it through its channel): %s", conversation_id, text)


async def _serve(args: argparse.Namespace, env: Mapping[str, str]) -> None:
    client = ChannelsClient(env["PIPEDRIVE_ACCESS_TOKEN"], base_url=env.get("PIPEDRIVE_BASE_URL") or None)
    notes = env.get("NOTES_JOURNAL") or "reply_bot_notes.db"
    events = env.get("WEBHOOK_JOURNAL") or "reply_bot_webhooks.db"
    async with client, NotesTarget(journal=notes) as target:
        if args.public_url:
            hook = await ensure_webhook(client, args.public_url, event_action="*", event_object="note",
                                        username=env["WEBHOOK_USER"], password=env["WEBHOOK_PASSWORD"])
            _log.info("webhook %d sends note events to the bot", hook.id)
        app = create_reply_bot_app(client, target, _log_reply, username=env["WEBHOOK_USER"],
                                   password=env["WEBHOOK_PASSWORD"], journal=events, path=args.path)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            await web.TCPSite(runner, args.host, args.port).start()
            _log.info("reply bot listening on http://%s:%d%s", args.host, args.port, args.path)
            await asyncio.Event().wait()  # until interrupted
        finally:
            await runner.cleanup()  # the receiver stops before the target and the client close


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the reply bot (``python -m pipedrive_channels.extension.reply_bot``)."""
    parser = argparse.ArgumentParser(prog="python -m pipedrive_channels.extension.reply_bot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1, behind the HTTPS proxy Pipedrive reaches)")
    parser.add_argument("--path", default=DEFAULT_PATH, help=f"the webhook's path (default {DEFAULT_PATH})")
    parser.add_argument("--public-url", help="the URL Pipedrive reaches the bot at: subscribe it to note events")
    args = parser.parse_args(argv)
    env = {name: os.environ.get(name, "") for name in _SETTINGS}
    missing = [name for name in _REQUIRED if not env[name]]
    if missing:
        print(f"reply_bot: error: set {', '.join(missing)}", file=sys.stderr)
        raise SystemExit(2)
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args, env))


if __name__ == "__main__":
    main()
