"""Tests of the fake Pipedrive server itself, through plain aiohttp (independently of the SDK)."""

from __future__ import annotations

import ast
import asyncio
import base64
import functools
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from factories import wire_message
from yarl import URL

from pipedrive_channels.testing import FakePipedrive, _server

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def bearer(fake: FakePipedrive) -> dict[str, str]:
    return {"Authorization": f"Bearer {fake.issue_token()['access_token']}"}


message = functools.partial(wire_message, 1, channel="ch1")
"""The receive body of message ``m-1`` of channel ``ch1``, with the given changes."""


async def call(
    http: aiohttp.ClientSession, method: str, url: str | URL, headers: dict[str, str], **kwargs: Any
) -> tuple[int, Any, Any]:
    async with http.request(method, url, headers=headers, **kwargs) as response:
        return response.status, await response.json(content_type=None), response.headers


def basic(login: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()}


async def token_call(
    http: aiohttp.ClientSession,
    fake: FakePipedrive,
    form: dict[str, str] | None,
    *,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    if headers is None:
        headers = basic(fake.client_id, fake.client_secret)
    async with http.post(fake.token_url, data=form, headers=headers, **kwargs) as response:
        return response.status, await response.json()


# -- the four endpoints -------------------------------------------------------------------------------------


async def test_channel_lifecycle(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    auth = bearer(fake)
    status, body, _ = await call(
        http, "POST", f"{fake.base_url}/channels", auth, json={"name": "Chat", "provider_channel_id": "ch1"}
    )
    assert status == 200
    data = body["data"]
    assert body["success"] is True
    assert data["provider_channel_id"] == "ch1"
    assert data["marketplace_client_id"] == "fake-client-id"
    assert data["provider_type"] == "other"
    assert data["template_support"] is False
    assert isinstance(data["pd_company_id"], int)
    assert len(data["created_at"]) == len("2022-03-01 00:00:00")

    # Adding the same provider_channel_id again updates it, keeping its id; /api/v1 is served too.
    status, again, _ = await call(
        http,
        "POST",
        f"{fake.root_url}/api/v1/channels",
        auth,
        json={
            "name": "Renamed",
            "provider_channel_id": "ch1",
            "provider_type": "whatsapp",
            "template_support": True,
        },
    )
    assert status == 200
    assert again["data"]["id"] == data["id"]
    assert fake.channels["ch1"]["name"] == "Renamed"

    receive = f"{fake.base_url}/channels/messages/receive"
    status, echoed, _ = await call(http, "POST", receive, auth, json=message())
    assert (status, echoed) == (200, {"success": True, "data": message()})
    # Same id again: the message is updated, not duplicated.
    await call(http, "POST", receive, auth, json=message(status="read"))
    await call(http, "POST", receive, auth, json=message(id="m-2"))
    assert fake.messages[("ch1", "c-1")]["m-1"]["status"] == "read"
    assert set(fake.messages[("ch1", "c-1")]) == {"m-1", "m-2"}

    conversation = f"{fake.base_url}/channels/ch1/conversations/c-1"
    assert (await call(http, "DELETE", conversation, auth))[:2] == (200, {"success": True})
    status, error, _ = await call(http, "DELETE", conversation, auth)
    assert status == 404
    assert error["error"] == "Conversation not found."
    assert error["additional_data"] == {"code": "NOT_FOUND"}

    await call(http, "POST", receive, auth, json=message(conversation_id="conv2"))
    assert (await call(http, "DELETE", f"{fake.base_url}/channels/ch1", auth))[:2] == (200, {"success": True})
    assert fake.channels == {}
    assert fake.messages == {}  # the channel's conversations went with it
    status, error, _ = await call(http, "DELETE", f"{fake.base_url}/channels/ch1", auth)
    assert (status, error["error"]) == (404, "Channel not found.")
    status, error, _ = await call(http, "DELETE", f"{fake.base_url}/channels/ch1/conversations/conv2", auth)
    assert (status, error["error"]) == (404, "Channel not found.")


@pytest.mark.parametrize(
    "payload",
    [
        {"provider_channel_id": "ch1"},
        {"name": "Chat", "provider_channel_id": ""},
        {"name": "Chat", "provider_channel_id": 5},
        {"name": "Chat", "provider_channel_id": "ch1", "avatar_url": None},
        {"name": "Chat", "provider_channel_id": "ch1", "provider_type": "telegram"},
        {"name": "Chat", "provider_channel_id": "ch1", "provider_type": ["other"]},
        {"name": "Chat", "provider_channel_id": "ch1", "template_support": "yes"},
        ["not", "an", "object"],
    ],
)
async def test_add_channel_rejects_invalid_bodies(
    fake: FakePipedrive, http: aiohttp.ClientSession, payload: Any
) -> None:
    status, body, _ = await call(http, "POST", f"{fake.base_url}/channels", bearer(fake), json=payload)
    assert status == 400
    assert body["success"] is False
    assert body["error"].startswith("Expected { name: string;")
    assert body["additional_data"] == {"code": "INVALID_BODY"}
    assert fake.channels == {}


async def test_add_channel_rejects_non_json(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    status, body, _ = await call(http, "POST", f"{fake.base_url}/channels", bearer(fake), data=b"{oops")
    assert (status, body["additional_data"]["code"]) == (400, "INVALID_BODY")


@pytest.mark.parametrize(
    "payload",
    [
        message(id=None),
        message(conversation_id=""),
        message(message=None),
        message(status="seen"),
        message(created_at="yesterday"),
        message(created_at="2022-13-01 00:00"),
        message(created_at="2022-03-01"),
        message(reply_by="soon"),
        message(conversation_link=3),
        message(attachments=None),
        message(attachments=[{"id": "a", "type": "image/png"}]),
        message(attachments=[{"id": "a", "type": "image/png", "url": "u", "size": "big"}]),
        message(attachments=[{"id": "a", "type": "image/png", "url": "u", "size": True}]),
        message(attachments=[{"id": "a", "type": "image/png", "url": "u", "link_expires": "no"}]),
        "text",
    ],
)
async def test_receive_rejects_invalid_bodies(
    fake: FakePipedrive, http: aiohttp.ClientSession, payload: Any
) -> None:
    fake.add_channel("ch1")
    status, body, _ = await call(
        http, "POST", f"{fake.base_url}/channels/messages/receive", bearer(fake), json=payload
    )
    assert status == 400
    assert body["additional_data"] == {"code": "INVALID_RECEIVE_MESSAGE_PAYLOAD"}
    assert fake.messages == {}


@pytest.mark.parametrize(
    "overrides",
    [
        {"created_at": "2022-03-01 07:58:35"},
        {"created_at": "2022-03-01T07:58:35.449Z", "reply_by": "2022-03-02T07:58:35Z"},
        {"created_at": "2022-03-01T07:58:35+02:00", "reply_by": None},
        {"message": "", "conversation_link": "https://example.com/c/1"},
        {
            "attachments": [
                {"id": "a", "type": "image/png", "url": "u", "name": None, "size": 600, "preview_url": None},
                {"id": "b", "type": "text/plain", "url": "u", "name": "n", "size": 1.5, "link_expires": True},
            ]
        },
    ],
)
async def test_receive_accepts_valid_variants(
    fake: FakePipedrive, http: aiohttp.ClientSession, overrides: dict[str, Any]
) -> None:
    fake.add_channel("ch1")
    status, body, _ = await call(
        http, "POST", f"{fake.base_url}/channels/messages/receive", bearer(fake), json=message(**overrides)
    )
    assert (status, body["data"]) == (200, message(**overrides))


async def test_receive_without_attachments_key(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    fake.add_channel("ch1")
    payload = message()
    del payload["attachments"]
    status, _, _ = await call(
        http, "POST", f"{fake.base_url}/channels/messages/receive", bearer(fake), json=payload
    )
    assert status == 200


async def test_receive_for_unknown_channel(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    status, body, _ = await call(
        http, "POST", f"{fake.base_url}/channels/messages/receive", bearer(fake), json=message()
    )
    assert status == 404
    assert body == {
        "success": False,
        "error": "Channel not found.",
        "error_info": "Please check the reference docs in https://developers.pipedrive.com/docs/api/v1",
        "additional_data": {"code": "NOT_FOUND"},
    }


async def test_encoded_slash_stays_inside_one_id(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    auth = bearer(fake)
    for channel_id in ("a", "a/b"):
        await call(
            http,
            "POST",
            f"{fake.base_url}/channels",
            auth,
            json={"name": "n", "provider_channel_id": channel_id},
        )
    await call(
        http,
        "POST",
        f"{fake.base_url}/channels/messages/receive",
        auth,
        json=message(channel_id="a/b", conversation_id="c/d"),
    )

    conversation = URL(f"{fake.base_url}/channels/a%2Fb/conversations/c%2Fd", encoded=True)
    assert (await call(http, "DELETE", conversation, auth))[0] == 200
    assert (await call(http, "DELETE", URL(f"{fake.base_url}/channels/a%2Fb", encoded=True), auth))[0] == 200
    assert set(fake.channels) == {"a"}
    assert fake.requests[-1].path == "/v1/channels/a%2Fb"


async def test_add_channel_stores_a_channel_as_the_endpoint_does(fake: FakePipedrive) -> None:
    first = fake.add_channel("ch1", avatar_url="https://cdn.example/a.png", provider_type="whatsapp")
    assert fake.channels["ch1"] == first
    assert (first["name"], first["provider_type"]) == ("ch1", "whatsapp")
    assert first["marketplace_client_id"] == fake.client_id
    again = fake.add_channel("ch1", "Renamed")
    assert (again["id"], again["created_at"], again["name"]) == (first["id"], first["created_at"], "Renamed")
    for bad in ({"provider_channel_id": ""}, {"provider_channel_id": "ch2", "provider_type": "sms"}):
        with pytest.raises(ValueError):
            fake.add_channel(**bad)
    assert set(fake.channels) == {"ch1"}


# -- authentication -----------------------------------------------------------------------------------------


async def test_unauthorized_requests(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    url = f"{fake.base_url}/channels/ch1"
    for headers in ({}, {"Authorization": "Bearer unknown"}, {"x-api-token": "unknown"}):
        status, body, response_headers = await call(http, "DELETE", url, headers)
        assert (status, body) == (401, {"success": False, "error": "unauthorized access", "errorCode": 401})
        assert "x-ratelimit-remaining" in response_headers

    fake.add_api_token("api-token")
    fake.add_access_token("forever")
    for headers in ({"x-api-token": "api-token"}, {"Authorization": "bearer forever"}):
        assert (await call(http, "DELETE", url, headers))[0] == 404  # authorized; the channel is unknown


async def test_expired_access_tokens(http: aiohttp.ClientSession) -> None:
    async with FakePipedrive(access_token_ttl=0.05) as fake:
        url = f"{fake.base_url}/channels/ch1"
        short = bearer(fake)
        fake.access_token_ttl = 3600
        long = bearer(fake)
        await asyncio.sleep(0.06)
        assert (await call(http, "DELETE", url, short))[0] == 401
        assert (await call(http, "DELETE", url, long))[0] == 404
        fake.expire_access_tokens()
        assert (await call(http, "DELETE", url, long))[0] == 401
        assert (await call(http, "DELETE", url, bearer(fake)))[0] == 404  # tokens issued later work


# -- OAuth token endpoint -----------------------------------------------------------------------------------


async def test_code_exchange_works_once(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    code = fake.issue_code()
    status, token = await token_call(http, fake, {"grant_type": "authorization_code", "code": code})
    assert status == 200
    assert token["token_type"] == "Bearer"
    assert token["scope"] == "base,messengers-integration"
    assert token["expires_in"] == 3600
    assert token["api_domain"] == fake.root_url
    assert {"access_token", "refresh_token"} <= set(token)
    status, error = await token_call(http, fake, {"grant_type": "authorization_code", "code": code})
    assert (status, error["error"]) == (400, "invalid_grant")

    assert fake.token_requests == 2
    auth = {"Authorization": f"Bearer {token['access_token']}"}
    assert (await call(http, "DELETE", f"{fake.base_url}/channels/x", auth))[0] == 404  # the token works


async def test_code_exchange_checks_redirect_uri(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    data = {"grant_type": "authorization_code", "redirect_uri": "https://app.example/cb"}
    code = fake.issue_code(redirect_uri="https://app.example/cb")
    assert (await token_call(http, fake, {**data, "code": code}))[0] == 200
    code = fake.issue_code(redirect_uri="https://app.example/cb")
    status, error = await token_call(
        http, fake, {**data, "code": code, "redirect_uri": "https://evil.example"}
    )
    assert (status, error["error"]) == (400, "invalid_grant")


async def test_token_endpoint_requires_client_auth_and_form(
    fake: FakePipedrive, http: aiohttp.ClientSession
) -> None:
    data = {"grant_type": "authorization_code", "code": fake.issue_code()}
    for headers in ({}, basic(fake.client_id, "wrong"), {"Authorization": "Basic !!"}):
        status, error = await token_call(http, fake, data, headers=headers)
        assert (status, error["error"], error["message"]) == (
            401,
            "invalid_client",
            "Invalid client: client is invalid",
        )
    status, error = await token_call(http, fake, None, json=data)
    assert status == 400
    assert error["message"] == "Invalid request: content must be application/x-www-form-urlencoded"
    # The code was never spent by the refused attempts.
    assert (await token_call(http, fake, data))[0] == 200
    assert [r.headers.get("Authorization") for r in fake.requests[:2]] == [None, "<redacted>"]


async def test_refresh(http: aiohttp.ClientSession) -> None:
    async with FakePipedrive(api_domain="https://company.example") as fake:
        first = fake.issue_token()
        grant = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        status, second = await token_call(http, fake, grant)
        assert status == 200
        assert second["refresh_token"] == first["refresh_token"]  # Pipedrive does not rotate it
        assert second["access_token"] != first["access_token"]
        assert second["api_domain"] == "https://company.example"

        fake.refresh_failures = 2
        for _ in range(2):
            status, error = await token_call(http, fake, grant)
            assert (status, error["error"]) == (400, "invalid_grant")
            assert error["message"] == "Invalid grant: refresh token is invalid"
        assert (await token_call(http, fake, grant))[0] == 200
        status, _ = await token_call(http, fake, {"grant_type": "refresh_token", "refresh_token": "nope"})
        assert status == 400
        status, error = await token_call(http, fake, {"grant_type": "password"})
        assert (status, error["error"]) == (400, "unsupported_grant_type")

        # The old access token is still valid after the refreshes.
        url = f"{fake.root_url}/api/v1/channels/x"
        assert (await call(http, "DELETE", url, {"Authorization": f"Bearer {first['access_token']}"}))[
            0
        ] == 404


async def test_token_latency_lets_callers_pile_up(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    fake.token_latency = 0.1
    grant = {"grant_type": "refresh_token", "refresh_token": fake.issue_token()["refresh_token"]}
    started = time.monotonic()
    results = await asyncio.gather(*(token_call(http, fake, grant) for _ in range(20)))
    assert {status for status, _ in results} == {200}
    assert 0.1 <= time.monotonic() - started < 0.5
    assert fake.token_requests == 20


async def test_authorize_echoes_query(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    async with http.get(fake.authorize_url, params={"client_id": "x", "state": "s"}) as response:
        assert response.status == 200
        assert (await response.json())["query"] == {"client_id": "x", "state": "s"}


# -- rate limiting ------------------------------------------------------------------------------------------


async def test_rate_headers_and_enforcement(http: aiohttp.ClientSession) -> None:
    async with FakePipedrive(rate_limit=3, enforce_rate_limit=True) as fake:
        url = f"{fake.base_url}/channels/ch1"
        auth, other = bearer(fake), bearer(fake)
        seen = []
        for _ in range(3):
            status, _, headers = await call(http, "DELETE", url, auth)
            seen.append((status, headers["x-ratelimit-limit"], headers["x-ratelimit-remaining"]))
        assert seen == [(404, "3", "2"), (404, "3", "1"), (404, "3", "0")]
        status, body, headers = await call(http, "DELETE", url, auth)
        assert status == 429
        assert body == {
            "success": False,
            "error": "Request over limit",
            "error_info": "Please check developers.pipedrive.com",
            "data": None,
            "additional_data": None,
        }
        assert headers["x-ratelimit-remaining"] == "0"
        assert 0 < float(headers["x-ratelimit-reset"]) <= 2
        assert "Retry-After" not in headers
        # Counted per token.
        assert (await call(http, "DELETE", url, other))[2]["x-ratelimit-remaining"] == "2"

        fake.enforce_rate_limit = False
        status, _, headers = await call(http, "DELETE", url, auth)
        assert (status, headers["x-ratelimit-remaining"]) == (404, "0")


async def test_rate_window_rolls(monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession) -> None:
    clock = [1000.0]
    # Only the fake's clock: asyncio keeps the real time.monotonic.
    monkeypatch.setattr(_server, "monotonic", lambda: clock[0])
    async with FakePipedrive(rate_limit=2, enforce_rate_limit=True) as fake:
        url = f"{fake.base_url}/channels/ch1"
        fake.add_access_token("t")
        auth = {"Authorization": "Bearer t"}

        async def reset_and_status() -> tuple[str, int]:
            status, _, headers = await call(http, "DELETE", url, auth)
            return headers["x-ratelimit-reset"], status

        assert await reset_and_status() == ("2.000", 404)
        clock[0] += 0.5
        assert await reset_and_status() == ("1.500", 404)  # a delta until the oldest request leaves
        assert await reset_and_status() == ("1.500", 429)
        clock[0] += 1.5  # the first request leaves the window; the 429 still counts
        assert await reset_and_status() == ("0.500", 429)
        clock[0] += 2.0
        assert await reset_and_status() == ("2.000", 404)


# -- fault injection ----------------------------------------------------------------------------------------


async def test_fail_next(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    url = f"{fake.base_url}/channels/ch1"
    auth = bearer(fake)
    fake.fail_next(2, 503)
    for _ in range(2):
        status, body, headers = await call(http, "DELETE", url, {})  # seen before auth is checked
        assert (status, body["error"], body["success"]) == (503, "Service unavailable", False)
        assert "x-ratelimit-limit" in headers
    assert (await call(http, "DELETE", url, auth))[0] == 404

    fake.fail_next(1, 410)
    assert (await call(http, "DELETE", url, auth))[:2] == (
        410,
        {
            "success": False,
            "error": "Gone",
            "error_info": "Please check developers.pipedrive.com",
            "data": None,
            "additional_data": None,
        },
    )

    fake.fail_next(1, 429, headers={"x-ratelimit-reset": "0.25"}, path="/messages/receive")
    assert (await call(http, "DELETE", url, auth))[0] == 404  # other paths pass
    status, body, headers = await call(
        http, "POST", f"{fake.base_url}/channels/messages/receive", auth, json={}
    )
    assert (status, body["error"], headers["x-ratelimit-reset"]) == (429, "Request over limit", "0.25")

    fake.fail_next(1, 418, body={"custom": True})
    assert (await call(http, "DELETE", url, auth))[:2] == (418, {"custom": True})


async def test_fail_next_with_html_body(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    fake.fail_next(1, 403, body="<html>Cloudflare</html>")
    async with http.delete(f"{fake.base_url}/channels/ch1") as response:
        assert response.status == 403
        assert response.content_type == "text/html"
        assert await response.text() == "<html>Cloudflare</html>"


async def test_drop_next(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    auth = bearer(fake)
    url = f"{fake.base_url}/channels"
    fake.drop_next(1, path="/channels")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(http, "POST", url, auth, json={"name": "n", "provider_channel_id": "ch1"})
    status, _, _ = await call(http, "POST", url, auth, json={"name": "n", "provider_channel_id": "ch1"})
    assert status == 200
    dropped, answered = fake.requests
    assert (dropped.status, dropped.json, answered.status) == (
        None,
        {"name": "n", "provider_channel_id": "ch1"},
        200,
    )
    assert dropped.headers["Authorization"] == "<redacted>"


async def test_latency_and_arrival_order(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    fake.latency = 0.05
    auth = bearer(fake)
    started = time.monotonic()
    await asyncio.gather(*(call(http, "DELETE", f"{fake.base_url}/channels/c{i}", auth) for i in range(5)))
    assert 0.05 <= time.monotonic() - started < 0.3
    stamps = [r.at for r in fake.requests]
    assert stamps == sorted(stamps)
    assert {r.status for r in fake.requests} == {404}


async def test_lifecycle_errors() -> None:
    fake = FakePipedrive()
    with pytest.raises(RuntimeError):
        _ = fake.root_url
    await fake.start()
    try:
        with pytest.raises(RuntimeError):
            await fake.start()
    finally:
        await fake.close()
    await fake.close()


# -- an independent oracle ---------------------------------------------------------------------------------


def test_the_fake_imports_nothing_from_the_rest_of_the_sdk() -> None:
    package = ROOT / "pipedrive_channels" / "testing"
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                assert node.level == 1, f"{path.name}:{node.lineno} imports from outside pipedrive_channels.testing"
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for name in names:
                    outside = name.partition(".")[0] == "pipedrive_channels" and not (
                        name == "pipedrive_channels.testing" or name.startswith("pipedrive_channels.testing.")
                    )
                    assert not outside, f"{path.name}:{node.lineno} imports {name}"


def test_importing_the_fake_loads_no_other_sdk_module() -> None:
    # The SDK's own __init__ stubbed out, so every module of the SDK that gets loaded is one the fake imported.
    code = textwrap.dedent(f"""
        import sys, types
        sys.modules["pipedrive_channels"] = root = types.ModuleType("pipedrive_channels")
        root.__path__ = [{str(ROOT / "pipedrive_channels")!r}]
        import pipedrive_channels.testing
        print(sorted(name for name in sys.modules if name.startswith("pipedrive_channels.")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = ast.literal_eval(out)
    assert "pipedrive_channels.testing._server" in loaded
    assert [name for name in loaded if not name.startswith("pipedrive_channels.testing")] == []


# -- its own process ----------------------------------------------------------------------------------------


async def start_process() -> tuple[asyncio.subprocess.Process, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipedrive_channels.testing",
        "--port",
        "0",
        "--access-token",
        "T",
        "--channel",
        "ch1",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
    assert line.startswith("READY http://127.0.0.1:")
    return process, line.split()[1]


async def test_subprocess_stops_on_sigterm(http: aiohttp.ClientSession) -> None:
    process, root_url = await start_process()
    try:
        status, _, _ = await call(
            http, "DELETE", f"{root_url}/v1/channels/ch1", {"Authorization": "Bearer T"}
        )
        assert status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 5) == 0


async def test_subprocess_stops_on_stdin_eof() -> None:
    process, _ = await start_process()
    assert process.stdin is not None
    process.stdin.close()
    assert await asyncio.wait_for(process.wait(), 5) == 0


async def test_fail_randomly(fake: FakePipedrive, http: aiohttp.ClientSession) -> None:
    url = f"{fake.base_url}/channels/ch1"
    auth = bearer(fake)
    fake.fail_randomly(0.3, 503)
    fake.fail_randomly(1.0, 429, headers={"Retry-After": "1"})
    statuses = [(await call(http, "DELETE", url, auth))[0] for _ in range(200)]
    assert set(statuses) == {503, 429} and 30 <= statuses.count(503) <= 90  # 30% of 200, loosely
    fake.fail_next(1, 410)
    assert (await call(http, "DELETE", url, auth))[0] == 410  # scheduled faults go first
    fake.clear_random_faults()
    assert (await call(http, "DELETE", url, auth))[0] == 404
    with pytest.raises(ValueError):
        fake.fail_randomly(1.5, 503)
