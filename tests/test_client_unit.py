"""Each endpoint's request (method, URL, headers, exact JSON body) and the mapping of each error status."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import pytest
from aioresponses import aioresponses
from yarl import URL

from pipedrive_channels import (
    ApiError,
    ApiToken,
    AuthenticationError,
    BadRequestError,
    ChannelsClient,
    ForbiddenError,
    GoneError,
    Message,
    NotFoundError,
    PaymentRequiredError,
    ProviderType,
    RateBudget,
    RateLimitError,
    RetryPolicy,
    ServerError,
    TransportError,
    UnprocessableError,
    ValidationError,
)

BASE = "https://api.pipedrive.com/v1"
TOKEN = "access-123-secret"
MESSAGE = Message(
    id="m-1", channel_id="ch-1", sender_id="u-1", conversation_id="c-1", message="hi", status="sent",
    created_at=datetime(2022, 3, 1, 7, 58, 35, tzinfo=timezone.utc),
)


@pytest.fixture
def mocked() -> Any:
    with aioresponses() as mock:
        yield mock


@pytest.fixture
async def client() -> AsyncIterator[ChannelsClient]:
    # These tests are about one request and its answer: no budget waits, no retries.
    async with ChannelsClient(TOKEN, budget=RateBudget.unlimited(), retry=RetryPolicy.none()) as client:
        yield client


def sent(mock: Any, method: str, url: str) -> Any:
    (call,) = mock.requests[(method, URL(url, encoded=True))]
    return call.kwargs


async def test_add_channel_posts_the_exact_body(mocked: Any, client: ChannelsClient) -> None:
    answer = {"id": "e283", "name": "My Channel", "provider_channel_id": "p-1", "marketplace_client_id": "57da",
              "pd_company_id": 123, "pd_user_id": 321, "created_at": "2022-03-01 00:00:00",
              "provider_type": "whatsapp", "template_support": True, "avatar_url": "https://h.example/a.png"}
    mocked.post(f"{BASE}/channels", payload={"success": True, "data": answer})
    channel = await client.add_channel(
        name="My Channel", provider_channel_id="p-1", avatar_url="https://h.example/a.png",
        template_support=True, provider_type="whatsapp",
    )
    request = sent(mocked, "POST", f"{BASE}/channels")
    assert json.loads(request["data"]) == {
        "name": "My Channel", "provider_channel_id": "p-1", "avatar_url": "https://h.example/a.png",
        "template_support": True, "provider_type": "whatsapp",
    }
    assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert request["headers"]["Content-Type"] == "application/json"
    assert channel.id == "e283" and channel.pd_company_id == 123
    assert channel.provider_type is ProviderType.WHATSAPP


async def test_receive_message_posts_the_exact_body_and_returns_the_echo(mocked: Any, client: ChannelsClient) -> None:
    echoed = {"id": "m-1", "channel_id": "ch-1", "sender_id": "u-1", "conversation_id": "c-1", "message": "hi",
              "status": "sent", "created_at": "2022-03-01T07:58:35.449Z", "attachments": []}
    mocked.post(f"{BASE}/channels/messages/receive", payload={"success": True, "data": echoed})
    result = await client.receive_message(MESSAGE)
    request = sent(mocked, "POST", f"{BASE}/channels/messages/receive")
    assert json.loads(request["data"]) == {
        "id": "m-1", "channel_id": "ch-1", "sender_id": "u-1", "conversation_id": "c-1", "message": "hi",
        "status": "sent", "created_at": "2022-03-01 07:58", "attachments": [],
    }
    assert result.created_at == datetime(2022, 3, 1, 7, 58, 35, 449000, tzinfo=timezone.utc)
    assert result.id == MESSAGE.id


async def test_deletes_percent_encode_provider_ids(mocked: Any, client: ChannelsClient) -> None:
    conversation_url = f"{BASE}/channels/a%2Fb/conversations/c%3F%23%20d"
    mocked.delete(conversation_url, payload={"success": True})
    mocked.delete(f"{BASE}/channels/a%2Fb", payload={"success": True})
    assert await client.delete_conversation("a/b", "c?# d") is None
    assert await client.delete_channel("a/b") is None
    assert sent(mocked, "DELETE", conversation_url)["data"] is None
    assert sent(mocked, "DELETE", f"{BASE}/channels/a%2Fb")["headers"]["Authorization"] == f"Bearer {TOKEN}"


async def test_api_token_is_sent_as_x_api_token(mocked: Any) -> None:
    mocked.delete(f"{BASE}/channels/p", payload={"success": True})
    async with ChannelsClient(ApiToken("company-token")) as client:
        await client.delete_channel("p")
    headers = sent(mocked, "DELETE", f"{BASE}/channels/p")["headers"]
    assert headers["x-api-token"] == "company-token"
    assert "Authorization" not in headers


@pytest.mark.parametrize("bad", ["", "..", ".", "a\nb", "a\x7fb", None])
async def test_bad_path_ids_are_refused_before_sending(mocked: Any, client: ChannelsClient, bad: Any) -> None:
    with pytest.raises(ValidationError) as info:
        await client.delete_channel(bad)
    assert info.value.field == "provider_channel_id"
    with pytest.raises(ValidationError) as info:
        await client.delete_conversation("p", bad)
    assert info.value.field == "conversation_id"
    assert mocked.requests == {}


async def test_receive_refuses_a_non_message_before_sending(mocked: Any, client: ChannelsClient) -> None:
    with pytest.raises(ValidationError, match="message"):
        await client.receive_message({"id": "m"})  # type: ignore[arg-type]
    assert mocked.requests == {}


@pytest.mark.parametrize(
    ("status", "error_class"),
    [(400, BadRequestError), (401, AuthenticationError), (402, PaymentRequiredError), (403, ForbiddenError),
     (404, NotFoundError), (410, GoneError), (422, UnprocessableError), (429, RateLimitError),
     (500, ServerError), (502, ServerError), (503, ServerError), (418, ApiError)],
)
async def test_each_error_status_maps_to_its_class(
    mocked: Any, client: ChannelsClient, status: int, error_class: type[ApiError]
) -> None:
    body = {"success": False, "error": "Channel not found.", "error_info": "Please check the docs",
            "additional_data": {"code": "NOT_FOUND"}}
    mocked.delete(f"{BASE}/channels/p", status=status, payload=body, headers={"x-ratelimit-remaining": "3"})
    with pytest.raises(error_class) as info:
        await client.delete_channel("p")
    error = info.value
    assert type(error) is error_class
    assert (error.status, error.error, error.error_info, error.code) == (
        status, "Channel not found.", "Please check the docs", "NOT_FOUND")
    assert error.body == body and error.headers["x-ratelimit-remaining"] == "3"
    assert len(mocked.requests[("DELETE", URL(f"{BASE}/channels/p"))]) == 1  # never retried here


@pytest.mark.parametrize(
    ("body", "error", "code"),
    [
        ('{"success": false, "error": "unauthorized access", "errorCode": 401}', "unauthorized access", "401"),
        ('{"success": false, "error": "Open deals limit", "code": "feature_capping"}', "Open deals limit",
         "feature_capping"),
        ("<html><body>Cloudflare</body></html>", None, None),
        ("", None, None),
        ('{"success": false}', None, None),
        ("[1, 2]", None, None),
    ],
)
async def test_error_envelopes_are_parsed_defensively(
    mocked: Any, client: ChannelsClient, body: str, error: str | None, code: str | None
) -> None:
    mocked.delete(f"{BASE}/channels/p", status=403, body=body)
    with pytest.raises(ForbiddenError) as info:
        await client.delete_channel("p")
    assert (info.value.error, info.value.code) == (error, code)
    if body.startswith("<html>"):
        assert info.value.body == body


async def test_a_2xx_with_success_false_is_an_error(mocked: Any, client: ChannelsClient) -> None:
    mocked.delete(f"{BASE}/channels/p", status=200, payload={"success": False, "error": "nope"})
    with pytest.raises(ApiError, match="nope") as info:
        await client.delete_channel("p")
    assert info.value.status == 200


async def test_a_2xx_that_does_not_fit_the_model_is_an_error_not_a_crash(mocked: Any, client: ChannelsClient) -> None:
    mocked.post(f"{BASE}/channels/messages/receive", payload={"success": True, "data": {"id": "m-1"}})
    with pytest.raises(ApiError, match="unexpected answer for Message"):
        await client.receive_message(MESSAGE)
    mocked.post(f"{BASE}/channels", status=200, body="<html>maintenance</html>")
    with pytest.raises(ApiError, match="not JSON"):
        await client.add_channel(name="n", provider_channel_id="p")


async def test_connection_errors_become_transport_errors(mocked: Any, client: ChannelsClient) -> None:
    mocked.post(f"{BASE}/channels/messages/receive", exception=ConnectionResetError("reset by peer"))
    with pytest.raises(TransportError, match="reset by peer") as info:
        await client.receive_message(MESSAGE)
    assert info.value.__cause__ is None and info.value.__context__ is None  # aiohttp's may hold the headers
    mocked.post(f"{BASE}/channels/messages/receive", exception=TimeoutError())
    with pytest.raises(TransportError, match="TimeoutError"):
        await client.receive_message(MESSAGE)


async def test_retired_endpoint_fails_clearly_without_retrying(mocked: Any, client: ChannelsClient) -> None:
    pattern = re.compile(r"^https://api\.pipedrive\.com/v1/channels.*$")
    mocked.post(pattern, status=410, body="", repeat=True)
    with pytest.raises(GoneError):
        await client.receive_message(MESSAGE)
    assert sum(len(calls) for calls in mocked.requests.values()) == 1


def test_plain_http_base_url_is_refused_unless_loopback() -> None:
    with pytest.raises(ValidationError, match="base_url"):
        ChannelsClient(TOKEN, base_url="http://api.pipedrive.com/v1")
    for ok in ("http://127.0.0.1:8080/v1", "http://localhost:1/v1", "http://[::1]:2/v1", "https://x.example/v1"):
        assert ChannelsClient(TOKEN, base_url=ok).base_url == ok


def test_base_url_comes_from_the_tokens_api_domain() -> None:
    from pipedrive_channels import OAuthToken

    token = OAuthToken(access_token=TOKEN, api_domain="https://acme.pipedrive.com")
    assert ChannelsClient(token).base_url == "https://acme.pipedrive.com/api/v1"
    assert ChannelsClient(TOKEN).base_url == BASE
    with pytest.raises(ValidationError, match="api_domain"):
        ChannelsClient(OAuthToken(access_token=TOKEN, api_domain="http://evil.example"))


async def test_calls_before_open_explain_how_to_open() -> None:
    client = ChannelsClient(TOKEN)
    with pytest.raises(RuntimeError, match="async with"):
        await client.delete_channel("p")
