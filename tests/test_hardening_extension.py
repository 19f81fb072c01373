"""Issue 11 (hardening), the Messaging app extension: client errors answer 400 (#12), the upload cap counts the whole
body, parts are limited and a stalled body times out (#13), path IDs are identifiers (#23), the manifest takes only
a ChannelProvider (#28), and the extension's models keep strings strings (#8)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from extension_shop import AUTH, BASE, Http, Minimal, Shop, serve
from omnichannel_spec import assert_error_shape
from yarl import URL

from pipedrive_channels import ValidationError
from pipedrive_channels.extension import MAX_FORM_PARTS, FilePart, UninstallEvent, create_app, manifest

BOUNDARY = "XyZ"
MULTIPART = {**AUTH, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def multipart(*parts: tuple[bytes, bytes]) -> bytes:
    """A multipart body from (raw header block, content) pairs, written by hand so the headers can be wrong."""
    body = b"".join(b"--%s\r\n%s\r\n\r\n%s\r\n" % (BOUNDARY.encode(), headers, content) for headers, content in parts)
    return body + b"--%s--\r\n" % BOUNDARY.encode()


def field(name: str, value: bytes) -> tuple[bytes, bytes]:
    return b'Content-Disposition: form-data; name="%s"' % name.encode(), value


REQUIRED = [field("message", b"hi"), field("senderId", b"agent"), field("conversationId", b"c1")]
DISPOSITION = b'Content-Disposition: form-data; name="message"'


async def assert_bad_request(response: Any, status: int = 400) -> None:
    assert response.status == status, await response.text()
    assert_error_shape(await response.json(), "BAD_REQUEST")


# -- #12: a malformed body is the client's error ---------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_header",
    [
        b"X-Bad\x01Name: v",  # a control byte in the name
        b"X-Nul: a\x00b",  # NUL in the value
        b"X-Del\x7f: v",  # DEL
        b"X-Cr: a\rb",  # a lone CR
        "X-Naïve: v".encode(),  # a non-ASCII name
        b": no name",  # an empty name
        b"NoColonAtAll",  # no colon
        b"X-Long: " + b"a" * 9_000,  # a line over aiohttp's 8,190 bytes
    ],
)
async def test_a_malformed_part_header_is_a_bad_request(http: Http, shop: Shop, bad_header: bytes) -> None:
    body = multipart(*REQUIRED, (DISPOSITION + b"\r\n" + bad_header, b"x"))
    response = await http.post(f"{BASE}/messages", data=body, headers=MULTIPART)
    await assert_bad_request(response)
    assert shop.calls == []


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded; charset=x-no-such-charset", b"message=hi&senderId=a&conversationId=c"),
        ("application/x-www-form-urlencoded", b"message=\xff\xfe&senderId=a&conversationId=c"),
        ("application/x-www-form-urlencoded", b"message=%FF%FE&senderId=a&conversationId=c"),
        (f"multipart/form-data; boundary={BOUNDARY}", multipart(*REQUIRED[1:], field("message", b"\xff"))),
    ],
)
async def test_a_form_in_an_unknown_charset_or_invalid_utf8_is_a_bad_request(
    http: Http, shop: Shop, content_type: str, body: bytes
) -> None:
    response = await http.post(f"{BASE}/messages", data=body, headers={**AUTH, "Content-Type": content_type})
    await assert_bad_request(response)
    assert shop.calls == []


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"client_id": "pd-client", "company_id": "\xc2\xb2", "user_id": 8}', "application/json"),
        (b'{"client_id": "pd-client", "company_id": "' + b"9" * 5_000 + b'", "user_id": 8}', "application/json"),
        (b'{"client_id": "pd-client", "company_id": ' + b"9" * 5_000 + b', "user_id": 8}', "application/json"),
        (b'{"client_id": "pd-client", "company_id": 7, "user_id": -1}', "application/json"),
        (b'{"client_id": "pd-client", "company_id": 7, "user_id": 8, "timestamp": {"t": 1}}', "application/json"),
        (b"[" * 30_000 + b"]" * 30_000, "application/json"),  # RecursionError, under the callback's 64 KiB cap
        (b'{"client_id": "' + b"x" * 70_000 + b'", "company_id": 7, "user_id": 8}', "application/json"),
        (b'{"client_id": "pd-client", "company_id": 7, "user_id": 8}', "application/json; charset=x-no-such-charset"),
        (b'{"client_id": "pd-client", "company_id": 7, "user_id": 8, "timestamp": "\xff"}', "application/json"),
    ],
)
async def test_a_malformed_uninstall_callback_is_a_bad_request(
    http: Http, shop: Shop, body: bytes, content_type: str
) -> None:
    response = await http.delete("/pipedrive/callback", data=body, headers={**AUTH, "Content-Type": content_type})
    await assert_bad_request(response, 413 if len(body) > 64 * 1024 else 400)
    assert shop.calls == []


async def test_a_providers_own_value_error_is_still_a_500(
    http: Http, shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    shop.fail_with = ValueError("the provider's bug")
    with caplog.at_level(logging.ERROR, "pipedrive_channels.extension"):
        response = await http.post(f"{BASE}/messages", data=multipart(*REQUIRED), headers=MULTIPART)
        assert response.status == 500
        response = await http.delete("/pipedrive/callback", json={"client_id": "x", "company_id": 1, "user_id": 2},
                                     headers=AUTH)
        assert response.status == 500
    assert "the provider's bug" in caplog.text


# -- #13: the whole body counts, parts are limited, a stalled body times out -----------------------------------


async def chunked(body: bytes, size: int = 4_096) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_many_small_parts_count_against_the_cap_even_chunked(shop: Shop) -> None:
    # 400 one-byte recipientIds parts: 400 bytes of content, ~30 KB of part headers and boundaries.
    body = multipart(*REQUIRED, *[field("recipientIds", b"r")] * 400)
    assert len(body) > 20_000
    http = await serve(shop, max_upload_bytes=10_000)
    try:
        response = await http.post(f"{BASE}/messages", data=chunked(body), headers=MULTIPART)
        await assert_bad_request(response, 413)
        assert shop.calls == []
    finally:
        await http.close()


async def test_an_urlencoded_form_counts_against_the_cap_too(shop: Shop) -> None:
    body = b"senderId=a&conversationId=c&message=" + b"a" * 20_000  # under aiohttp's own 1 MiB client_max_size
    http = await serve(shop, max_upload_bytes=10_000)
    try:
        headers = {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}
        response = await http.post(f"{BASE}/messages", data=chunked(body), headers=headers)
        await assert_bad_request(response, 413)
    finally:
        await http.close()


async def test_the_number_of_parts_is_limited(http: Http, shop: Shop) -> None:
    body = multipart(*REQUIRED, *[field("recipientIds", b"r")] * MAX_FORM_PARTS)
    response = await http.post(f"{BASE}/messages", data=chunked(body), headers=MULTIPART)
    await assert_bad_request(response, 413)
    body = b"message=hi&senderId=a&conversationId=c" + b"&recipientIds=r" * MAX_FORM_PARTS
    response = await http.post(f"{BASE}/messages", data=body,
                               headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"})
    await assert_bad_request(response)
    assert shop.calls == []
    body = multipart(*REQUIRED, *[field("recipientIds", b"r")] * 10)  # well under the limit: fine
    response = await http.post(f"{BASE}/messages", data=chunked(body), headers=MULTIPART)
    assert response.status == 200


async def _stall(http: Http, head: bytes, first_bytes: bytes) -> bytes:
    """Send ``head`` and the first bytes of a body, then nothing: return all the server sends until it closes."""
    assert http.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", http.server.port)
    try:
        writer.write(head + first_bytes)
        await writer.drain()
        return await reader.read()  # until EOF: the server must close the connection itself
    finally:
        writer.close()


async def test_stalled_uploads_are_answered_408_and_closed(shop: Shop) -> None:
    http = await serve(shop, body_timeout=0.5)
    auth = AUTH["Authorization"].encode()
    by_length = (b"POST /pipedrive/channels/ch1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
                 b"Content-Type: multipart/form-data; boundary=%s\r\nContent-Length: 5000\r\n\r\n"
                 % (auth, BOUNDARY.encode()))
    by_chunks = by_length.replace(b"Content-Length: 5000", b"Transfer-Encoding: chunked")
    callback = (b"DELETE /pipedrive/callback HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
                b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n" % auth)
    try:
        # 100 uploads stalled after 10 bytes (the probe), by Content-Length and chunked, and 20 callbacks.
        stalls = [_stall(http, by_length, b"--XyZ\r\nCon") for _ in range(50)]
        stalls += [_stall(http, by_chunks, b"a\r\n--XyZ\r\nCon\r\n") for _ in range(50)]
        stalls += [_stall(http, callback, b'{"client_i') for _ in range(20)]
        answers = await asyncio.wait_for(asyncio.gather(*stalls), 20)  # a hang guard, not a timing assertion
        for answer in answers:
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
            assert b'"code": "BAD_REQUEST"' in answer
        assert shop.calls == []
    finally:
        await http.close()


def test_body_timeout_must_be_a_positive_number() -> None:
    for bad in (0, -1, float("nan"), float("inf"), "30", True):
        with pytest.raises(ValidationError) as info:
            create_app(Shop(), client_id="i", client_secret="s", body_timeout=bad)  # type: ignore[arg-type]
        assert info.value.field == "body_timeout"


# -- #23: path IDs are identifiers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/pipedrive/channels/..%2F..%2Fetc/conversations", "providerChannelId"),
        ("/pipedrive/channels/a%00b/conversations", "providerChannelId"),
        ("/pipedrive/channels/a%0D%0ASet-Cookie:x/conversations", "providerChannelId"),
        ("/pipedrive/channels/a%C2%85b/conversations", "providerChannelId"),  # U+0085, a C1 line break
        ("/pipedrive/channels/%2E%2E/conversations", "providerChannelId"),
        ("/pipedrive/channels/ch1/conversations/a%7Fb", "sourceConversationId"),
        ("/pipedrive/channels/ch1/senders/..%2Fadmin", "senderId"),
        ("/pipedrive/channels/ch1/messages/a%09b", "sourceMessageId"),
    ],
)
async def test_a_path_id_that_is_not_an_identifier_is_refused(http: Http, shop: Shop, path: str, name: str) -> None:
    response = await http.get(URL(path, encoded=True), headers=AUTH)
    await assert_bad_request(response)
    assert name in (await response.json())["data"]["message"]
    assert shop.calls == []


async def test_ordinary_ids_still_reach_the_provider(http: Http, shop: Shop) -> None:
    response = await http.get(URL("/pipedrive/channels/ch%C3%A91.x/senders/al-ice_1", encoded=True), headers=AUTH)
    assert response.status == 200
    assert shop.calls == [("get_sender", ("ché1.x", "al-ice_1"))]


async def test_the_path_check_runs_after_the_credentials_check(http: Http) -> None:
    response = await http.get(URL("/pipedrive/channels/a%00b/conversations", encoded=True))
    assert response.status == 401


# -- #28: the manifest takes only a ChannelProvider --------------------------------------------------------------


@pytest.mark.parametrize("provider", ["/pipedrive", object(), object, None, web.Application])
def test_the_manifest_refuses_anything_but_a_channel_provider(provider: Any) -> None:
    with pytest.raises(ValidationError) as info:
        manifest("https://bot.example.com", provider)
    assert info.value.field == "provider"


def test_the_manifest_takes_a_provider_class_or_instance() -> None:
    assert manifest("https://bot.example.com", Minimal) == manifest("https://bot.example.com", Minimal())
    assert len(manifest("https://bot.example.com", Minimal)["endpoints"]) == 3


# -- #8: the extension's models keep strings strings -----------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"client_id": None, "company_id": 7, "user_id": 8}, "client_id"),
        ({"client_id": "c", "company_id": "7", "user_id": 8}, "company_id"),
        ({"client_id": "c", "company_id": 7, "user_id": True}, "user_id"),
        ({"client_id": "c", "company_id": 7, "user_id": 8, "timestamp": 1767322800}, "timestamp"),
    ],
)
def test_an_uninstall_event_checks_its_types(fields: dict[str, Any], name: str) -> None:
    with pytest.raises(ValidationError) as info:
        UninstallEvent(**fields)
    assert info.value.field == name


def test_a_file_part_holds_bytes() -> None:
    with pytest.raises(ValidationError) as info:
        FilePart(name="a.txt", content_type="text/plain", data="text")  # type: ignore[arg-type]
    assert info.value.field == "data"


async def test_the_uninstall_callback_does_not_turn_a_timestamp_object_into_text(http: Http, shop: Shop) -> None:
    payload = {"client_id": "pd-client", "company_id": 7, "user_id": 8, "timestamp": ["2026-01-02"]}
    response = await http.delete("/pipedrive/callback", json=payload, headers=AUTH)
    await assert_bad_request(response)
    assert shop.calls == []

