"""``ignore_own=True``: the events the token's own user made through the API are acknowledged and skipped, the
user being read once, lazily, from ``GET /v1/users/me`` (here a small Pipedrive on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from webhook_deliveries import deliver, payload, serve

from pipedrive_channels import ChannelsClient, RetryPolicy
from pipedrive_channels.webhooks import WebhookEvent

ME = 99


class UsersMe:
    """``GET /v1/users/me`` for the user :data:`ME`, answering 401 ``failures`` times first; counts the calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.failures = 0

    async def me(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            return web.json_response({"success": False, "error": "unauthorized"}, status=401)
        return web.json_response({"success": True, "data": {"id": ME, "name": "Bot", "company_id": 7}})


@pytest.fixture
async def users_me() -> AsyncIterator[tuple[UsersMe, ChannelsClient]]:
    api = UsersMe()
    app = web.Application()
    app.router.add_get("/v1/users/me", api.me)
    async with TestServer(app, host="127.0.0.1") as server, ChannelsClient(
        "token", base_url=str(server.make_url("/v1")), retry=RetryPolicy.none()
    ) as client:
        yield api, client


class Recorder:
    def __init__(self) -> None:
        self.ids: list[str] = []

    async def __call__(self, event: WebhookEvent) -> None:
        self.ids.append(event.meta.id)


@pytest.mark.parametrize("durable", [False, True])
async def test_the_bots_own_api_changes_are_skipped(
    users_me: tuple[UsersMe, ChannelsClient], tmp_path: Path, durable: bool
) -> None:
    api, client = users_me
    handler = Recorder()
    options: dict[str, Any] = {"journal": tmp_path / "hooks.sqlite"} if durable else {}
    async with serve(handler, ignore_own=True, client=client, **options) as (http, receiver):
        assert (await deliver(http, payload("by-me-in-the-app", change_source="app", user_id=str(ME))))[0] == 200
        await asyncio.wait_for(receiver.drained(), 5)
        assert api.calls == 0  # lazily: only an API change needs the token's user
        for event_id, user_id in [("mine-1", str(ME)), ("theirs", "5"), ("mine-2", ME)]:
            status, _ = await deliver(http, payload(event_id, change_source="api", user_id=user_id))
            assert status == 200
        await asyncio.wait_for(receiver.drained(), 5)
        stats = receiver.stats
    assert handler.ids == ["by-me-in-the-app", "theirs"]
    assert (stats.received, stats.handled, stats.skipped) == (4, 2, 2)
    assert api.calls == 1  # read once
    if durable:
        with sqlite3.connect(tmp_path / "hooks.sqlite") as db:
            states = dict(db.execute("SELECT id, state FROM webhook_events").fetchall())
        assert states == {"by-me-in-the-app": "handled", "mine-1": "skipped", "theirs": "handled",
                          "mine-2": "skipped"}


async def test_the_user_is_asked_again_after_a_failure(users_me: tuple[UsersMe, ChannelsClient]) -> None:
    api, client = users_me
    api.failures = 1
    handler = Recorder()
    async with serve(handler, ignore_own=True, client=client, attempts=3, backoff=0) as (http, receiver):
        await deliver(http, payload("mine", change_source="api", user_id=str(ME)))
        await deliver(http, payload("theirs", change_source="api", user_id="5"))
        await asyncio.wait_for(receiver.drained(), 5)
        assert receiver.failed() == [] and receiver.stats.skipped == 1
    assert handler.ids == ["theirs"] and api.calls == 2


async def test_without_ignore_own_every_event_is_handled(users_me: tuple[UsersMe, ChannelsClient]) -> None:
    api, client = users_me
    handler = Recorder()
    async with serve(handler, client=client) as (http, receiver):
        await deliver(http, payload("mine", change_source="api", user_id=str(ME)))
        await asyncio.wait_for(receiver.drained(), 5)
    assert handler.ids == ["mine"] and api.calls == 0
