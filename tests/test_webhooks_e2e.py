"""The webhook receiver end to end: FakePipedrive delivers webhooks v2 for its own changes to an app served on a
real 127.0.0.1 port, subscribed with ``ensure_webhook``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web
from webhook_e2e import GUARD, PASSWORD, USER, quiet, receiver_of, served

from pipedrive_channels import ChannelsClient
from pipedrive_channels.testing import FakePipedrive
from pipedrive_channels.webhooks import WebhookEvent, create_webhook_app, ensure_webhook


class Recorder:
    """A handler recording the events it handles."""

    def __init__(self) -> None:
        self.events: list[WebhookEvent] = []

    async def __call__(self, event: WebhookEvent) -> None:
        self.events.append(event)


def posts(fake: FakePipedrive, path: str) -> int:
    return sum(1 for request in fake.requests if request.method == "POST" and request.path.endswith(path))


async def subscribe(client: ChannelsClient, url: str, password: str = PASSWORD) -> int:
    hook = await ensure_webhook(client, url, event_action="*", event_object="note", username=USER,
                                password=password)
    return hook.id


async def test_ensure_webhook_is_idempotent_and_recreates_a_deleted_webhook(fake: FakePipedrive,
                                                                             client: ChannelsClient) -> None:
    handler = Recorder()
    app = create_webhook_app(handler, username=USER, password=PASSWORD)
    async with served(app) as url:
        first = await subscribe(client, url)
        assert await subscribe(client, url) == first and posts(fake, "/webhooks") == 1
        person = fake.add_person("Ann")
        fake.agent_adds_note(person, "<p>one</p>")
        await asyncio.wait_for(quiet(fake, receiver_of(app)), GUARD)
        fake.delete_webhook(first)  # as Pipedrive does after 3 days of failed deliveries
        second = await subscribe(client, url)
        assert second != first and list(fake.webhooks) == [second] and posts(fake, "/webhooks") == 2
        fake.agent_adds_note(person, "<p>two</p>")
        await asyncio.wait_for(quiet(fake, receiver_of(app)), GUARD)
    assert [event.data["content"] for event in handler.events if event.data] == ["<p>one</p>", "<p>two</p>"]
    assert [event.meta.webhook_id for event in handler.events] == [str(first), str(second)]


async def test_wrong_credentials_are_refused_with_401_and_nothing_is_handled(fake: FakePipedrive,
                                                                            client: ChannelsClient) -> None:
    handler = Recorder()
    app = create_webhook_app(handler, username=USER, password=PASSWORD)
    async with served(app) as url:
        await subscribe(client, url, password="not-the-password")
        fake.agent_adds_note(fake.add_person("Ann"), "<p>hello</p>")
        await asyncio.wait_for(quiet(fake, receiver_of(app)), GUARD)
        stats = receiver_of(app).stats
    assert {delivery.status for delivery in fake.webhook_deliveries} == {401}
    assert [delivery.attempt for delivery in fake.webhook_deliveries] == [1, 2, 3, 4]  # Pipedrive's retries
    assert handler.events == [] and stats.received == 0 and stats.handled == 0


async def test_a_retry_after_a_lost_answer_is_handled_once(fake: FakePipedrive, client: ChannelsClient) -> None:
    recorder = Recorder()
    app = create_webhook_app(recorder, username=USER, password=PASSWORD)
    answered: list[int] = []

    @web.middleware
    async def lose_the_first_answer(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)  # recorded and acknowledged...
        answered.append(response.status)
        if len(answered) == 1:
            return web.json_response({"error": "lost on the way"}, status=500)  # ...but Pipedrive sees a 500
        return response

    app.middlewares.append(lose_the_first_answer)
    async with served(app) as url:
        await subscribe(client, url)
        fake.agent_adds_note(fake.add_person("Ann"), "<p>hello</p>")
        await asyncio.wait_for(quiet(fake, receiver_of(app)), GUARD)
        stats = receiver_of(app).stats
    assert [(delivery.attempt, delivery.status) for delivery in fake.webhook_deliveries] == [(1, 500), (2, 200)]
    assert len({delivery.event_id for delivery in fake.webhook_deliveries}) == 1
    assert len(recorder.events) == 1 and stats.received == 1 and stats.duplicates == 1


async def test_an_event_acknowledged_before_a_stop_is_handled_once_by_the_next_app(
        fake: FakePipedrive, client: ChannelsClient, tmp_path: Path) -> None:
    journal = tmp_path / "events.db"
    started, never = asyncio.Event(), asyncio.Event()
    attempts: list[str] = []

    async def stuck(event: WebhookEvent) -> None:
        attempts.append(event.meta.id)
        started.set()
        await never.wait()  # the process dies here, after the 200

    first = create_webhook_app(stuck, username=USER, password=PASSWORD, journal=journal)
    receiver_of(first).shutdown_grace = 0.05
    async with served(first) as url:
        await subscribe(client, url)
        fake.agent_adds_note(fake.add_person("Ann"), "<p>hello</p>")
        await asyncio.wait_for(started.wait(), GUARD)
        await fake.webhooks_idle(GUARD)
    assert [delivery.status for delivery in fake.webhook_deliveries] == [200]

    handler = Recorder()
    second = create_webhook_app(handler, username=USER, password=PASSWORD, journal=journal)
    async with served(second):
        await asyncio.wait_for(receiver_of(second).drained(), GUARD)
        assert receiver_of(second).stats.handled == 1
    third = create_webhook_app(handler, username=USER, password=PASSWORD, journal=journal)
    async with served(third):  # and never again
        await asyncio.wait_for(receiver_of(third).drained(), GUARD)
    assert len(attempts) == 1 and [event.meta.id for event in handler.events] == attempts
    assert len(fake.webhook_deliveries) == 1  # Pipedrive never retried: it had its 200


async def test_a_raising_handler_is_retried_then_failed_and_every_answer_is_200(
        fake: FakePipedrive, client: ChannelsClient, tmp_path: Path) -> None:
    calls: list[int] = []

    async def broken(event: WebhookEvent) -> None:
        calls.append(event.meta.attempt or 0)
        raise RuntimeError("the bot's database is down")

    app = create_webhook_app(broken, username=USER, password=PASSWORD, journal=tmp_path / "events.db",
                             attempts=3, backoff=0.01)
    async with served(app) as url:
        hook = await subscribe(client, url)
        person = fake.add_person("Ann")
        for n in range(12):  # more than the 10 first-attempt failures a ban takes
            fake.agent_adds_note(person, f"<p>note {n}</p>")
        await asyncio.wait_for(quiet(fake, receiver_of(app)), GUARD)
        failed = receiver_of(app).failed()
        stats = receiver_of(app).stats
    assert len(calls) == 12 * 3 and stats.failed == 12 and len(failed) == 12
    assert {delivery.status for delivery in fake.webhook_deliveries} == {200}
    assert {delivery.attempt for delivery in fake.webhook_deliveries} == {1}  # nothing retried, nothing banned
    assert hook in fake.webhooks
