"""The transport against hostile answers: redirects, secrets in exception chains, deep JSON, pages that do not
advance or have an odd shape, oversized and gzip-bomb answers, and the closed client's message (issue 11: items 2,
9, 10, 11, 14, 29).

Hostile servers are throwaway aiohttp servers (or a raw TCP server) on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aioresponses import CallbackResult, aioresponses

from pipedrive_channels import (
    ApiError,
    ApiToken,
    BadRequestError,
    ChannelsClient,
    Message,
    RateBudget,
    RetryPolicy,
    TransportError,
    ValidationError,
)
from pipedrive_channels.models import converter

TOKEN = "api-token-7f3a9c-secret"
MESSAGE = Message(
    id="m-1", channel_id="ch-1", sender_id="u-1", conversation_id="c-1", message="hi", status="sent",
    created_at=datetime(2022, 3, 1, 7, 58, 35, tzinfo=timezone.utc),
)
ECHO = {"success": True, "data": converter.unstructure(MESSAGE)}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[str]:
    """A throwaway aiohttp server on 127.0.0.1 answering every path with ``handler``; yields its root URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("")).rstrip("/")


def client_at(root: str, **kwargs: Any) -> ChannelsClient:
    # One request per call: no budget waits, no retries.
    return ChannelsClient(ApiToken(TOKEN), base_url=f"{root}/v1", budget=RateBudget.unlimited(),
                          retry=RetryPolicy.none(), **kwargs)


# -- item 2: redirects are never followed ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [302, 307, 308])
async def test_a_redirect_to_another_origin_is_an_error_and_the_other_origin_gets_nothing(status: int) -> None:
    elsewhere_hits: list[dict[str, str]] = []

    async def elsewhere(request: web.Request) -> web.StreamResponse:
        elsewhere_hits.append(dict(request.headers))
        return web.json_response(ECHO)

    async with serve(elsewhere) as other:
        location = f"{other}/collect?refresh_token=stolen-query"

        async def api(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, headers={"Location": location})

        async with serve(api) as root, client_at(root) as client:
            with pytest.raises(ApiError) as info:
                await client.receive_message(MESSAGE)
    assert elsewhere_hits == []
    assert info.value.status == status
    text = str(info.value)
    assert str(status) in text and "127.0.0.1" in text and "redirect" in text
    assert "stolen-query" not in text and "collect" not in text


async def test_a_redirect_of_a_get_is_not_followed_either() -> None:
    hits: list[str] = []

    async def api(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        if request.path == "/v1/deals":
            return web.Response(status=301, headers={"Location": "/v1/moved"})
        return web.json_response({"success": True, "data": []})

    async with serve(api) as root, client_at(root) as client:
        with pytest.raises(ApiError, match="301"):
            await client.request("GET", "/deals")
    assert hits == ["/v1/deals"]


# -- item 9: no secret in a TransportError's chain ---------------------------------------------------------------


def exception_chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [error]
    while todo:
        current = todo.pop()
        if current is None or any(current is known for known in seen):
            continue
        seen.append(current)
        todo += [current.__cause__, current.__context__]
    return seen


async def test_a_transport_error_chains_nothing_that_holds_the_request_headers() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 abc OK\r\n\r\n")  # aiohttp: ClientResponseError, holding request_info.headers
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with client_at(f"http://127.0.0.1:{port}") as client:
            with pytest.raises(TransportError) as info:
                await client.receive_message(MESSAGE)
    finally:
        server.close()
        await server.wait_closed()
    assert "400" in str(info.value)  # the reason is kept
    for error in exception_chain(info.value):
        assert TOKEN not in repr(error) and TOKEN not in str(error)
        assert getattr(error, "request_info", None) is None


# -- item 10: deeply nested JSON -----------------------------------------------------------------------------------

DEEP = "[" * 100_000


@pytest.mark.parametrize("body", [DEEP, '{"success": true, "data": ' + DEEP])
async def test_deeply_nested_json_in_an_answer_is_an_api_error(body: str) -> None:
    async with ChannelsClient(TOKEN, budget=RateBudget.unlimited(), retry=RetryPolicy.none()) as client:
        with aioresponses() as mocked:
            mocked.get("https://api.pipedrive.com/v1/deals", status=200, body=body)
            with pytest.raises(ApiError, match="not JSON") as info:
                await client.request("GET", "/deals")
    assert info.value.status == 200


@pytest.mark.parametrize(
    ("body", "data"),
    [('{"success":true,"data":[1]}', [1]), (' \n{"success": true, "data": [1]}\r\n ', [1]), ("", None)],
)
async def test_an_answer_decodes_as_json_loads_decodes_it(body: str, data: object) -> None:
    async with ChannelsClient(TOKEN, budget=RateBudget.unlimited(), retry=RetryPolicy.none()) as client:
        with aioresponses() as mocked:
            mocked.get("https://api.pipedrive.com/v1/deals", status=200, body=body)
            assert (await client.request("GET", "/deals")).data == data


@pytest.mark.parametrize("body", ['{"success": true} {"extra": 1}', '{"success": true}x', "nope", "[1,"])
async def test_an_answer_with_anything_but_one_json_value_is_an_api_error(body: str) -> None:
    async with ChannelsClient(TOKEN, budget=RateBudget.unlimited(), retry=RetryPolicy.none()) as client:
        with aioresponses() as mocked:
            mocked.get("https://api.pipedrive.com/v1/deals", status=200, body=body)
            with pytest.raises(ApiError, match="not JSON"):
                await client.request("GET", "/deals")


async def test_deeply_nested_json_in_an_error_body_is_kept_as_text() -> None:
    async with ChannelsClient(TOKEN, budget=RateBudget.unlimited(), retry=RetryPolicy.none()) as client:
        with aioresponses() as mocked:
            mocked.get("https://api.pipedrive.com/v1/deals", status=400, body=DEEP)
            with pytest.raises(BadRequestError) as info:
                await client.request("GET", "/deals")
    assert info.value.body == DEEP


# -- item 11: pages that do not advance, or have an odd shape ---------------------------------------------------

PAGES = re.compile(r"^https://api\.pipedrive\.com/(v1|api/v2)/leads.*$")


async def collect(answer: Any, version: str = "v1", limit: int = 20) -> list[Any]:
    """Page through ``/leads`` with ``answer`` as every page; fail the test past ``limit`` pages."""
    pages = 0

    def page(url: Any, **kwargs: Any) -> CallbackResult:
        nonlocal pages
        pages += 1
        assert pages < limit, "paginate() did not stop"
        return CallbackResult(payload=answer)

    async with ChannelsClient(TOKEN, budget=RateBudget.unlimited(), retry=RetryPolicy.none()) as client:
        with aioresponses() as mocked:
            mocked.get(PAGES, callback=page, repeat=True)
            return [item async for item in client.paginate("/leads", version=version)]


async def test_an_offset_that_does_not_advance_is_an_error() -> None:
    page = {"success": True, "data": [{"n": 1}],
            "additional_data": {"pagination": {"more_items_in_collection": True, "next_start": 0}}}
    with pytest.raises(ApiError, match="next_start"):
        await collect(page)


async def test_more_items_without_items_or_next_start_is_an_error() -> None:
    page = {"success": True, "data": [], "additional_data": {"pagination": {"more_items_in_collection": True}}}
    with pytest.raises(ApiError, match="next_start"):
        await collect(page)


async def test_a_cursor_seen_before_is_an_error() -> None:
    page = {"success": True, "data": [{"n": 1}], "additional_data": {"next_cursor": "c-1"}}
    items: list[Any] = []
    with pytest.raises(ApiError, match="next_cursor"):
        items = await collect(page, version="v2")
    assert items == []  # the repeated page's items are not yielded twice


async def test_a_cursor_cycle_is_an_error() -> None:
    served: list[str] = []
    async with ChannelsClient(TOKEN, budget=RateBudget.unlimited(), retry=RetryPolicy.none()) as client:
        with aioresponses() as mocked:
            def page(url: Any, **kwargs: Any) -> CallbackResult:
                cursor = "ab"[len(served) % 2]
                served.append(cursor)
                assert len(served) < 10, "paginate() did not stop"
                return CallbackResult(payload={"success": True, "data": [cursor], "additional_data": {
                    "next_cursor": cursor}})

            mocked.get(PAGES, callback=page, repeat=True)
            items = []
            with pytest.raises(ApiError, match="next_cursor"):
                async for item in client.paginate("/leads", version="v2"):
                    items.append(item)
                    assert len(items) < 10, "paginate() did not stop"
    assert items == ["a", "b"] and served == ["a", "b", "a"]


@pytest.mark.parametrize(
    ("version", "page", "field"),
    [
        ("v1", {"data": "abc"}, "data"),
        ("v1", {"data": 7}, "data"),
        ("v1", {"data": {"id": 1}}, "data"),
        ("v2", {"data": "abc"}, "data"),
        ("v1", {"data": [], "additional_data": "x"}, "additional_data"),
        ("v2", {"data": [], "additional_data": [1]}, "additional_data"),
        ("v1", {"data": [], "additional_data": {"pagination": "more"}}, "pagination"),
        ("v1", {"data": [1], "additional_data": {"pagination": {"more_items_in_collection": "yes",
                                                                "next_start": 1}}}, "more_items_in_collection"),
        ("v1", {"data": [1], "additional_data": {"pagination": {"more_items_in_collection": True,
                                                                "next_start": "1"}}}, "next_start"),
        ("v1", {"data": [1], "additional_data": {"pagination": {"more_items_in_collection": True,
                                                                "next_start": True}}}, "next_start"),
        ("v2", {"data": [1], "additional_data": {"next_cursor": 5}}, "next_cursor"),
    ],
)
async def test_an_odd_page_shape_is_an_error_naming_the_field(version: str, page: dict[str, Any], field: str) -> None:
    with pytest.raises(ApiError, match=field) as info:
        await collect({"success": True, **page}, version=version)
    assert info.value.status == 200


async def test_null_data_and_no_additional_data_end_the_pages() -> None:
    assert await collect({"success": True, "data": None}) == []
    assert await collect({"success": True, "data": None, "additional_data": None}, version="v2") == []
    assert await collect({"success": True, "data": [1], "additional_data": {"pagination": None}}) == [1]


# -- item 14: a cap on the answer's decoded size -------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "8"])
def test_max_answer_bytes_must_be_a_positive_int(value: Any) -> None:
    with pytest.raises(ValidationError, match="max_answer_bytes"):
        ChannelsClient(TOKEN, max_answer_bytes=value)


class Peers:
    """Remembers the client port of each request, to tell a reused connection from a new one."""

    def __init__(self) -> None:
        self.ports: list[int] = []

    def note(self, request: web.Request) -> None:
        assert request.transport is not None
        self.ports.append(request.transport.get_extra_info("peername")[1])


def small_json(request: web.Request) -> web.StreamResponse:
    return web.json_response({"success": True, "data": {"ok": True}})


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_an_answer_over_the_cap_is_an_error_and_its_connection_is_dropped(streamed: bool) -> None:
    peers = Peers()
    fits = json.dumps({"success": True, "data": "x" * 900}).encode()
    # Larger than the socket buffers can hold, so that the client has not received it all when it stops.
    big = fits + b" " * (32 << 20)

    async def api(request: web.Request) -> web.StreamResponse:
        peers.note(request)
        body = {"/v1/fits": fits, "/v1/big": big}.get(request.path)
        if body is None:
            return small_json(request)
        if not streamed:
            return web.Response(body=body, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):  # the client hangs up once past its cap
            for start in range(0, len(body), 1 << 16):
                await response.write(body[start:start + (1 << 16)])
            await response.write_eof()
        return response

    cap = len(fits)
    async with serve(api) as root, client_at(root, max_answer_bytes=cap) as client:
        assert (await client.request("GET", "/fits")).data == "x" * 900  # exactly the cap is fine
        with pytest.raises(ApiError, match=f"max_answer_bytes.*{cap}") as info:
            await client.request("GET", "/big")
        assert (await client.request("GET", "/after")).data == {"ok": True}
    assert info.value.status == 200
    assert peers.ports[0] == peers.ports[1] != peers.ports[2]  # kept alive until the oversized answer, not after


async def test_an_endless_plain_answer_is_cut_at_the_default_cap() -> None:
    sent = 0
    done = asyncio.Event()

    async def api(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            chunk = b"0," * 32_768
            while sent < 1 << 30:  # 1 GiB: far more than any client should take
                await response.write(chunk)
                sent += len(chunk)
        finally:
            done.set()
        return response

    async with serve(api) as root, client_at(root) as client:
        with pytest.raises(ApiError, match="max_answer_bytes") as info:
            await asyncio.wait_for(client.request("GET", "/deals"), 30)
        await asyncio.wait_for(done.wait(), 10)  # the server saw the connection go away
    assert "8388608" in str(info.value)
    assert sent < 1 << 28


@functools.cache
def gzip_bomb() -> bytes:
    """A gzip body of about 200 KB that inflates to 210 MB of JSON."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [compressor.compress(b'{"success": true, "data": "')]
    megabyte = b"0" * (1 << 20)
    parts += [compressor.compress(megabyte) for _ in range(210)]
    parts += [compressor.compress(b'"}'), compressor.flush()]
    return b"".join(parts)


async def test_a_gzip_bomb_is_cut_on_the_decoded_stream() -> None:
    bomb = gzip_bomb()
    assert len(bomb) < 250_000
    peers = Peers()

    async def api(request: web.Request) -> web.StreamResponse:
        peers.note(request)
        if request.path == "/v1/bomb":
            return web.Response(body=bomb, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        return small_json(request)

    async with serve(api) as root, client_at(root) as client:
        await client.request("GET", "/before")
        with pytest.raises(ApiError, match="max_answer_bytes"):
            await asyncio.wait_for(client.request("GET", "/bomb"), 30)
        await client.request("GET", "/after")
    assert peers.ports[0] == peers.ports[1] != peers.ports[2]


async def test_a_small_gzip_answer_still_decodes() -> None:
    body = zlib.compress(json.dumps({"success": True, "data": [1, 2, 3]}).encode(), wbits=31)

    async def api(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})

    async with serve(api) as root, client_at(root, max_answer_bytes=1_000) as client:
        assert (await client.request("GET", "/deals")).data == [1, 2, 3]


# -- item 29: the closed client's message ----------------------------------------------------------------------------


async def test_a_closed_client_says_so_and_cannot_be_reopened() -> None:
    client = ChannelsClient(TOKEN)
    async with client:
        pass
    with pytest.raises(RuntimeError, match="this client is closed; create a new one"):
        await client.delete_channel("p")
    with pytest.raises(RuntimeError, match="this client is closed; create a new one"):
        await client.open()
    with pytest.raises(RuntimeError, match="this client is closed; create a new one"):
        async with client:
            pass


async def test_a_client_never_opened_says_how_to_open_it() -> None:
    client = ChannelsClient(TOKEN)
    with pytest.raises(RuntimeError, match=r"not open: use `async with ChannelsClient\(...\)` or `await open\(\)`"):
        await client.delete_channel("p")
