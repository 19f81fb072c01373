"""``ensure_webhook``: against FakePipedrive (created once, idempotent, re-created, no password anywhere), and
against hostile answers (aioresponses)."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aioresponses import aioresponses
from factories import TOKEN

from pipedrive_channels import ChannelsClient, RateBudget, RetryPolicy
from pipedrive_channels.errors import ApiError, BadRequestError, ValidationError
from pipedrive_channels.testing import FakePipedrive
from pipedrive_channels.webhooks._subscriptions import Webhook, ensure_webhook

PASSWORD = "pw-Sup3r-s3cret"
URL = "https://bot.example/pipedrive/webhooks"
MOCK = "https://api.example.test/v1"


@pytest.fixture
async def client(fake: FakePipedrive) -> AsyncIterator[ChannelsClient]:
    async with ChannelsClient(TOKEN, base_url=fake.base_url, budget=RateBudget(requests_per_window=1_000),
                              retry=RetryPolicy(backoff_base=0.01)) as client:
        yield client


async def ensure(client: ChannelsClient, url: str = URL, **changes: Any) -> Webhook:
    arguments: dict[str, Any] = {"event_action": "create", "event_object": "note", "username": "pipedrive",
                                 "password": PASSWORD, **changes}
    return await ensure_webhook(client, url, **arguments)


def sent(fake: FakePipedrive) -> list[str]:
    return [f"{record.method} {record.path}" for record in fake.requests]


async def test_the_missing_webhook_is_created_as_asked(fake: FakePipedrive, client: ChannelsClient) -> None:
    hook = await ensure(client, name="Replies")
    assert sent(fake) == ["GET /v1/webhooks", "POST /v1/webhooks"] and fake.tokens_spent == 20
    assert (hook.subscription_url, hook.event_action, hook.event_object, hook.version) == (URL, "create", "note", "2.0")
    assert (hook.name, hook.http_auth_user, hook.user_id, hook.active) == ("Replies", "pipedrive", fake.user_id, True)
    stored = fake.webhooks[hook.id]
    assert (stored["subscription_url"], stored["version"], stored["name"]) == (URL, "2.0", "Replies")
    assert fake.requests[1].json["http_auth_password"] == PASSWORD  # sent once, in the POST


async def test_a_second_call_is_a_no_op(fake: FakePipedrive, client: ChannelsClient) -> None:
    first = await ensure(client)
    fake.requests.clear()
    fake.tokens_spent = 0
    assert await ensure(client) == first
    assert sent(fake) == ["GET /v1/webhooks"] and fake.tokens_spent == 10 and len(fake.webhooks) == 1


async def test_a_webhook_pipedrive_deleted_is_created_again(fake: FakePipedrive, client: ChannelsClient) -> None:
    first = await ensure(client)
    fake.delete_webhook(first.id)
    again = await ensure(client)
    assert again.id != first.id and list(fake.webhooks) == [again.id]


async def test_only_the_same_url_event_and_version_match(fake: FakePipedrive, client: ChannelsClient) -> None:
    hooks = [
        await ensure(client),
        await ensure(client, URL + "/other"),
        await ensure(client, event_action="*"),
        await ensure(client, event_object="person"),
        await ensure(client, version="1.0"),
        await ensure(client, user_id=fake.user_id + 5),
    ]
    assert len({hook.id for hook in hooks}) == 6 and len(fake.webhooks) == 6
    fake.requests.clear()
    assert [await ensure(client, **changes) for changes in (
        {}, {"event_object": "person"}, {"user_id": fake.user_id + 5}, {"user_id": fake.user_id})
    ] == [hooks[0], hooks[3], hooks[5], hooks[0]]
    assert all(record.method == "GET" for record in fake.requests)


async def test_other_credentials_are_replaced_without_a_gap(fake: FakePipedrive, client: ChannelsClient) -> None:
    old = await ensure(client, username="old-user")
    fake.requests.clear()
    new = await ensure(client, username="new-user")
    assert sent(fake) == ["GET /v1/webhooks", "POST /v1/webhooks", f"DELETE /v1/webhooks/{old.id}"]
    assert list(fake.webhooks) == [new.id] and new.http_auth_user == "new-user"


async def test_the_credentials_reach_the_receiver(fake: FakePipedrive, client: ChannelsClient) -> None:
    seen: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        await ensure(client, f"http://127.0.0.1:{runner.addresses[0][1]}/hook")
        fake.agent_adds_note(fake.add_person("Ada"), "Reply: hi")
        await fake.webhooks_idle(timeout=30)
    finally:
        await runner.cleanup()
    assert seen == ["Basic " + base64.b64encode(f"pipedrive:{PASSWORD}".encode()).decode()]


def test_the_default_name_says_what_and_where_without_the_query() -> None:
    async def run() -> Webhook:
        async with FakePipedrive() as fake:
            fake.add_access_token(TOKEN)
            async with ChannelsClient(TOKEN, base_url=fake.base_url) as client:
                return await ensure(client, "https://bot.example/hooks?token=abc")

    hook = asyncio.run(run())
    assert hook.name == "create.note to bot.example/hooks"


@pytest.mark.parametrize(("changes", "field"), [
    ({"url": "ftp://bot.example/"}, "url"),
    ({"url": "bot.example/hooks"}, "url"),
    ({"url": "https://user:pw@bot.example/"}, "url"),
    ({"url": "https://[bot.example/"}, "url"),
    ({"url": "https://bot.example/" + "a" * 3000}, "url"),
    ({"event_action": "added"}, "event_action"),
    ({"event_object": ""}, "event_object"),
    ({"event_object": "note\n"}, "event_object"),
    ({"username": ""}, "username"),
    ({"username": "a:b"}, "username"),
    ({"password": ""}, "password"),
    ({"password": 5}, "password"),
    ({"name": "n" * 256}, "name"),
    ({"version": "3.0"}, "version"),
    ({"user_id": 0}, "user_id"),
    ({"user_id": "1"}, "user_id"),
])
async def test_bad_parameters_are_refused_before_anything_is_sent(
    fake: FakePipedrive, client: ChannelsClient, changes: dict[str, Any], field: str
) -> None:
    url = changes.pop("url", URL)
    with pytest.raises(ValidationError) as caught:
        await ensure(client, url, **changes)
    assert caught.value.field == field and fake.requests == []


async def test_a_password_with_control_characters_is_refused_without_showing_it(
    fake: FakePipedrive, client: ChannelsClient
) -> None:
    with pytest.raises(ValidationError) as caught:
        await ensure(client, password="sec\nret-pw")
    assert caught.value.field == "password" and "sec" not in str(caught.value)


async def test_the_password_appears_in_no_log_repr_or_error(
    fake: FakePipedrive, client: ChannelsClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hook = await ensure(client)
    await ensure(client)
    assert PASSWORD not in repr(hook) and PASSWORD not in repr(await ensure(client, username="other"))
    # A refusal that echoes the password, and a server error that does, then gives up.
    fake.fail_next(1, 400, body={"success": False, "error": f"bad http_auth_password {PASSWORD}",
                                 "errors": {"http_auth_password": [PASSWORD]}}, path="/webhooks", method="POST")
    with pytest.raises(BadRequestError) as refused:
        await ensure(client, URL + "/refused")
    fake.fail_next(10, 500, body={"success": False, "error": f"echo {PASSWORD}"}, path="/webhooks", method="POST")
    with pytest.raises(ApiError) as failed:
        await ensure(client, URL + "/failing")
    for error in (refused.value, failed.value):
        assert error.__cause__ is None and error.__suppress_context__
        assert PASSWORD not in f"{error} {error!r} {error.error} {error.body} {dict(error.headers)}"
    assert refused.value.body["errors"] == {"http_auth_password": ["<redacted>"]}
    assert PASSWORD not in caplog.text


# -- hostile answers ----------------------------------------------------------------------------------------


@pytest.fixture
async def mocked() -> AsyncIterator[tuple[aioresponses, ChannelsClient]]:
    with aioresponses() as mock:
        async with ChannelsClient(TOKEN, base_url=MOCK, budget=RateBudget.unlimited(),
                                  retry=RetryPolicy.none()) as client:
            yield mock, client


GOOD = {"id": 3, "subscription_url": URL, "event_action": "create", "event_object": "note", "version": "2.0",
        "http_auth_user": "pipedrive", "is_active": 1, "remove_time": None}


@pytest.mark.parametrize(("listing", "field"), [
    ({"success": True}, "data"),
    ({"success": True, "data": {"id": 1}}, "data"),
    ({"success": True, "data": ["x"]}, "data[0]"),
    ({"success": True, "data": [GOOD, {**GOOD, "id": "4"}]}, "data[1].id"),
    ({"success": True, "data": [{**GOOD, "id": True}]}, "data[0].id"),
    ({"success": True, "data": [{**GOOD, "subscription_url": None}]}, "data[0].subscription_url"),
    ({"success": True, "data": [{**GOOD, "event_action": 1}]}, "data[0].event_action"),
    ({"success": True, "data": [{**GOOD, "version": 2.0}]}, "data[0].version"),
    ({"success": True, "data": [{**GOOD, "user_id": "1"}]}, "data[0].user_id"),
    ({"success": True, "data": [{**GOOD, "http_auth_user": []}]}, "data[0].http_auth_user"),
])
async def test_an_odd_listing_is_an_api_error_naming_the_field(
    mocked: tuple[aioresponses, ChannelsClient], listing: Any, field: str
) -> None:
    mock, client = mocked
    mock.get(MOCK + "/webhooks", payload=listing)
    with pytest.raises(ApiError, match=re.escape(f"{field}:")):
        await ensure(client)


async def test_an_odd_creation_answer_is_an_api_error_without_the_password(
    mocked: tuple[aioresponses, ChannelsClient]
) -> None:
    mock, client = mocked
    mock.get(MOCK + "/webhooks", payload={"success": True, "data": []})
    mock.post(MOCK + "/webhooks", status=201, payload={"success": True, "data": {"http_auth_password": PASSWORD}})
    with pytest.raises(ApiError, match=re.escape("data.id:")) as caught:
        await ensure(client)
    assert caught.value.body is None and PASSWORD not in repr(caught.value)


@pytest.mark.parametrize("listed", [{**GOOD, "is_active": 0}, {**GOOD, "remove_time": "2026-01-01T00:00:00.000Z"}])
async def test_a_deactivated_or_removed_webhook_is_created_again(
    mocked: tuple[aioresponses, ChannelsClient], listed: dict[str, Any]
) -> None:
    mock, client = mocked
    mock.get(MOCK + "/webhooks", payload={"success": True, "data": [listed]})
    mock.post(MOCK + "/webhooks", status=201, payload={"success": True, "data": {**GOOD, "id": 9}})
    hook = await ensure(client)
    assert hook.id == 9 and hook.active


async def test_a_listing_with_unknown_fields_and_old_webhooks_is_read(
    mocked: tuple[aioresponses, ChannelsClient]
) -> None:
    mock, client = mocked
    old = {"id": 1, "subscription_url": URL, "event_action": "added", "event_object": "activityType",
           "some_new_field": {"x": 1}}
    mock.get(MOCK + "/webhooks", payload={"success": True, "data": [old, GOOD]})
    hook = await ensure(client)
    assert hook == Webhook(3, URL, "create", "note", "2.0", None, "pipedrive")
