"""The reply bot: an agent's ``Reply:`` note reaches the customer once and lands in the transcript, end to end with
FakePipedrive delivering to the bot's app on 127.0.0.1; and ``NotesTarget.conversations_of``."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import socket
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from factories import TOKEN
from notes_mock import until
from webhook_e2e import GUARD, PASSWORD, USER, quiet, receiver_of, served

from pipedrive_channels import ChannelsClient, CheckpointError, Message, MessageStatus, TransportError, ValidationError
from pipedrive_channels.extension.reply_bot import (
    REPLY_BOT,
    ReplyBot,
    _serve,
    create_reply_bot_app,
    main,
    note_text,
)
from pipedrive_channels.notes import Contact, NotesTarget
from pipedrive_channels.testing import FakePipedrive
from pipedrive_channels.webhooks import RECEIVER, WebhookEvent, ensure_webhook

PHONE = "+3725550101"


@pytest.fixture
async def target() -> AsyncIterator[NotesTarget]:
    async with NotesTarget(linger=None) as target:  # notes written at once: what the fake holds is final
        yield target


class Customer:
    """The user's ``send``: records what reached the customer; raises while ``down``; blocks while ``stuck``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.calls = 0
        self.down = False
        self.stuck: asyncio.Event | None = None
        self.called = asyncio.Event()

    async def __call__(self, conversation_id: str, text: str) -> None:
        self.calls += 1
        self.called.set()
        if self.stuck is not None:
            await self.stuck.wait()
        if self.down:
            raise ConnectionError("the SMS gateway is down")
        self.sent.append((conversation_id, text))


def customer_says(conversation: str, text: str, *, minutes_ago: int = 1) -> Message:
    return Message(id=f"in-{conversation}-{text}", channel_id="sms", sender_id="customer", conversation_id=conversation,
                   message=text, status=MessageStatus.SENT,
                   created_at=datetime.now(timezone.utc) - timedelta(minutes=minutes_ago))


@asynccontextmanager
async def bot_app(client: ChannelsClient, target: NotesTarget, customer: Customer, **options: Any
                  ) -> AsyncIterator[tuple[Any, str]]:
    """The bot's app served on 127.0.0.1 and subscribed to note events; yields the app and its URL."""
    app = create_reply_bot_app(client, target, customer, username=USER, password=PASSWORD, backoff=0.01, **options)
    async with served(app) as url:
        await ensure_webhook(client, url, event_action="*", event_object="note", username=USER, password=PASSWORD)
        yield app, url


async def transcript(fake: FakePipedrive, client: ChannelsClient, target: NotesTarget) -> int:
    """Ann's conversation ``conv-1`` delivered live: the person and its transcript note are written; her id."""
    await target.deliver(client, customer_says("conv-1", "Where is my order?"), contact=Contact(name="Ann",
                                                                                                 phone=PHONE))
    (person_id,) = fake.persons
    return person_id


def transcript_of(fake: FakePipedrive, conversation: str) -> str:
    (content,) = [note["content"] for note in fake.notes.values() if conversation in note["content"]]
    return content


async def test_a_reply_note_is_sent_once_and_recorded_and_the_bots_own_writes_do_not_loop(
        fake: FakePipedrive, client: ChannelsClient, target: NotesTarget, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    customer = Customer()
    async with bot_app(client, target, customer) as (app, _):
        person = await transcript(fake, client, target)  # the bot's own note: delivered, skipped
        fake.agent_adds_note(person, "<p>Reply: on my way &amp; <b>soon</b></p>")
        await asyncio.wait_for(quiet(fake, receiver_of(app)), GUARD)
        stats = receiver_of(app).stats
    assert customer.sent == [("conv-1", "on my way & soon")]
    content = transcript_of(fake, "conv-1")
    assert "Where is my order?" in content and "agent-2 (sent):" in content and "on my way &amp; soon" in content
    # Three note events reached the bot: its transcript's create, the agent's note, its transcript's update.
    assert stats.received == 3 and stats.handled == 1 and stats.skipped == 2 and stats.failed == 0
    assert customer.calls == 1
    assert PASSWORD not in caplog.text


async def test_the_same_delivery_posted_twice_is_sent_once(fake: FakePipedrive, client: ChannelsClient,
                                                          target: NotesTarget) -> None:
    customer = Customer()
    async with bot_app(client, target, customer) as (app, url):
        person = await transcript(fake, client, target)
        body = {"meta": {"id": "evt-twice", "action": "create", "entity": "note", "entity_id": "900",
                         "user_id": "2", "change_source": "app", "attempt": 1},
                "data": {"id": 900, "content": "<p>Reply: thanks!</p>", "person_id": person}, "previous": None}
        auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        answers = []
        async with aiohttp.ClientSession() as http:
            for _ in range(2):
                async with http.post(url, json=body, headers={"Authorization": auth}) as response:
                    answers.append((response.status, (await response.json())["duplicate"]))
        await asyncio.wait_for(quiet(fake, receiver_of(app)), GUARD)
    assert answers == [(200, False), (200, True)]
    assert customer.sent == [("conv-1", "thanks!")]
    assert transcript_of(fake, "conv-1").count("thanks!") == 1


async def test_a_reply_acknowledged_before_a_crash_is_sent_once_after_the_restart(
        fake: FakePipedrive, client: ChannelsClient, target: NotesTarget, tmp_path: Path) -> None:
    journal = tmp_path / "events.db"
    dying = Customer()
    dying.stuck = asyncio.Event()  # never set: the process dies while sending
    async with bot_app(client, target, dying, journal=journal) as (app, _):
        receiver_of(app).shutdown_grace = 0.05
        person = await transcript(fake, client, target)
        fake.agent_adds_note(person, "<p>Reply: on my way</p>")
        await fake.webhooks_idle(GUARD)
        await asyncio.wait_for(dying.called.wait(), GUARD)
    assert dying.sent == [] and "on my way" not in transcript_of(fake, "conv-1")

    customer = Customer()
    for _ in range(2):  # the restart, then one more: handled once in all
        app = create_reply_bot_app(client, target, customer, username=USER, password=PASSWORD, journal=journal)
        async with served(app):
            await asyncio.wait_for(receiver_of(app).drained(), GUARD)
    assert customer.sent == [("conv-1", "on my way")]
    assert transcript_of(fake, "conv-1").count("on my way") == 1
    assert [delivery.status for delivery in fake.webhook_deliveries if delivery.attempt == 1].count(200) >= 2


async def test_a_raising_send_is_retried_then_failed_and_kept_every_answer_200_and_re_run_later(
        fake: FakePipedrive, client: ChannelsClient, target: NotesTarget, tmp_path: Path) -> None:
    customer = Customer()
    customer.down = True
    async with bot_app(client, target, customer, journal=tmp_path / "events.db", attempts=3) as (app, _):
        person = await transcript(fake, client, target)
        fake.agent_adds_note(person, "<p>Reply: on my way</p>")
        await asyncio.wait_for(quiet(fake, receiver_of(app)), GUARD)
        (failed,) = receiver_of(app).failed()
        assert customer.calls == 3 and customer.sent == [] and "on my way" not in transcript_of(fake, "conv-1")
        assert {delivery.status for delivery in fake.webhook_deliveries} == {200}
        assert {delivery.attempt for delivery in fake.webhook_deliveries} == {1}  # no retry, no ban
        customer.down = False  # the gateway is back: the operator re-runs the failed events
        assert await receiver_of(app).retry_failed() == 1
        await asyncio.wait_for(quiet(fake, receiver_of(app)), GUARD)
        assert receiver_of(app).failed() == []
    assert "ConnectionError" in failed.reason and failed.attempts == 3 and customer.sent == [("conv-1", "on my way")]
    assert transcript_of(fake, "conv-1").count("on my way") == 1


async def test_wrong_credentials_are_refused_and_nothing_is_sent(fake: FakePipedrive, client: ChannelsClient,
                                                                target: NotesTarget) -> None:
    customer = Customer()
    app = create_reply_bot_app(client, target, customer, username=USER, password=PASSWORD)
    async with served(app) as url:
        await ensure_webhook(client, url, event_action="*", event_object="note", username=USER, password="guess")
        person = await transcript(fake, client, target)
        fake.agent_adds_note(person, "<p>Reply: on my way</p>")
        await asyncio.wait_for(quiet(fake, receiver_of(app)), GUARD)
        assert receiver_of(app).stats.received == 0
    assert {delivery.status for delivery in fake.webhook_deliveries} == {401} and customer.calls == 0


async def test_a_reply_on_a_person_without_a_conversation_is_not_sent(
        fake: FakePipedrive, client: ChannelsClient, target: NotesTarget, caplog: pytest.LogCaptureFixture) -> None:
    customer = Customer()
    async with bot_app(client, target, customer) as (app, _):
        await transcript(fake, client, target)
        stranger = fake.add_person("Bob")
        fake.agent_adds_note(stranger, "<p>Reply: hello?</p>")
        await asyncio.wait_for(quiet(fake, receiver_of(app)), GUARD)
        assert receiver_of(app).stats.handled == 1 and receiver_of(app).stats.failed == 0
    assert customer.calls == 0 and f"person {stranger}, who has no conversation" in caplog.text


async def test_an_edited_reply_is_sent_again_and_other_notes_are_not(fake: FakePipedrive, client: ChannelsClient,
                                                                    target: NotesTarget) -> None:
    customer = Customer()
    async with bot_app(client, target, customer) as (app, _):
        person = await transcript(fake, client, target)
        note = fake.agent_adds_note(person, "<p>Called her, no answer</p>")
        fake.agent_updates_note(note, "<p>Reply: tried to call you</p>")
        fake.agent_updates_note(note, "<p>Reply: tried to call you</p>")  # no change: no event worth a reply
        await asyncio.wait_for(quiet(fake, receiver_of(app)), GUARD)
        assert app[REPLY_BOT].prefix == "Reply:"
    assert customer.sent == [("conv-1", "tried to call you")]


async def test_the_latest_conversation_of_the_person_gets_the_reply(fake: FakePipedrive, client: ChannelsClient,
                                                                   target: NotesTarget) -> None:
    contact = Contact(name="Ann", phone=PHONE)
    await target.deliver(client, customer_says("old", "hi", minutes_ago=90), contact=contact)
    await target.deliver(client, customer_says("new", "hello again", minutes_ago=5), contact=contact)
    (person,) = fake.persons
    assert target.conversations_of(person) == ["new", "old"]
    customer = Customer()
    async with bot_app(client, target, customer) as (app, _):
        fake.agent_adds_note(person, "<p>Reply: yes?</p>")
        await asyncio.wait_for(quiet(fake, receiver_of(app)), GUARD)
    assert customer.sent == [("new", "yes?")] and "yes?" in transcript_of(fake, "new")


# -- NotesTarget.conversations_of --------------------------------------------------------------------------


async def test_conversations_of_knows_given_resolved_and_written_persons(fake: FakePipedrive,
                                                                         client: ChannelsClient) -> None:
    ann = fake.add_person("Ann", phones=[PHONE])
    async with NotesTarget(linger=3600) as target:  # nothing written until the flush
        await target.deliver(client, customer_says("by-id", "a"), contact=Contact(person_id=ann))
        assert target.conversations_of(ann) == ["by-id"]  # the contact names her
        await target.flush()
        await target.deliver(client, customer_says("by-phone", "b", minutes_ago=0), contact=Contact(phone=PHONE))
        assert target.conversations_of(ann) == ["by-id"]  # not resolved yet
        await target.flush()
        await target.deliver(client, customer_says("same-phone", "c", minutes_ago=0), contact=Contact(phone=PHONE))
        # resolved through the phone's person, before its own note is written; the latest line first
        assert target.conversations_of(ann) == ["same-phone", "by-phone", "by-id"]
        assert target.conversations_of(ann + 1000) == []
        for wrong in (0, -1, "1", True, 1.0):
            with pytest.raises(ValidationError, match="person_id"):
                target.conversations_of(wrong)  # type: ignore[arg-type]


# -- what counts as a reply ------------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "text"), [
    ("<p>Reply: on my way</p>", "on my way"),
    ("  Reply:on my way  ", "on my way"),
    ("<p>Reply: first</p><p>second<br>third</p>", "first\nsecond\nthird"),
    ("<p>Reply: 5 &lt; 6 &amp; &quot;ok&quot;</p><script>alert(1)</script>", '5 < 6 & "ok"'),
])
def test_a_notes_html_becomes_the_reply_text(content: str, text: str) -> None:
    bot = ReplyBot(None, NotesTarget(), Customer())  # type: ignore[arg-type]
    assert bot.reply_of(note_event(content)) == (3, text)


@pytest.mark.parametrize("event", [
    pytest.param(lambda: note_event("<p>reply: lower case</p>"), id="case-sensitive"),
    pytest.param(lambda: note_event("<p>Called, no answer. Reply: later</p>"), id="not-at-the-start"),
    pytest.param(lambda: note_event("<p>Reply:   </p>"), id="empty"),
    pytest.param(lambda: note_event("<p>Reply: hi</p>", person_id=None), id="on-a-deal"),
    pytest.param(lambda: note_event("<p>Reply: hi</p>", action="change", previous={"pinned_to_person_flag": 0}),
                 id="a-change-not-of-its-content"),
    pytest.param(lambda: note_event("<p>Reply: hi</p>", action="delete"), id="deleted"),
    pytest.param(lambda: note_event("<p>Reply: hi</p>", change_source="api"), id="an-integrations-note"),
    pytest.param(lambda: note_event("<p>Reply: hi</p>", entity="person"), id="not-a-note"),
])
def test_other_notes_are_no_reply(event: Any) -> None:
    bot = ReplyBot(None, NotesTarget(), Customer())  # type: ignore[arg-type]
    assert bot.reply_of(event()) is None


def test_a_custom_prefix_and_the_bots_parameters_are_checked() -> None:
    bot = ReplyBot(None, NotesTarget(), Customer(), prefix="@customer")  # type: ignore[arg-type]
    assert bot.reply_of(note_event("<p>@customer ok</p>")) == (3, "ok")
    assert bot.reply_of(note_event("<p>Reply: ok</p>")) is None
    assert bot.router.route(note_event("x", action="change")) is not None
    assert bot.router.route(note_event("x", action="delete")) is None
    with pytest.raises(ValidationError, match="prefix"):
        ReplyBot(None, NotesTarget(), Customer(), prefix=" ")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="send"):
        ReplyBot(None, NotesTarget(), "print")  # type: ignore[arg-type]


def test_note_text_drops_tags_and_blank_lines() -> None:
    assert note_text("<div><p> a </p><p></p><ul><li>b</li></ul></div>") == "a\nb"
    assert note_text("<style>p {}</style>plain") == "plain"


def test_main_names_the_missing_settings_and_no_secret(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PIPEDRIVE_ACCESS_TOKEN", "secret-token-value")
    monkeypatch.delenv("WEBHOOK_USER", raising=False)
    monkeypatch.delenv("WEBHOOK_PASSWORD", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["--port", "0"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "WEBHOOK_USER, WEBHOOK_PASSWORD" in err and "secret-token" not in err


def note_event(content: str, *, action: str = "create", person_id: int | None = 3,
               previous: dict[str, Any] | None = None, change_source: str = "app", entity: str = "note"
               ) -> WebhookEvent:
    if previous is None and action == "change":
        previous = {"content": "<p>before</p>"}
    data = None if action == "delete" else {"id": 9, "content": content, "person_id": person_id}
    meta = {"id": "e-1", "action": action, "entity": entity, "user_id": "2", "change_source": change_source}
    return WebhookEvent.from_json({"meta": meta, "data": data, "previous": previous})


async def test_the_command_line_bot_subscribes_serves_and_logs_replies_without_secrets(
        fake: FakePipedrive, client: ChannelsClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    notes = tmp_path / "notes.db"
    async with NotesTarget(journal=notes, linger=None) as earlier:  # the transcripts the bot's service wrote
        await earlier.deliver(client, customer_says("conv-1", "hi"), contact=Contact(name="Ann", phone=PHONE))
    (person,) = fake.persons
    for name, value in (("PIPEDRIVE_ACCESS_TOKEN", TOKEN), ("PIPEDRIVE_BASE_URL", fake.base_url),
                        ("WEBHOOK_USER", USER), ("WEBHOOK_PASSWORD", PASSWORD), ("NOTES_JOURNAL", str(notes)),
                        ("WEBHOOK_JOURNAL", str(tmp_path / "events.db"))):
        monkeypatch.setenv(name, value)
    with socket.socket() as probe:  # a free port for the bot to listen on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hooks"
    args = argparse.Namespace(host="127.0.0.1", port=port, path="/hooks", public_url=url)
    serving = asyncio.create_task(_serve(args, dict(os.environ)))
    try:
        await asyncio.wait_for(until(lambda: "reply bot listening" in caplog.text), GUARD)
        assert [hook["subscription_url"] for hook in fake.webhooks.values()] == [url]
        fake.agent_adds_note(person, "<p>Reply: on my way</p>")
        await asyncio.wait_for(until(lambda: "reply to conversation conv-1" in caplog.text), GUARD)
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
    assert "on my way" in caplog.text and PASSWORD not in caplog.text and f"Bearer {TOKEN}" not in caplog.text
    async with NotesTarget(journal=notes) as later:  # the reply was recorded in the journal
        assert later.conversations_of(person) == ["conv-1"]
    assert "on my way" in transcript_of(fake, "conv-1")


async def test_the_readme_recipe() -> None:
    # The README's "Testing a bot" recipe, as a user writes it (a default client, no test helpers).
    async with FakePipedrive(webhook_delay_scale=0.001) as fake:
        fake.add_access_token("token")
        async with ChannelsClient("token", base_url=fake.base_url) as client, NotesTarget(linger=None) as target:
            sent = []

            async def send(conversation_id: str, text: str) -> None:
                sent.append((conversation_id, text))

            app = create_reply_bot_app(client, target, send, username="hooks", password="s3cret")
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}/pipedrive/webhooks"
            await ensure_webhook(client, url, event_action="*", event_object="note",
                                 username="hooks", password="s3cret")
            await target.deliver(client, customer_says("conv-1", "Where is my order?"),
                                 contact=Contact(phone="+3725550101"))
            (person_id,) = fake.persons
            fake.agent_adds_note(person_id, "<p>Reply: on my way</p>")
            await fake.webhooks_idle()
            await app[RECEIVER].drained()
            assert sent == [("conv-1", "on my way")]
            await runner.cleanup()


async def test_a_reply_sent_but_not_recorded_is_logged_and_not_sent_again(
        fake: FakePipedrive, client: ChannelsClient, caplog: pytest.LogCaptureFixture) -> None:
    class Unwritable(NotesTarget):
        async def deliver(self, client: ChannelsClient, message: Message, *, contact: Contact | None = None) -> None:
            if message.id.startswith("reply-"):
                raise TransportError("connection reset")
            await super().deliver(client, message, contact=contact)

    customer = Customer()
    async with Unwritable(linger=None) as target:
        person = await transcript(fake, client, target)
        await ReplyBot(client, target, customer).handle(note_event("<p>Reply: on my way</p>", person_id=person))
    assert customer.sent == [("conv-1", "on my way")]  # the handler returned: the receiver will not retry it
    assert "sent to conversation conv-1 but not recorded in its transcript: TransportError" in caplog.text


async def test_conversations_of_names_a_corrupt_journal_row() -> None:
    connection = sqlite3.connect(":memory:", isolation_level=None)
    async with NotesTarget(journal=connection) as target:
        assert target.conversations_of(5) == []
        connection.execute("INSERT INTO notes_persons VALUES ('not json', 5)")
        with pytest.raises(CheckpointError, match=r"notes_persons\.contact_key"):
            target.conversations_of(5)
    connection.close()
