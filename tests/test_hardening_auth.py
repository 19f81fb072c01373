"""Issue 11, the OAuth and token items: redirects, secrets in errors, odd answers and files, api_domain,
refresh adoption and waste, stale temp files, timeouts. Every item has tests that failed before its fix; a few
cases (already refused domains, the temp file's mode) guard what was right already."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
from aiohttp import web
from aioresponses import aioresponses

from pipedrive_channels import (
    ApiError,
    AuthenticationError,
    ChannelsClient,
    JsonFileTokenStore,
    MemoryTokenStore,
    OAuthApp,
    OAuthToken,
    PipedriveError,
    RateBudget,
    RetryPolicy,
    TransportError,
    ValidationError,
)
from pipedrive_channels.auth import Authorizer
from pipedrive_channels.testing import FakePipedrive

REFRESH, SECRET, FRESH, FRESH_REFRESH = "ref-SECRET-2", "client-SECRET-3", "fresh-SECRET-5", "fresh-SECRET-6"
LATER = datetime.now(timezone.utc) + timedelta(hours=1)
PAST = datetime.now(timezone.utc) - timedelta(seconds=1)


def app_for(fake: FakePipedrive, **changes: Any) -> OAuthApp:
    return OAuthApp(fake.client_id, changes.pop("client_secret", fake.client_secret), token_url=fake.token_url,
                    **changes)


def minted(fake: FakePipedrive, **changes: Any) -> OAuthToken:
    """A token pair the fake accepts, minted without a token request (``token_requests`` stays 0)."""
    return attrs.evolve(OAuthToken.from_response(fake.issue_token(), datetime.now(timezone.utc)), **changes)


async def serve(handler: Any) -> tuple[web.AppRunner, str]:
    """A throwaway server on 127.0.0.1 answering every path with ``handler``; returns it and its root URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def until(condition: Any) -> None:
    while not condition():  # noqa: ASYNC110  (the fake's counters have no event to wait on)
        await asyncio.sleep(0.01)


def reachable_text(error: BaseException) -> str:
    """Everything an exception lets a caller or a log see: itself, its attributes, its whole chain."""
    seen: list[str] = []
    todo: list[BaseException | None] = [error]
    while todo:
        current = todo.pop()
        if current is None:
            continue
        seen += [repr(current), str(current), repr(getattr(current, "__dict__", {}))]
        todo += [current.__cause__, current.__context__]
    return "\n".join(seen)


# -- 2. the token endpoint's redirects are not followed ----------------------------------------------------


@pytest.mark.parametrize("status", [302, 307, 308])
async def test_a_token_endpoint_redirect_is_an_error_and_the_form_goes_nowhere_else(status: int) -> None:
    hits: list[str] = []

    async def elsewhere(request: web.Request) -> web.Response:
        hits.append(await request.text())
        return web.json_response({"access_token": "stolen"})

    other, other_url = await serve(elsewhere)

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": other_url.replace("127.0.0.1", "localhost") + "/x"})

    token_server, token_root = await serve(redirect)
    try:
        app = OAuthApp("client-id", SECRET, token_url=f"{token_root}/oauth/token")
        with pytest.raises(ApiError) as info:
            await app.refresh(OAuthToken("old", REFRESH))
    finally:
        await token_server.cleanup()
        await other.cleanup()
    assert hits == []
    assert info.value.status == status and f"HTTP {status}" in str(info.value) and "localhost" in str(info.value)
    assert REFRESH not in reachable_text(info.value)


# -- 9. no secret in an error, its chain or the log --------------------------------------------------------

ODD_ANSWERS = {
    "400 echoing the form": (400, {"error": "invalid_grant", "message": f"refresh token {REFRESH} is invalid",
                                   "form": {"refresh_token": REFRESH, "client_secret": SECRET}}),
    "200 with an unreadable expiry": (200, {"access_token": FRESH, "refresh_token": FRESH_REFRESH,
                                            "expires_in": "soon"}),
    "200 without an access token": (200, {"refresh_token": FRESH_REFRESH, "token": FRESH}),
    "503 holding a token": (503, {"access_token": FRESH, "refresh_token": FRESH_REFRESH, "error": "down"}),
    "200 as text": (200, f"access_token={FRESH}&refresh_token={FRESH_REFRESH}"),
}


@pytest.mark.parametrize(("status", "answer"), ODD_ANSWERS.values(), ids=ODD_ANSWERS)
async def test_odd_token_answers_leak_no_secret(
    status: int, answer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = OAuthApp("client-id", SECRET)
    basic = base64.b64encode(f"client-id:{SECRET}".encode()).decode()
    body = answer if isinstance(answer, str) else json.dumps(answer)
    with aioresponses() as mock:
        mock.post(app.token_url, status=status, body=body, headers={"x-echo": REFRESH})
        async with ChannelsClient(OAuthToken("old", REFRESH, PAST), app=app, base_url="https://x.example/v1",
                                  retry=RetryPolicy.none()) as client:
            with pytest.raises(PipedriveError) as info:
                await client.delete_channel("p")
    text = reachable_text(info.value) + caplog.text
    for secret in (REFRESH, SECRET, FRESH, FRESH_REFRESH, basic):
        assert secret not in text
    assert "OAuth token refresh failed" in caplog.text


async def test_an_unreachable_token_endpoint_chains_no_aiohttp_error() -> None:
    app = OAuthApp("client-id", SECRET, token_url="http://127.0.0.1:9/oauth/token")
    with pytest.raises(TransportError, match="token endpoint") as info:
        await app.refresh(OAuthToken("old", REFRESH))
    assert info.value.__cause__ is None and info.value.__context__ is None


# -- 10. odd answers and files are typed errors naming the field --------------------------------------------

ODD_TOKENS = {
    "a JSON array": (b"[1, 2]", "object"),
    "deeply nested JSON": (b"[" * 10_000 + b"]" * 10_000, "JSON"),
    "a huge expires_in": (b'{"access_token": "a", "expires_in": 1e20}', "expires_in"),
    "an infinite expires_in": (b'{"access_token": "a", "expires_in": Infinity}', "expires_in"),
    "a NaN expires_in": (b'{"access_token": "a", "expires_in": NaN}', "expires_in"),
    "a 400-digit expires_in": (b'{"access_token": "a", "expires_in": 1' + b"0" * 400 + b"}", "expires_in"),
    "a boolean expires_in": (b'{"access_token": "a", "expires_in": true}', "expires_in"),
    "a numeric refresh_token": (b'{"access_token": "a", "refresh_token": 5}', "refresh_token"),
    "a list as api_domain": (b'{"access_token": "a", "api_domain": ["x"]}', "api_domain"),
}


@pytest.mark.parametrize(("body", "field"), ODD_TOKENS.values(), ids=ODD_TOKENS)
async def test_odd_token_answers_are_typed_errors_naming_the_field(body: bytes, field: str) -> None:
    app = OAuthApp("client-id", SECRET)
    with aioresponses() as mock:
        mock.post(app.token_url, body=body)
        with pytest.raises(AuthenticationError, match=field):
            await app.exchange_code("code")


CORRUPT_FILES = {
    "not JSON": ('{"access_token": "' + FRESH, "token_file"),
    "deeply nested": ("[" * 100_000, "token_file"),
    "an array": ("[1]", "token_file"),
    "invalid UTF-8": ('{"access_token": "\udcff"}', "token_file"),
    "an unknown field": (json.dumps({"access_token": FRESH, "bogus": 1}), "bogus"),
    "a bad expiry": (json.dumps({"access_token": FRESH, "expires_at": "yesterday"}), "expires_at"),
    "a naive expiry": (json.dumps({"access_token": FRESH, "expires_at": "2026-01-01T00:00:00"}), "expires_at"),
    "a numeric scope": (json.dumps({"access_token": FRESH, "scope": 3}), "scope"),
}


@pytest.mark.parametrize(("text", "field"), CORRUPT_FILES.values(), ids=CORRUPT_FILES)
async def test_a_corrupt_token_file_is_a_validation_error(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "token.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ValidationError, match=field) as info:
        await JsonFileTokenStore(path).load()
    assert FRESH not in reachable_text(info.value)


# -- 16. api_domain must be a Pipedrive host -----------------------------------------------------------------

BAD_DOMAINS = [
    "https://acme.pipedrive.com.evil.example",
    "https://evilpipedrive.com",
    "https://user:pw@acme.pipedrive.com",
    "https://evil.example@acme.pipedrive.com",
    "https://acme.pipedrive.com:8443",
    "http://acme.pipedrive.com",
    "https://acme.pipedrive.com/elsewhere",
    "https://acme.pipedrive.com?x=1",
    "https://acme.pipedrive.com#x",
    "https://127.0.0.1:8443",
    "acme.pipedrive.com",
]


@pytest.mark.parametrize("domain", BAD_DOMAINS)
async def test_an_api_domain_outside_pipedrive_is_refused(domain: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="api_domain"):
        ChannelsClient(OAuthToken("t", api_domain=domain))
    # from a token file, adopted on open: refused before any request
    path = tmp_path / "token.json"
    await JsonFileTokenStore(path).save(OAuthToken("stored", REFRESH, LATER + timedelta(days=1), domain))
    client = ChannelsClient(OAuthToken("t", REFRESH, LATER), app=OAuthApp("id", SECRET),
                            token_store=JsonFileTokenStore(path))
    with pytest.raises(ValidationError, match="api_domain"):
        await client.open()
    await client.aclose()
    # with an explicit base_url the api_domain is not used, so it is not refused either
    assert ChannelsClient(OAuthToken("t", api_domain=domain), base_url="https://x.example/v1").base_url == (
        "https://x.example/v1"
    )


@pytest.mark.parametrize("domain", ["https://acme.pipedrive.com", "https://ACME.Pipedrive.com/",
                                    "https://pipedrive.com", "https://eu.acme-1.pipedrive.com"])
def test_a_pipedrive_api_domain_is_followed(domain: str) -> None:
    host = domain.lower().removeprefix("https://").rstrip("/")
    assert ChannelsClient(OAuthToken("t", api_domain=domain)).base_url == f"https://{host}/api/v1"


async def test_a_refresh_naming_another_host_is_refused_and_nothing_goes_there(fake: FakePipedrive) -> None:
    store = MemoryTokenStore()
    fake.api_domain = "https://acme.pipedrive.com.evil.example"
    token = minted(fake, api_domain="https://acme.pipedrive.com", expires_at=PAST)
    with aioresponses(passthrough=["http://127.0.0.1"]) as mock:
        async with ChannelsClient(token, app=app_for(fake), token_store=store) as client:
            with pytest.raises(ValidationError, match="api_domain"):
                await client.delete_channel("p")
            assert client.token == token and client.base_url == "https://acme.pipedrive.com/api/v1"
        assert not mock.requests  # no API request went anywhere
    assert fake.token_requests == 1 and await store.load() is None


async def test_the_base_url_follows_a_pipedrive_api_domain_after_a_refresh(fake: FakePipedrive) -> None:
    """Replaces test_integration's loopback version: a loopback api_domain now needs an explicit base_url."""
    fake.api_domain = "https://moved.pipedrive.com"
    token = minted(fake, api_domain="https://acme.pipedrive.com", expires_at=PAST)
    with aioresponses(passthrough=["http://127.0.0.1"]) as mock:
        mock.delete("https://moved.pipedrive.com/api/v1/channels/p", payload={"success": True, "data": None})
        async with ChannelsClient(token, app=app_for(fake)) as client:
            await client.delete_channel("p")
            assert client.base_url == "https://moved.pipedrive.com/api/v1"
    assert fake.token_requests == 1


# -- 15. a refresh is adopted even when every caller was cancelled ------------------------------------------


async def test_a_refresh_whose_callers_were_all_cancelled_is_still_adopted(fake: FakePipedrive) -> None:
    fake.token_latency = 0.2
    expired = minted(fake, expires_at=PAST)
    fake.expire_access_tokens()
    async with ChannelsClient(expired, app=app_for(fake), base_url=fake.base_url) as client:
        call = asyncio.ensure_future(client.add_channel(name="n", provider_channel_id="ch-1"))
        await asyncio.wait_for(until(lambda: fake.token_requests == 1), 5)
        call.cancel()
        await asyncio.wait_for(until(lambda: client.token != expired), 5)  # the refresh goes on, callerless
        await client.add_channel(name="n", provider_channel_id="ch-2")
    assert fake.token_requests == 1
    assert [r.status for r in fake.requests if "/channels" in r.path] == [200]


# -- 20. no wasted token requests or charges -----------------------------------------------------------------


async def test_a_rejected_proactive_refresh_is_tried_once_and_charges_nothing(fake: FakePipedrive) -> None:
    budget = RateBudget(requests_per_window=80, tokens_per_day=30_000)
    app = app_for(fake, client_secret="wrong")
    async with ChannelsClient(minted(fake, expires_at=PAST), app=app, base_url=fake.base_url,
                              budget=budget) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.add_channel(name="n", provider_channel_id="ch-1")
    assert info.value.status == 401 and fake.token_requests == 1
    assert not [r for r in fake.requests if "/channels" in r.path]
    assert budget.stats().tokens_charged == 0 and budget.stats().requests_admitted == 0


async def test_a_request_that_never_left_is_not_charged() -> None:
    budget = RateBudget(requests_per_window=80, tokens_per_day=30_000)
    async with ChannelsClient("t", base_url="http://127.0.0.1:9/v1", budget=budget,
                              retry=RetryPolicy.none()) as client:
        with pytest.raises(TransportError):
            await client.add_channel(name="n", provider_channel_id="ch-1")
    assert budget.stats().tokens_charged == 0


async def test_a_failed_refresh_is_final_for_the_calls_that_waited_on_it() -> None:
    app = OAuthApp("client-id", SECRET)
    authorizer = Authorizer(OAuthToken("old", REFRESH, LATER), app)
    generation = authorizer.generation  # noted by two calls that sent the old token and got 401
    with aioresponses() as mock:
        mock.post(app.token_url, status=400, payload={"error": "invalid_grant"}, repeat=True)
        for _ in range(2):
            with pytest.raises(AuthenticationError):
                await authorizer.refresh(generation, None)
        assert sum(len(calls) for calls in mock.requests.values()) == 1


async def test_a_token_shorter_lived_than_the_margin_is_refreshed_once_per_lifetime(fake: FakePipedrive) -> None:
    fake.access_token_ttl = 30  # below the 60 s margin
    async with ChannelsClient(minted(fake), app=app_for(fake), base_url=fake.base_url,
                              budget=RateBudget.unlimited()) as client:
        for index in range(20):
            await client.add_channel(name="n", provider_channel_id=f"ch-{index}")
    assert fake.token_requests <= 1


@pytest.mark.parametrize("ttl", [0, -5])
async def test_a_token_issued_expired_is_refreshed_at_most_once_per_call(fake: FakePipedrive, ttl: float) -> None:
    fake.access_token_ttl = ttl
    async with ChannelsClient(minted(fake), app=app_for(fake), base_url=fake.base_url,
                              budget=RateBudget.unlimited()) as client:
        for index in range(20):
            with pytest.raises(AuthenticationError):
                await client.add_channel(name="n", provider_channel_id=f"ch-{index}")
    assert fake.token_requests <= 21  # the first call's proactive refresh, then one per 401


# -- 22. the file store removes the temp files a crashed save left ------------------------------------------


@pytest.fixture
def stale(tmp_path: Path) -> Iterator[Path]:
    """A temp file with a token, as a save killed before its rename leaves it, from an hour ago."""
    leftover = tmp_path / ".token.json.k3j_x9a0"
    leftover.write_text(json.dumps({"access_token": FRESH}))
    an_hour_ago = time.time() - 3600
    os.utime(leftover, (an_hour_ago, an_hour_ago))
    yield leftover


@pytest.mark.parametrize("operation", ["load", "save"])
async def test_stale_temp_files_of_the_store_are_removed(tmp_path: Path, stale: Path, operation: str) -> None:
    others = [tmp_path / name for name in (".token.json.swp", ".other.json.abcd1234", "token.json.abcd1234")]
    for other in others:
        other.write_text("keep")
    in_progress = tmp_path / ".token.json.abcd1234"  # another process's save, under way
    in_progress.write_text("{}")
    store = JsonFileTokenStore(tmp_path / "token.json")
    if operation == "load":
        assert await store.load() is None
    else:
        await store.save(OAuthToken("a", REFRESH, LATER))
    assert set(os.listdir(tmp_path)) == {in_progress.name, *(other.name for other in others)} | (
        {"token.json"} if operation == "save" else set()
    )


async def test_the_temp_file_of_a_save_is_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    modes: list[int] = []
    replace = os.replace

    def spying_replace(source: str, target: Path) -> None:
        modes.append(stat.S_IMODE(os.stat(source).st_mode))
        replace(source, target)

    monkeypatch.setattr(os, "replace", spying_replace)
    await JsonFileTokenStore(tmp_path / "token.json").save(OAuthToken("a", REFRESH, LATER))
    assert modes == [0o600]


# -- 26. the token request has the app's timeout ------------------------------------------------------------


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A token URL on a server that accepts connections and never answers."""
    never = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await never.wait()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/oauth/token"
    server.close()


async def test_exchange_code_without_a_session_has_the_apps_timeout(silent_server: str) -> None:
    app = OAuthApp("client-id", SECRET, token_url=silent_server, timeout=0.2)
    with pytest.raises(TransportError, match="token endpoint"):
        await asyncio.wait_for(app.exchange_code("code"), 10)
    assert OAuthApp("client-id", SECRET).timeout == 30.0
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValidationError, match="timeout"):
            OAuthApp("client-id", SECRET, timeout=bad)


def test_urls_with_userinfo_are_refused_before_aiohttp_sees_them() -> None:
    with pytest.raises(ValidationError, match="base_url") as info:
        ChannelsClient("t", base_url="https://user:pass-SECRET@x.example/v1")
    assert "pass-SECRET" not in str(info.value)
    with pytest.raises(ValidationError, match="token_url"):
        OAuthApp("client-id", SECRET, token_url="https://user:pw@oauth.example/token")


async def test_redaction_replaces_every_secret_once_whatever_their_overlap() -> None:
    app = OAuthApp("client-id", "SECRET")
    answer = {"error": "invalid_grant", "message": "code SECRET-c0de and SECRET are wrong"}
    with aioresponses() as mock:
        mock.post(app.token_url, status=400, payload=answer)
        with pytest.raises(AuthenticationError) as info:
            await app.exchange_code("SECRET-c0de")
    assert info.value.body["message"] == "code <redacted> and <redacted> are wrong"
