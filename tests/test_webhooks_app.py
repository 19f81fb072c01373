"""The webhook app over HTTP on 127.0.0.1, without a journal: credentials, body shapes and sizes, answering at
once whatever the handler does, duplicates, a full queue, and no secret in logs or reprs."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from webhook_deliveries import PASSWORD, PATH, USER, basic, deliver, payload, serve

from pipedrive_channels import ValidationError
from pipedrive_channels.webhooks import RECEIVER, RECENT_IDS, Acceptance, Router, WebhookEvent, create_webhook_app
from pipedrive_channels.webhooks import _app as app_module
from pipedrive_channels.webhooks import _store as store_module


class Recorder:
    """A handler keeping the events it got."""

    def __init__(self) -> None:
        self.events: list[WebhookEvent] = []

    async def __call__(self, event: WebhookEvent) -> None:
        self.events.append(event)

    @property
    def ids(self) -> list[str]:
        return [event.meta.id for event in self.events]


# -- credentials ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", [
    "",  # no header
    basic("someone-else"),
    basic(password=PASSWORD + "x"),
    basic(password=""),
    "Basic !!not-base64!!",
    "Basic " + base64.b64encode(f"{USER}{PASSWORD}".encode()).decode(),  # no colon
    "Bearer " + PASSWORD,
    "Basic",
])
async def test_wrong_or_missing_credentials_are_a_401_and_nothing_is_recorded(auth: str) -> None:
    handler = Recorder()
    async with serve(handler) as (client, receiver):
        async with client.post(PATH, json=payload(), headers={"Authorization": auth} if auth else {}) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Basic ")
            assert await response.json() == {"success": False, "error": "wrong or missing credentials"}
        await receiver.drained()
        assert handler.events == [] and receiver.stats.received == 0
        # Nothing recorded: the same event with the right credentials is new.
        assert await deliver(client, payload()) == (200, {"success": True, "duplicate": False})
        await receiver.drained()
        assert handler.ids == ["e-1"]


@pytest.mark.parametrize("auth", ["", "Basic !!", basic(password="nope")])
async def test_both_halves_are_compared_in_constant_time_whatever_the_header(
    auth: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    async with serve(Recorder()) as (client, _):
        monkeypatch.setattr(hmac, "compare_digest", spy)
        status, _ = await deliver(client, payload(), auth=auth)
    assert status == 401
    assert [expected for _, expected in compared] == [USER.encode(), PASSWORD.encode()]


async def test_only_post_on_the_path_is_served() -> None:
    async with serve(Recorder()) as (client, _):
        async with client.get(PATH, headers={"Authorization": basic()}) as response:
            assert response.status == 405
        async with client.post("/elsewhere", json=payload(), headers={"Authorization": basic()}) as response:
            assert response.status == 404


async def test_another_path_can_be_given() -> None:
    handler = Recorder()
    app = create_webhook_app(handler, username=USER, password=PASSWORD, path="/hooks/pd")
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        status, _ = await deliver(client, payload(), path="/hooks/pd")
    assert status == 200


# -- shapes and sizes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{not json", "the body is not JSON (JSONDecodeError)"),
    (b"", "the body is not JSON (JSONDecodeError)"),
    (b"\xff\xfe{}", "the body is not JSON (UnicodeDecodeError)"),
    (b"[" * 100_000 + b"]" * 100_000, "the body is not JSON (RecursionError)"),
    (b"[1, 2]", "body: must be a JSON object, got list"),
    (b'{"data": {}}', "meta: is required"),
    (b'{"meta": {"action": "create", "entity": "note"}}', "meta.id: is required"),
    (json.dumps(payload(user_id="x")).encode(), "meta.user_id: must be a non-negative integer, got 'x'"),
    (json.dumps(payload(attempt="first")).encode(), "meta.attempt: must be a non-negative integer, got 'first'"),
])
async def test_a_body_that_is_no_event_is_a_400_with_the_reason_and_nothing_is_handled(raw: bytes, reason: str) -> None:
    handler = Recorder()
    async with serve(handler, max_body_bytes=1 << 20) as (client, receiver):
        assert await deliver(client, None, raw=raw) == (400, {"success": False, "error": reason})
        await receiver.drained()
        assert handler.events == [] and receiver.stats.received == 0


async def test_unknown_fields_and_values_are_accepted_and_kept() -> None:
    handler = Recorder()
    async with serve(handler) as (client, receiver):
        body = payload(entity="board", action="archive", new_field=[1, 2])
        assert (await deliver(client, body))[0] == 200
        await receiver.drained()
    [event] = handler.events
    assert (event.meta.entity, event.meta.action, event.meta.extra["new_field"]) == ("board", "archive", [1, 2])


async def test_a_body_past_the_cap_is_a_413_from_its_length_alone() -> None:
    handler = Recorder()
    async with serve(handler, max_body_bytes=2048) as (client, receiver):
        big = payload(padding="x" * 4096)
        status, answer = await deliver(client, big)
        assert (status, answer) == (413, {"success": False, "error": "the body is larger than 2048 bytes"})
        assert (await deliver(client, payload("small")))[0] == 200
        await receiver.drained()
    assert handler.ids == ["small"]


async def test_a_chunked_body_past_the_cap_is_a_413_without_reading_it_all() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b" " * 1024

    async with serve(Recorder(), max_body_bytes=4096) as (client, _):
        answer = await deliver(client, None, raw=chunks())
    assert answer == (413, {"success": False, "error": "the body is larger than 4096 bytes"})


async def test_a_body_that_does_not_arrive_in_time_is_a_408(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "BODY_TIMEOUT_SECONDS", 0.2)

    async def stalled() -> AsyncIterator[bytes]:
        yield b'{"meta": '
        await asyncio.sleep(30)

    async with serve(Recorder()) as (client, _):
        answer = await asyncio.wait_for(deliver(client, None, raw=stalled()), 10)
    assert answer == (408, {"success": False, "error": "the body was not received within 0.2 s"})


# -- answering at once --------------------------------------------------------------------------------------


async def test_a_slow_handler_never_delays_an_answer() -> None:
    started = asyncio.Event()

    async def slow(event: WebhookEvent) -> None:
        started.set()
        await asyncio.sleep(30)

    async with serve(slow, concurrency=2) as (client, receiver):
        receiver.shutdown_grace = 0.05
        for index in range(5):  # 2 running, 3 queued: every answer at once
            status, _ = await asyncio.wait_for(deliver(client, payload(f"e-{index}")), 5)
            assert status == 200
        await asyncio.wait_for(started.wait(), 5)
        assert (receiver.stats.running, receiver.stats.queued) == (2, 3)
    # The clean-up stopped the workers after the grace: no task left behind.
    assert [task for task in asyncio.all_tasks() if task.get_name().startswith("webhook-worker")] == []


async def test_the_handler_runs_after_the_answer() -> None:
    answered = asyncio.Event()
    order: list[str] = []

    async def handler(event: WebhookEvent) -> None:
        await answered.wait()
        order.append("handled")

    async with serve(handler) as (client, receiver):
        assert (await deliver(client, payload()))[0] == 200
        order.append("answered")
        answered.set()
        await asyncio.wait_for(receiver.drained(), 5)
    assert order == ["answered", "handled"]


async def test_at_most_concurrency_handlers_run_at_once() -> None:
    running = peak = 0

    async def handler(event: WebhookEvent) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    async with serve(handler, concurrency=3) as (client, receiver):
        await asyncio.gather(*(deliver(client, payload(f"e-{index}")) for index in range(20)))
        await asyncio.wait_for(receiver.drained(), 10)
        assert receiver.stats.handled == 20
    assert peak == 3


# -- duplicates -------------------------------------------------------------------------------------------------


async def test_a_redelivered_event_is_acknowledged_and_handled_once() -> None:
    handler = Recorder()
    async with serve(handler) as (client, receiver):
        assert await deliver(client, payload("e-1")) == (200, {"success": True, "duplicate": False})
        await receiver.drained()
        for attempt in (2, 3):  # Pipedrive's retries after a lost answer
            assert await deliver(client, payload("e-1", attempt=attempt)) == (200, {"success": True, "duplicate": True})
        assert await deliver(client, payload("e-2")) == (200, {"success": True, "duplicate": False})
        await receiver.drained()
        stats = receiver.stats
    assert handler.ids == ["e-1", "e-2"]
    assert (stats.received, stats.duplicates, stats.handled) == (2, 2, 2)


async def test_simultaneous_deliveries_of_one_event_are_handled_once() -> None:
    handler = Recorder()
    async with serve(handler) as (client, receiver):
        answers = await asyncio.gather(*(deliver(client, payload("e-1", attempt=n)) for n in range(1, 6)))
        await asyncio.wait_for(receiver.drained(), 5)
    assert [status for status, _ in answers] == [200] * 5
    assert sorted(answer["duplicate"] for _, answer in answers) == [False, True, True, True, True]
    assert handler.ids == ["e-1"]


def test_the_memory_window_remembers_the_last_ids_only(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RECENT_IDS == 10_000
    monkeypatch.setattr(store_module, "RECENT_IDS", 3)
    events = store_module.MemoryEvents()
    first, *others = [WebhookEvent.from_json(payload(f"e-{index}")) for index in range(4)]
    assert events.record(first, "") and not events.record(first, "")
    for event in others:
        assert events.record(event, "")
    assert events.record(first, "")  # forgotten: past the window


# -- a full queue -----------------------------------------------------------------------------------------------


async def test_a_full_queue_without_a_journal_answers_503_and_remembers_nothing() -> None:
    release = asyncio.Event()
    started = asyncio.Event()
    handled: list[str] = []

    async def handler(event: WebhookEvent) -> None:
        started.set()
        await release.wait()
        handled.append(event.meta.id)

    async with serve(handler, concurrency=1, queue_size=2) as (client, receiver):
        assert (await deliver(client, payload("busy")))[0] == 200
        await asyncio.wait_for(started.wait(), 5)
        for event_id in ("q-1", "q-2"):
            assert (await deliver(client, payload(event_id)))[0] == 200
        full = (503, {"success": False, "error": "the queue is full; retry later"})
        assert await deliver(client, payload("over")) == full
        assert await deliver(client, payload("q-1", attempt=2)) == (200, {"success": True, "duplicate": True})
        assert receiver.stats.refused == 1
        release.set()
        await asyncio.wait_for(receiver.drained(), 5)
        assert (await deliver(client, payload("over", attempt=2)))[0] == 200  # Pipedrive's retry is taken
        await asyncio.wait_for(receiver.drained(), 5)
    assert handled == ["busy", "q-1", "q-2", "over"]


async def test_a_router_dispatches_the_deliveries() -> None:
    router = Router()
    seen: list[str] = []

    @router.on("note", "create")
    async def note_added(event: WebhookEvent) -> None:
        seen.append(f"note {event.meta.entity_id}")

    @router.fallback
    async def other(event: WebhookEvent) -> None:
        seen.append(f"other {event.meta.entity}.{event.meta.action}")

    async with serve(router) as (client, receiver):
        await deliver(client, payload("e-1"))
        await deliver(client, payload("e-2", entity="person", action="change"))
        await asyncio.wait_for(receiver.drained(), 5)
    assert sorted(seen) == ["note 42", "other person.change"]


def test_a_receiver_not_running_records_nothing() -> None:
    app = create_webhook_app(_nothing, username=USER, password=PASSWORD)
    assert app[RECEIVER].accept(WebhookEvent.from_json(payload()), "{}") is Acceptance.STOPPED
    assert app[RECEIVER].stats.received == 0


async def test_retrying_needs_a_running_receiver() -> None:
    app = create_webhook_app(_nothing, username=USER, password=PASSWORD)
    with pytest.raises(ValidationError) as raised:
        await app[RECEIVER].retry_failed()
    assert raised.value.field == "receiver"
    assert app[RECEIVER].failed() == [] and app[RECEIVER].stats.received == 0
    await app[RECEIVER].drained()  # nothing to wait for


# -- configuration ----------------------------------------------------------------------------------------------


async def _nothing(event: WebhookEvent) -> None:
    pass


@pytest.mark.parametrize(("options", "field"), [
    ({"username": ""}, "username"),
    ({"password": ""}, "password"),
    ({"path": "hooks"}, "path"),
    ({"concurrency": 0}, "concurrency"),
    ({"queue_size": True}, "queue_size"),
    ({"attempts": 0}, "attempts"),
    ({"backoff": -1}, "backoff"),
    ({"backoff": float("inf")}, "backoff"),
    ({"max_body_bytes": 0}, "max_body_bytes"),
    ({"ignore_own": True}, "client"),
])
def test_bad_options_are_refused_at_creation(options: dict[str, Any], field: str) -> None:
    arguments: dict[str, Any] = {"username": USER, "password": PASSWORD, **options}
    with pytest.raises(ValidationError) as raised:
        create_webhook_app(_nothing, **arguments)
    assert raised.value.field == field and PASSWORD not in str(raised.value)


def test_the_handler_must_be_callable() -> None:
    with pytest.raises(ValidationError) as raised:
        create_webhook_app("handler", username=USER, password=PASSWORD)  # type: ignore[arg-type]
    assert raised.value.field == "handler"


# -- secrets ----------------------------------------------------------------------------------------------------


async def test_no_secret_nor_data_in_logs_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def failing(event: WebhookEvent) -> None:
        raise RuntimeError("the CRM is down")

    app = create_webhook_app(failing, username=USER, password=PASSWORD, attempts=2, backoff=0)
    async with serve(failing, attempts=2, backoff=0) as (client, receiver):
        await deliver(client, payload("e-1"), auth=basic(password=PASSWORD[:-1]))  # a near miss: 401
        await deliver(client, payload("e-1"))
        await deliver(client, {"meta": {"id": PASSWORD}}, auth=basic(password="wrong"))
        await asyncio.wait_for(receiver.drained(), 5)
        assert [failure.id for failure in receiver.failed()] == ["e-1"]
        shown = [repr(receiver), repr(receiver.stats), repr(receiver.failed()), repr(client.app),
                 *(repr(route) for route in client.app.router.routes())]
    shown += [repr(app), *(repr(route) for route in app.router.routes())]
    assert "the handler failed 2 times" in caplog.text and "wrong or missing credentials" in caplog.text
    for secret in (PASSWORD, PASSWORD[:-1], basic(), basic()[6:], "Reply: thanks"):
        assert secret not in caplog.text
        assert all(secret not in text for text in shown)
