"""OAuth app requests, tokens, token stores, and that no secret leaks into a repr, an exception or a log."""

from __future__ import annotations

import base64
import logging
import os
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aioresponses import aioresponses
from yarl import URL

from pipedrive_channels import (
    ApiToken,
    AuthenticationError,
    ChannelsClient,
    JsonFileTokenStore,
    MemoryTokenStore,
    OAuthApp,
    OAuthToken,
    ServerError,
    TransportError,
    ValidationError,
)

TOKEN_URL = "https://oauth.pipedrive.com/oauth/token"
ACCESS, REFRESH, SECRET = "acc-SECRET-1", "ref-SECRET-2", "client-SECRET-3"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
TOKEN = OAuthToken(ACCESS, REFRESH, NOW + timedelta(hours=1), "https://acme.pipedrive.com", "base", "Bearer")
APP = OAuthApp("client-id", SECRET, redirect_uri="https://app.example/callback")


def assert_no_secret(text: str) -> None:
    for secret in (ACCESS, REFRESH, SECRET, "company-SECRET-4"):
        assert secret not in text


def test_reprs_never_show_secrets() -> None:
    client = ChannelsClient(TOKEN, app=APP, token_store=MemoryTokenStore(TOKEN))
    for value in (TOKEN, APP, ApiToken("company-SECRET-4"), client, MemoryTokenStore(TOKEN)):
        assert_no_secret(repr(value))
        assert_no_secret(str(value))
    assert "client-id" in repr(APP) and "acme.pipedrive.com" in repr(TOKEN)


def test_authorization_url_carries_client_id_redirect_and_state() -> None:
    url = urlsplit(APP.authorization_url("st ate"))
    assert f"{url.scheme}://{url.netloc}{url.path}" == "https://oauth.pipedrive.com/oauth/authorize"
    assert parse_qs(url.query) == {
        "client_id": ["client-id"], "redirect_uri": ["https://app.example/callback"], "state": ["st ate"],
    }
    assert SECRET not in url.query


async def test_exchange_code_uses_basic_auth_and_a_form_body() -> None:
    answer = {"access_token": ACCESS, "refresh_token": REFRESH, "token_type": "bearer", "scope": "base",
              "expires_in": 3599, "api_domain": "https://acme.pipedrive.com"}
    with aioresponses() as mock:
        mock.post(TOKEN_URL, payload=answer)
        before = datetime.now(timezone.utc)
        token = await APP.exchange_code("the-code")
        (call,) = mock.requests[("POST", URL(TOKEN_URL))]
    assert call.kwargs["data"] == {"grant_type": "authorization_code", "code": "the-code",
                                   "redirect_uri": "https://app.example/callback"}
    scheme, credentials = call.kwargs["headers"]["Authorization"].split()
    assert (scheme, base64.b64decode(credentials)) == ("Basic", f"client-id:{SECRET}".encode())
    assert (token.access_token, token.refresh_token, token.api_domain) == (ACCESS, REFRESH, answer["api_domain"])
    assert token.expires_at is not None
    assert before + timedelta(seconds=3598) <= token.expires_at <= datetime.now(timezone.utc) + timedelta(seconds=3600)


async def test_refresh_keeps_the_refresh_token_when_the_answer_has_none() -> None:
    with aioresponses() as mock:
        mock.post(TOKEN_URL, payload={"access_token": "new-access", "expires_in": 60})
        token = await APP.refresh(TOKEN)
        (call,) = mock.requests[("POST", URL(TOKEN_URL))]
    assert call.kwargs["data"] == {"grant_type": "refresh_token", "refresh_token": REFRESH}
    assert (token.access_token, token.refresh_token) == ("new-access", REFRESH)


@pytest.mark.parametrize(("status", "error_class"), [(400, AuthenticationError), (401, AuthenticationError),
                                                     (503, ServerError)])
async def test_token_endpoint_failures_are_typed_and_carry_no_secret(status: int, error_class: type) -> None:
    with aioresponses() as mock:
        mock.post(TOKEN_URL, status=status, payload={"error": "invalid_grant", "message": "Invalid grant"})
        with pytest.raises(error_class) as info:
            await APP.refresh(TOKEN)
    assert info.value.status == status
    assert_no_secret(repr(info.value) + str(info.value) + repr(info.value.body))


async def test_token_endpoint_unreachable_is_a_transport_error() -> None:
    with aioresponses() as mock:
        mock.post(TOKEN_URL, exception=OSError("connection refused"))
        with pytest.raises(TransportError, match="token endpoint"):
            await APP.exchange_code("code")


def test_bad_app_and_token_input_is_refused() -> None:
    with pytest.raises(ValidationError, match="token_url"):
        OAuthApp("id", "secret", token_url="http://oauth.example/token")
    with pytest.raises(ValidationError, match="client_id"):
        OAuthApp("", "secret")
    with pytest.raises(ValidationError, match="token"):
        ChannelsClient(12345)  # type: ignore[arg-type]


def test_token_from_response_requires_an_access_token() -> None:
    with pytest.raises(ValidationError, match="access_token"):
        OAuthToken.from_response({"expires_in": 10}, NOW)
    token = OAuthToken.from_response({"access_token": "a", "expires_in": 3600}, NOW)
    assert token.expires_at == NOW + timedelta(hours=1) and token.token_type == "Bearer"


async def test_json_file_store_writes_owner_only_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    store = JsonFileTokenStore(path)
    assert await store.load() is None
    await store.save(TOKEN)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert await JsonFileTokenStore(path).load() == TOKEN
    newer = OAuthToken("acc-2", REFRESH, NOW + timedelta(hours=2))
    await store.save(newer)
    assert await store.load() == newer
    assert os.listdir(tmp_path) == ["token.json"]  # no temporary file left behind
    assert_no_secret(repr(store))


async def test_client_adopts_a_newer_stored_token_on_open() -> None:
    newer = OAuthToken("acc-newer", REFRESH, NOW + timedelta(days=400))
    async with ChannelsClient(TOKEN, app=APP, token_store=MemoryTokenStore(newer)) as client:
        assert client.token == newer
    older = OAuthToken("acc-older", REFRESH, NOW - timedelta(days=1))
    async with ChannelsClient(TOKEN, app=APP, token_store=MemoryTokenStore(older)) as client:
        assert client.token == TOKEN


async def test_failed_calls_log_nothing_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = OAuthToken(ACCESS, REFRESH, datetime.now(timezone.utc) + timedelta(hours=1), scope="base")
    with aioresponses() as mock:
        mock.delete("https://api.pipedrive.com/v1/channels/p", status=401, payload={"error": "unauthorized"})
        mock.post(TOKEN_URL, status=400, payload={"error": "invalid_grant"})
        async with ChannelsClient(token, app=APP) as client:
            with pytest.raises(AuthenticationError) as info:
                await client.delete_channel("p")
    assert caplog.records, "expected the SDK to log the request at DEBUG"
    captured: list[Any] = [caplog.text, repr(info.value), str(info.value), info.value.body, dict(info.value.headers)]
    assert_no_secret(repr(captured))
