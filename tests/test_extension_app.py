"""The Messaging app extension served by ``create_app``, driven as Pipedrive drives it (the omnichannel spec):
every endpoint's shape, the credentials check, the errors and the uninstall callback."""

from __future__ import annotations

import base64
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import jsonschema
import pytest
from extension_shop import AUTH, BASE, CLIENT_ID, CLIENT_SECRET, ROUTES, Http, Shop, serve, shop_conversation
from omnichannel_spec import SPEC_PATH, assert_error_shape, assert_matches_spec, spec

from pipedrive_channels import ValidationError
from pipedrive_channels.extension import Page, ProviderError, UninstallEvent, create_app

# -- the spec's response schemas ------------------------------------------------------------------------------


def test_the_omnichannel_spec_is_available() -> None:
    if spec() is None:
        pytest.skip(f"{SPEC_PATH} is absent: every response-schema assertion in this module is skipped")


def test_the_schema_check_catches_a_wrong_shape() -> None:
    if spec() is None:
        pytest.skip(f"{SPEC_PATH} is absent: no schema to check against")
    with pytest.raises(jsonschema.ValidationError):
        assert_matches_spec("getConversations", 200, {"success": True, "data": [{"id": "c1", "link": ""}]})
    with pytest.raises(jsonschema.ValidationError):
        assert_matches_spec("getMessageById", 200, {"id": "m", "status": "lost", "created_at": "x", "message": "",
                                                    "sender_id": "s"})


# -- every endpoint's shape -----------------------------------------------------------------------------------


async def test_get_conversations_answers_the_spec_shape_and_its_cursor_round_trips(http: Http, shop: Shop) -> None:
    seen: list[str] = []
    after: str | None = None
    for _ in range(5):
        params = {"conversations_limit": "2", "messages_limit": "3", **({"after": after} if after else {})}
        response = await http.get(f"{BASE}/conversations", params=params, headers=AUTH)
        assert response.status == 200
        body = await response.json()
        assert_matches_spec("getConversations", 200, body)
        assert body["success"] is True
        seen += [c["id"] for c in body["data"]]
        assert all(len(c["messages"]) == 3 and c["next_messages_cursor"] == "3" for c in body["data"])
        after = body["additional_data"].get("after")
        if after is None:
            break
    assert seen == ["c0", "c1", "c2", "c3", "c4"]
    assert [args[3] for name, args in shop.calls] == [None, "2", "4"]
    first = (await (await http.get(f"{BASE}/conversations", headers=AUTH)).json())["data"][0]
    assert first["messages"][0]["created_at"] == "2026-01-02 03:04"
    assert first["messages"][0]["reply_by"] == "2026-01-03 03:04"
    assert first["messages"][0]["attachments"] == [
        {"id": "a1", "type": "image/png", "url": "https://files.example.com/a1.png", "link_expires": True}
    ]
    assert "reply_by" not in first["messages"][1]
    assert first["participants"][0] == {"id": "agent", "name": "Agent Smith", "role": "source_user",
                                        "fetch_avatar": False, "avatar_expires": False}


@pytest.mark.parametrize(
    ("query", "expected"),
    [({}, (30, 30)), ({"conversations_limit": "1000", "messages_limit": "0"}, (100, 1)),
     ({"conversations_limit": "-5", "messages_limit": " 7 "}, (1, 7))],
)
async def test_limits_default_to_30_and_are_clamped_to_1_to_100(
    http: Http, shop: Shop, query: dict[str, str], expected: tuple[int, int]
) -> None:
    response = await http.get(f"{BASE}/conversations", params=query, headers=AUTH)
    assert response.status == 200
    assert shop.calls[-1][1][1:3] == expected


async def test_a_limit_that_is_not_a_number_is_a_bad_request(http: Http, shop: Shop) -> None:
    response = await http.get(f"{BASE}/conversations", params={"messages_limit": "lots"}, headers=AUTH)
    assert response.status == 400
    assert_error_shape(await response.json(), "BAD_REQUEST")
    assert shop.calls == []


async def test_get_conversation_pages_messages_with_next_messages_cursor(http: Http, shop: Shop) -> None:
    ids: list[str] = []
    after: str | None = None
    while True:
        params = {"messages_limit": "3", **({"after": after} if after else {})}
        response = await http.get(f"{BASE}/conversations/c2", params=params, headers=AUTH)
        body = await response.json()
        assert response.status == 200
        assert_matches_spec("getConversationById", 200, body)
        ids += [m["id"] for m in body["data"]["messages"]]
        after = body["data"].get("next_messages_cursor")
        assert body["additional_data"].get("after") == after
        if after is None:
            break
    assert ids == [f"c2-m{n}" for n in range(7)]


async def test_an_unknown_conversation_answers_the_providers_404(http: Http) -> None:
    response = await http.get(f"{BASE}/conversations/nope", headers=AUTH)
    assert response.status == 404
    body = await response.json()
    assert_matches_spec("getConversationById", 404, body)
    assert body == {"success": False, "data": {"message": "no conversation nope", "code": "NOT_FOUND"}}


def _form(files: int = 2, size: int = 10) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("message", "Hi there ✓")
    form.add_field("senderId", "agent")
    form.add_field("conversationId", "c1")
    form.add_field("recipientIds", "alice,bob")
    for n in range(files):
        form.add_field("files", bytes([65 + n]) * size, filename=f"f{n}.txt", content_type="text/plain")
    return form


async def test_post_message_parses_the_multipart_form_with_two_files(http: Http, shop: Shop) -> None:
    response = await http.post(f"{BASE}/messages", data=_form(files=2), headers=AUTH)
    assert response.status == 200
    body = await response.json()
    assert_matches_spec("postMessage", 200, body)
    assert body == {"success": True, "data": {"id": "msg-1"}}
    (name, (channel_id, outgoing)), = shop.calls
    assert (name, channel_id) == ("post_message", "ch1")
    assert outgoing.message == "Hi there ✓"
    assert (outgoing.sender_id, outgoing.conversation_id, outgoing.recipient_ids) == ("agent", "c1", ("alice", "bob"))
    assert [(f.name, f.content_type, f.data) for f in outgoing.files] == [
        ("f0.txt", "text/plain", b"A" * 10), ("f1.txt", "text/plain", b"B" * 10)
    ]


async def test_post_message_takes_repeated_recipient_fields_too(http: Http, shop: Shop) -> None:
    form = aiohttp.FormData({"message": "x", "senderId": "agent", "conversationId": "c1"})
    form.add_field("recipientIds[]", "alice")
    form.add_field("recipientIds[]", "bob")
    form.add_field("files", b"", filename="empty.bin", content_type="application/octet-stream")  # force multipart
    response = await http.post(f"{BASE}/messages", data=form, headers=AUTH)
    assert response.status == 200
    assert shop.calls[0][1][1].recipient_ids == ("alice", "bob")


@pytest.mark.parametrize("size", [5_000, 200_000])  # past the cap while streaming, and by Content-Length
async def test_an_oversize_upload_is_refused_with_413(shop: Shop, size: int) -> None:
    http = await serve(shop, max_upload_bytes=1_000)
    try:
        response = await http.post(f"{BASE}/messages", data=_form(files=1, size=size), headers=AUTH)
        assert response.status == 413
        assert_error_shape(await response.json(), "BAD_REQUEST")
        assert shop.calls == []
    finally:
        await http.close()


async def test_a_form_without_its_required_fields_is_a_bad_request(http: Http, shop: Shop) -> None:
    form = aiohttp.FormData()
    form.add_field("message", "hi")
    form.add_field("files", b"x", filename="x.txt")
    response = await http.post(f"{BASE}/messages", data=form, headers=AUTH)
    assert response.status == 400
    body = await response.json()
    assert_matches_spec("postMessage", 400, body)
    assert "senderId" in body["data"]["message"]
    response = await http.post(f"{BASE}/messages", json={"message": "hi"}, headers=AUTH)
    assert response.status == 400
    assert shop.calls == []


@pytest.mark.parametrize(
    ("path", "conversation_id"), [(f"{BASE}/messages/c3-m0", None), (f"{BASE}/conversations/c3/messages/c3-m0", "c3")]
)
async def test_get_message_by_id_answers_a_bare_message_on_both_path_forms(
    http: Http, shop: Shop, path: str, conversation_id: str | None
) -> None:
    response = await http.get(path, headers=AUTH)
    assert response.status == 200
    body = await response.json()
    assert_matches_spec("getMessageById", 200, body)
    assert "success" not in body and "data" not in body
    assert body["status"] == "read"
    assert shop.calls == [("get_message", ("ch1", "c3-m0", conversation_id))]


async def test_get_sender_get_templates_and_delete_channel_answer_the_spec_shapes(http: Http, shop: Shop) -> None:
    response = await http.get(f"{BASE}/senders/alice", headers=AUTH)
    body = await response.json()
    assert_matches_spec("getSenderById", 200, body)
    assert body == {"success": True, "data": {"id": "alice", "name": "Alice",
                                              "avatar_url": "https://img.example.com/alice.png"}}
    response = await http.get(f"{BASE}/templates", headers=AUTH)
    body = await response.json()
    assert_matches_spec("getTemplates", 200, body)
    assert [t["id"] for t in body["data"]["templates"]] == ["t1", "t2"]
    response = await http.delete(BASE, headers=AUTH)
    body = await response.json()
    assert_matches_spec("deleteChannelById", 200, body)
    assert body == {"success": True}
    assert [name for name, _ in shop.calls] == ["get_sender", "get_templates", "delete_channel"]


# -- authentication -------------------------------------------------------------------------------------------
BAD_AUTH = [
    {},
    {"Authorization": "Basic " + base64.b64encode(f"{CLIENT_ID}:wrong".encode()).decode()},
    {"Authorization": "Basic " + base64.b64encode(f"someone:{CLIENT_SECRET}".encode()).decode()},
    {"Authorization": "Basic " + base64.b64encode(f"{CLIENT_ID}{CLIENT_SECRET}".encode()).decode()},
    {"Authorization": "Basic not*base64"},
    {"Authorization": f"Bearer {CLIENT_SECRET}"},
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("headers", BAD_AUTH, ids=["missing", "secret", "user", "no-colon", "garbage", "bearer"])
async def test_every_route_refuses_wrong_or_missing_credentials(
    http: Http, shop: Shop, method: str, path: str, headers: dict[str, str]
) -> None:
    response = await http.request(method, path, headers=headers)
    assert response.status == 401
    body = await response.json()
    assert_matches_spec("getConversations", 401, body)
    assert body == {"success": False, "data": {"message": "Missing or invalid credentials", "code": "UNAUTHORIZED"}}
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert shop.calls == []


def test_an_app_without_credentials_is_refused() -> None:
    with pytest.raises(ValidationError, match="client_secret"):
        create_app(Shop(), client_id=CLIENT_ID, client_secret="")


# -- errors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "operation"),
    [
        ("INVALID_BODY", 400, "postMessage"),
        ("BAD_REQUEST", 400, "postMessage"),
        ("UNAUTHORIZED", 401, "getConversations"),
        ("ACCOUNT_SUSPENDED", 401, "getConversations"),
        ("FORBIDDEN", 403, "getConversations"),
        ("NOT_FOUND", 404, "getConversations"),
        ("RATE_LIMIT_EXCEEDED", 429, "getConversations"),
    ],
)
async def test_a_provider_error_answers_each_spec_code(
    http: Http, shop: Shop, code: str, status: int, operation: str
) -> None:
    retry_by = datetime.now(timezone.utc) + timedelta(seconds=90) if code == "RATE_LIMIT_EXCEEDED" else None
    shop.fail_with = ProviderError(code, f"because {code}", retry_by=retry_by)
    path = f"{BASE}/messages" if operation == "postMessage" else f"{BASE}/conversations"
    data = _form() if operation == "postMessage" else None
    response = await http.request("POST" if data else "GET", path, data=data, headers=AUTH)
    assert response.status == status
    body = await response.json()
    assert_matches_spec(operation, status, body)
    assert body["data"]["code"] == code and body["data"]["message"] == f"because {code}"
    if retry_by is not None:
        assert body["data"]["retry_by"] == retry_by.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert 85 <= int(response.headers["Retry-After"]) <= 91
    else:
        assert "retry_by" not in body["data"]


async def test_a_raising_handler_answers_a_generic_500_and_logs_the_trace(
    http: Http, shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    shop.fail_with = RuntimeError("database password is hunter2")
    with caplog.at_level(logging.ERROR, logger="pipedrive_channels.extension"):
        response = await http.get(f"{BASE}/conversations", headers=AUTH)
    assert response.status == 500
    text = await response.text()
    assert "hunter2" not in text and "Traceback" not in text and "RuntimeError" not in text
    assert_error_shape(await response.json(), "INTERNAL_ERROR")
    (record,) = [r for r in caplog.records if r.name == "pipedrive_channels.extension"]
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    assert CLIENT_SECRET not in caplog.text


@pytest.mark.parametrize(
    ("answer", "field"),
    [({"items": []}, "get_conversations(): must be a Page"),
     (Page([{"id": "c1"}]), "get_conversations().items[0]: must be a Conversation")],
)
async def test_an_invalid_answer_fails_loudly_naming_the_field(
    http: Http, shop: Shop, caplog: pytest.LogCaptureFixture, answer: Any, field: str
) -> None:
    shop.answer = answer
    with caplog.at_level(logging.ERROR, logger="pipedrive_channels.extension"):
        response = await http.get(f"{BASE}/conversations", headers=AUTH)
    assert response.status == 500
    assert_error_shape(await response.json(), "INTERNAL_ERROR")
    assert field in caplog.text


async def test_a_conversation_tampered_after_construction_is_caught(
    http: Http, shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    conversation = shop_conversation("c1", [], None)
    object.__setattr__(conversation, "participants", (conversation.participants[1],))  # no source_user left
    shop.answer = conversation
    response = await http.get(f"{BASE}/conversations/c1", headers=AUTH)
    assert response.status == 500
    assert "get_conversation().participants: must hold exactly one source_user" in caplog.text
    shop.answer = ""
    response = await http.post(f"{BASE}/messages", data=_form(), headers=AUTH)
    assert response.status == 500
    assert "post_message(): must return a non-empty message ID" in caplog.text


# -- the uninstall callback -----------------------------------------------------------------------------------


async def test_the_uninstall_callback_reaches_the_provider(http: Http, shop: Shop) -> None:
    payload = {"client_id": CLIENT_ID, "company_id": 7, "user_id": "8", "timestamp": "2026-01-02T03:04:05Z"}
    response = await http.delete("/pipedrive/callback", json=payload, headers=AUTH)
    assert response.status == 200
    assert shop.calls == [("on_uninstall", (UninstallEvent(CLIENT_ID, 7, 8, "2026-01-02T03:04:05Z"),))]
    response = await http.delete("/pipedrive/callback", json={"client_id": CLIENT_ID}, headers=AUTH)
    assert response.status == 400
    assert_error_shape(await response.json(), "BAD_REQUEST")
