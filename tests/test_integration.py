"""The SDK against the fake Pipedrive: a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import attrs
import factories
import pytest

from pipedrive_channels import (
    ApiToken,
    Attachment,
    AuthenticationError,
    BadRequestError,
    BudgetTimeoutError,
    ChannelsClient,
    GoneError,
    JsonFileTokenStore,
    MessageStatus,
    NotFoundError,
    OAuthApp,
    OAuthToken,
    ProviderType,
    RateBudget,
    RateLimitError,
    RetryPolicy,
    ServerError,
    TransportError,
)
from pipedrive_channels.testing import FakePipedrive, busiest_window

REDIRECT = "http://127.0.0.1/callback"


def app_for(fake: FakePipedrive) -> OAuthApp:
    return OAuthApp(fake.client_id, fake.client_secret, redirect_uri=REDIRECT, token_url=fake.token_url,
                    authorize_url=fake.authorize_url)


async def installed_token(fake: FakePipedrive) -> OAuthToken:
    return await app_for(fake).exchange_code(fake.issue_code(redirect_uri=REDIRECT))


message = functools.partial(factories.message, channel="ch-1", conversations=3)


def channel_requests(fake: FakePipedrive) -> list[str]:
    return [f"{r.method} {r.path}" for r in fake.requests if "/channels" in r.path]


async def test_whole_lifecycle(fake: FakePipedrive) -> None:
    token = await installed_token(fake)
    async with ChannelsClient(token, base_url=fake.base_url, app=app_for(fake)) as client:
        assert client.base_url == fake.base_url
        channel = await client.add_channel(name="Support", provider_channel_id="ch-1",
                                           avatar_url="https://cdn.example/a.png", provider_type=ProviderType.WHATSAPP)
        assert (channel.name, channel.provider_channel_id, channel.provider_type) == (
            "Support", "ch-1", ProviderType.WHATSAPP)
        assert channel.marketplace_client_id == fake.client_id and channel.created_at is not None

        photo = Attachment(id="f-1", type="image/png", url="https://cdn.example/f.png", name="f.png", size=12)
        first = attrs.evolve(message(0), attachments=[photo])
        assert await client.receive_message(first) == first
        await asyncio.gather(*(client.receive_message(message(i)) for i in range(1, 9)))
        read = await client.receive_message(message(0, MessageStatus.READ))  # same id: an update
        assert read.status is MessageStatus.READ
        stored = fake.messages[("ch-1", "c-0")]
        assert stored["m-0"]["status"] == "read" and len(stored) == 3

        await client.delete_conversation("ch-1", "c-0")
        assert ("ch-1", "c-0") not in fake.messages
        with pytest.raises(NotFoundError) as info:
            await client.delete_conversation("ch-1", "c-0")
        assert info.value.code == "NOT_FOUND"
        await client.delete_channel("ch-1")
        assert fake.channels == {}
        with pytest.raises(NotFoundError):
            await client.receive_message(message(20))


async def test_ids_with_slashes_stay_one_path_segment(fake: FakePipedrive) -> None:
    async with ChannelsClient(await installed_token(fake), base_url=fake.base_url) as client:
        await client.add_channel(name="odd", provider_channel_id="a/b")
        await client.add_channel(name="plain", provider_channel_id="a")
        await client.delete_channel("a/b")
    assert list(fake.channels) == ["a"]
    assert channel_requests(fake)[-1] == "DELETE /v1/channels/a%2Fb"


async def test_api_token_is_accepted(fake: FakePipedrive) -> None:
    fake.add_api_token("company-token")
    async with ChannelsClient(ApiToken("company-token"), base_url=fake.base_url) as client:
        channel = await client.add_channel(name="n", provider_channel_id="p")
    assert channel.provider_channel_id == "p"


async def test_200_concurrent_calls_with_an_expired_token_refresh_once(fake: FakePipedrive) -> None:
    token = await installed_token(fake)
    fake.expire_access_tokens()
    fake.token_latency = 0.05  # keep the refresh in flight while the other calls arrive
    expired = OAuthToken(token.access_token, token.refresh_token, datetime.now(timezone.utc) - timedelta(seconds=1),
                         token.api_domain)
    async with ChannelsClient(expired, base_url=fake.base_url, app=app_for(fake),
                              budget=RateBudget.unlimited()) as client:
        await client.add_channel(name="n", provider_channel_id="ch-1")
        assert fake.token_requests == 2  # the install, then one refresh
        await asyncio.gather(*(client.receive_message(message(i)) for i in range(200)))
    assert fake.token_requests == 2
    assert sum(len(thread) for thread in fake.messages.values()) == 200


async def test_200_concurrent_calls_hitting_401_share_one_refresh(fake: FakePipedrive) -> None:
    async with ChannelsClient(await installed_token(fake), base_url=fake.base_url, app=app_for(fake),
                              budget=RateBudget.unlimited()) as client:
        await client.add_channel(name="n", provider_channel_id="ch-1")
        fake.expire_access_tokens()
        fake.token_latency = 0.05
        await asyncio.gather(*(client.receive_message(message(i)) for i in range(200)))
    assert fake.token_requests == 2
    unauthorized = [r for r in fake.requests if r.status == 401]
    assert 1 <= len(unauthorized) <= 200  # each call was repeated at most once
    assert len(channel_requests(fake)) == 1 + 200 + len(unauthorized)


async def test_a_401_leads_to_one_refresh_and_one_repeat(fake: FakePipedrive) -> None:
    token = await installed_token(fake)
    async with ChannelsClient(token, base_url=fake.base_url, app=app_for(fake)) as client:
        fake.expire_access_tokens()
        await client.add_channel(name="n", provider_channel_id="ch-1")
        assert client.token != token
    assert fake.token_requests == 2
    assert [r.status for r in fake.requests if "/channels" in r.path] == [401, 200]


async def test_a_failing_refresh_raises_without_looping(fake: FakePipedrive) -> None:
    async with ChannelsClient(await installed_token(fake), base_url=fake.base_url, app=app_for(fake)) as client:
        fake.expire_access_tokens()
        fake.refresh_failures = 100
        with pytest.raises(AuthenticationError) as info:
            await client.add_channel(name="n", provider_channel_id="ch-1")
    assert info.value.status == 400
    assert fake.token_requests == 2
    assert len(channel_requests(fake)) == 1


async def test_a_401_without_an_app_raises_at_once(fake: FakePipedrive) -> None:
    async with ChannelsClient(await installed_token(fake), base_url=fake.base_url) as client:
        fake.expire_access_tokens()
        with pytest.raises(AuthenticationError):
            await client.add_channel(name="n", provider_channel_id="ch-1")
    assert fake.token_requests == 1 and len(channel_requests(fake)) == 1


@pytest.mark.parametrize(("status", "error_class"), [(410, GoneError), (404, NotFoundError)])
async def test_a_retired_endpoint_fails_clearly_once(
    fake: FakePipedrive, status: int, error_class: type[Exception]
) -> None:
    async with ChannelsClient(await installed_token(fake), base_url=fake.base_url) as client:
        fake.fail_next(1, status)
        with pytest.raises(error_class):
            await client.add_channel(name="n", provider_channel_id="ch-1")
    assert len(channel_requests(fake)) == 1


async def test_server_errors_and_dropped_connections_are_typed(fake: FakePipedrive) -> None:
    async with ChannelsClient(await installed_token(fake), base_url=fake.base_url,
                              retry=RetryPolicy.none()) as client:
        fake.fail_next(1, 400, body={"success": False, "error": "bad", "additional_data": {"code": "INVALID_BODY"}})
        with pytest.raises(BadRequestError) as info:
            await client.add_channel(name="n", provider_channel_id="ch-1")
        assert info.value.code == "INVALID_BODY"
        fake.fail_next(1, 503, body="<html>maintenance</html>")
        with pytest.raises(ServerError) as server_error:
            await client.add_channel(name="n", provider_channel_id="ch-1")
        assert server_error.value.body == "<html>maintenance</html>"
        fake.drop_next(1)
        with pytest.raises(TransportError):
            await client.add_channel(name="n", provider_channel_id="ch-1")


async def test_a_timeout_is_a_transport_error(fake: FakePipedrive) -> None:
    async with ChannelsClient(await installed_token(fake), base_url=fake.base_url, timeout=0.05) as client:
        fake.latency = 0.5
        with pytest.raises(TransportError, match="Timeout"):
            await client.add_channel(name="n", provider_channel_id="ch-1")


async def test_the_json_file_store_survives_a_process_restart(fake: FakePipedrive, tmp_path: Path) -> None:
    """A process refreshes and saves; a new process starts from the stored token and is accepted."""
    store_path = tmp_path / "token.json"
    token = await installed_token(fake)
    soon = OAuthToken(token.access_token, token.refresh_token, datetime.now(timezone.utc) + timedelta(seconds=30),
                      token.api_domain)
    await JsonFileTokenStore(store_path).save(soon)
    script = textwrap.dedent(f"""
        import asyncio, sys
        from pipedrive_channels import ChannelsClient, JsonFileTokenStore, OAuthApp
        async def main():
            store = JsonFileTokenStore({str(store_path)!r})
            app = OAuthApp({fake.client_id!r}, {fake.client_secret!r}, token_url={fake.token_url!r})
            token = await store.load()
            async with ChannelsClient(token, base_url={fake.base_url!r}, app=app, token_store=store) as client:
                await client.add_channel(name="n", provider_channel_id=sys.argv[1])
        asyncio.run(main())
    """)

    async def run(channel: str) -> None:
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", script, channel,
                                                       stderr=subprocess.PIPE)
        _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()

    await run("first")  # expires within the margin: refreshes, saves
    refreshed = json.loads(store_path.read_text())
    assert refreshed["access_token"] != token.access_token
    assert fake.token_requests == 2
    fake.refresh_failures = 1  # the second process must not need a refresh
    await run("second")
    assert fake.token_requests == 2
    assert set(fake.channels) == {"first", "second"}


async def test_no_secret_reaches_a_log_record_or_an_error(
    fake: FakePipedrive, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = app_for(fake)
    token = await installed_token(fake)
    errors: list[Exception] = []
    async with ChannelsClient(token, base_url=fake.base_url, app=app) as client:
        await client.add_channel(name="n", provider_channel_id="ch-1")
        fake.expire_access_tokens()
        await client.receive_message(message(1))  # 401, refresh, repeat
        refreshed = client.token
        fake.expire_access_tokens()
        fake.refresh_failures = 1
        for call in (client.receive_message(message(2)), client.delete_channel("missing")):
            try:
                await call
            except Exception as exc:
                errors.append(exc)
    assert [type(e) for e in errors] == [AuthenticationError, NotFoundError]  # the 2nd call refreshes anew
    assert isinstance(refreshed, OAuthToken)
    secrets = {token.access_token, refreshed.access_token, token.refresh_token, fake.client_secret}
    seen = [caplog.text, *(repr(e) + str(e) + repr(getattr(e, "body", "")) for e in errors)]
    assert "refreshed" in caplog.text
    for secret in secrets:
        assert secret and not any(secret in text for text in seen)


async def test_200_concurrent_calls_within_80_per_2s_get_no_429() -> None:
    async with FakePipedrive(rate_limit=80, enforce_rate_limit=True) as fake:
        fake.add_access_token("token")
        async with ChannelsClient("token", base_url=fake.base_url) as client:  # the default: Lite, 80 per 2 s
            await client.add_channel(name="n", provider_channel_id="ch-1")
            await asyncio.gather(*(client.receive_message(message(i)) for i in range(200)))
            stats = client.budget.stats()
    statuses = [r.status for r in fake.requests]
    assert statuses.count(429) == 0 and statuses.count(200) == 201
    assert busiest_window([r.at for r in fake.requests]) == 80  # exact: full, never over
    assert (stats.requests_admitted, stats.tokens_charged) == (201, 2010)


async def test_every_attempt_is_charged_including_the_repeat_after_a_401(fake: FakePipedrive) -> None:
    budget = RateBudget(requests_per_window=100, tokens_per_day=1_000)
    async with ChannelsClient(await installed_token(fake), base_url=fake.base_url, app=app_for(fake),
                              budget=budget) as client:
        fake.expire_access_tokens()
        await client.add_channel(name="n", provider_channel_id="c")  # 401, refresh, repeat: two attempts
        await client.delete_channel("c")
    stats = budget.stats()
    assert (stats.requests_admitted, stats.tokens_charged) == (3, 10 + 10 + 6)


async def test_a_429_with_remaining_zero_holds_the_next_call(fake: FakePipedrive) -> None:
    async with ChannelsClient(await installed_token(fake), base_url=fake.base_url,
                              retry=RetryPolicy.none()) as client:
        await client.add_channel(name="n", provider_channel_id="ch-1")
        fake.fail_next(1, 429, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "0.3"})
        with pytest.raises(RateLimitError):
            await client.receive_message(message(1))
        await client.receive_message(message(2))
    refused, next_call = [r for r in fake.requests if r.path.endswith("/receive")]
    assert refused.status == 429 and next_call.at - refused.at >= 0.3


async def test_a_call_that_cannot_be_admitted_in_time_sends_nothing(fake: FakePipedrive) -> None:
    budget = RateBudget(requests_per_window=1, window=2.0)
    async with ChannelsClient(await installed_token(fake), base_url=fake.base_url, budget=budget) as client:
        await client.add_channel(name="n", provider_channel_id="ch-1")
        with pytest.raises(BudgetTimeoutError):
            await client.receive_message(message(1), timeout=0.5)
    assert len(channel_requests(fake)) == 1
