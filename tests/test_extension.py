"""The Messaging app extension served by ``create_app``, driven as Pipedrive drives it (the omnichannel spec)."""

from __future__ import annotations

import base64
import importlib
import inspect
import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pipedrive_channels import Attachment, MessageStatus, ValidationError, cli
from pipedrive_channels.extension import (
    ChannelProvider,
    Conversation,
    ErrorCode,
    ExtensionMessage,
    OutgoingMessage,
    Page,
    Participant,
    ProviderError,
    Sender,
    Template,
    UninstallEvent,
    create_app,
    manifest,
)

SPEC_PATH = Path(__file__).resolve().parents[2] / "shared" / "spec" / "omnichannel-integration.specs.yaml"
CLIENT_ID, CLIENT_SECRET = "pd-client", "pd-secret"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()}
T0 = datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc)


# -- the spec's response schemas ------------------------------------------------------------------------------


@cache
def _spec() -> dict[str, Any] | None:
    return yaml.safe_load(SPEC_PATH.read_text()) if SPEC_PATH.is_file() else None


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node and set(node) == {"$ref"} and not node["$ref"].startswith("#/components/schemas"):
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def assert_matches_spec(operation_id: str, status: int, body: Any) -> None:
    """Validate ``body`` against the spec's schema for this operation and status (skipped without the spec)."""
    spec = _spec()
    if spec is None:
        return  # reported once by test_the_omnichannel_spec_is_available
    operations = {op["operationId"]: op for path in spec["paths"].values() for op in path.values()}
    response = _resolve(spec, operations[operation_id]["responses"][str(status)])
    schema = response["content"]["application/json"]["schema"]
    # A root holding the spec's components, so "#/components/schemas/..." references resolve; no format
    # checker: the spec's own "YYYY-MM-DD HH:MM" date-times are not RFC 3339 (see channels-spec.md §5).
    jsonschema.Draft7Validator({**schema, "components": spec["components"]}).validate(body)


def assert_error_shape(body: Any, code: str) -> None:
    """The spec's error envelope: ``{"success": false, "data": {"message": str, "code": code}}``."""
    assert body["success"] is False
    assert body["data"]["code"] == code
    assert isinstance(body["data"]["message"], str) and body["data"]["message"]
    spec = _spec()
    if spec is not None:
        schema = spec["components"]["responses"]["400_BadRequest"]["content"]["application/json"]["schema"]
        jsonschema.Draft7Validator(schema).validate(body)


def test_the_omnichannel_spec_is_available() -> None:
    if _spec() is None:
        pytest.skip(f"{SPEC_PATH} is absent: every response-schema assertion in this module is skipped")


# -- a provider implementing everything -----------------------------------------------------------------------


def _message(n: int, conversation: str) -> ExtensionMessage:
    return ExtensionMessage(
        id=f"{conversation}-m{n}",
        sender_id="agent" if n % 2 else "alice",
        message=f"hello {n}",
        status=MessageStatus.READ,
        created_at=T0 + timedelta(minutes=n),
        reply_by=T0 + timedelta(days=1) if n == 0 else None,
        attachments=[Attachment("a1", "image/png", "https://files.example.com/a1.png", link_expires=True)]
        if n == 0 else (),
    )


def _conversation(cid: str, messages: list[ExtensionMessage], cursor: str | None) -> Conversation:
    return Conversation(
        id=cid,
        link=f"https://chat.example.com/{cid}",
        status="open",
        seen=False,
        participants=[
            Participant("agent", "Agent Smith", "source_user"),
            Participant("alice", "Alice", "end_user", avatar_url="https://img.example.com/alice.png",
                        avatar_expires=True),
        ],
        messages=messages,
        next_messages_cursor=cursor,
    )


class Shop(ChannelProvider):
    """Five conversations of seven messages each on channel ``ch1``; offsets are the cursors."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail_with: BaseException | None = None
        self.answer: Any = None  # when set, returned instead of the real answer (to test the validation)
        self.conversations = {f"c{i}": [_message(n, f"c{i}") for n in range(7)] for i in range(5)}

    def _enter(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if self.fail_with is not None:
            raise self.fail_with

    def _page(self, cid: str, limit: int, after: str | None) -> Conversation:
        start = int(after or 0)
        messages = self.conversations[cid][start : start + limit]
        more = start + limit < len(self.conversations[cid])
        return _conversation(cid, messages, str(start + limit) if more else None)

    async def get_conversations(
        self, channel_id: str, limit: int, messages_limit: int, after: str | None
    ) -> Page[Conversation]:
        self._enter("get_conversations", channel_id, limit, messages_limit, after)
        if self.answer is not None:
            return self.answer  # type: ignore[no-any-return]
        ids = sorted(self.conversations)
        start = int(after or 0)
        items = [self._page(cid, messages_limit, None) for cid in ids[start : start + limit]]
        return Page(items, str(start + limit) if start + limit < len(ids) else None)

    async def get_conversation(
        self, channel_id: str, conversation_id: str, messages_limit: int, after: str | None
    ) -> Conversation:
        self._enter("get_conversation", channel_id, conversation_id, messages_limit, after)
        if self.answer is not None:
            return self.answer  # type: ignore[no-any-return]
        if conversation_id not in self.conversations:
            raise ProviderError(ErrorCode.NOT_FOUND, f"no conversation {conversation_id}")
        return self._page(conversation_id, messages_limit, after)

    async def post_message(self, channel_id: str, outgoing: OutgoingMessage) -> str:
        self._enter("post_message", channel_id, outgoing)
        return self.answer if self.answer is not None else "msg-1"

    async def get_message(self, channel_id: str, message_id: str, conversation_id: str | None) -> ExtensionMessage:
        self._enter("get_message", channel_id, message_id, conversation_id)
        return _message(0, conversation_id or "c0")

    async def get_sender(self, channel_id: str, sender_id: str) -> Sender:
        self._enter("get_sender", channel_id, sender_id)
        return Sender(sender_id, "Alice", "https://img.example.com/alice.png")

    async def get_templates(self, channel_id: str) -> list[Template]:
        self._enter("get_templates", channel_id)
        return [Template("t1", "welcome", "Hello {{1}}", "en"), Template("t2", "bye", "Bye", "en_US")]

    async def delete_channel(self, channel_id: str) -> None:
        self._enter("delete_channel", channel_id)

    async def on_uninstall(self, event: UninstallEvent) -> None:
        self._enter("on_uninstall", event)


class Minimal(ChannelProvider):
    """Only the three required endpoints."""

    async def get_conversations(
        self, channel_id: str, limit: int, messages_limit: int, after: str | None
    ) -> Page[Conversation]:
        return Page([])

    async def get_conversation(
        self, channel_id: str, conversation_id: str, messages_limit: int, after: str | None
    ) -> Conversation:
        raise ProviderError("NOT_FOUND", "nothing here")

    async def post_message(self, channel_id: str, outgoing: OutgoingMessage) -> str:
        return "m"


@pytest.fixture
def shop() -> Shop:
    return Shop()


async def _serve(provider: ChannelProvider, **options: Any) -> TestClient[web.Request, web.Application]:
    client: TestClient[web.Request, web.Application] = TestClient(
        TestServer(create_app(provider, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, **options))
    )
    await client.start_server()
    return client


@pytest.fixture
async def http(shop: Shop) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    client = await _serve(shop)
    yield client
    await client.close()


Http = TestClient[web.Request, web.Application]
BASE = "/pipedrive/channels/ch1"


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
    http = await _serve(shop, max_upload_bytes=1_000)
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

ROUTES = [
    ("GET", f"{BASE}/conversations"), ("GET", f"{BASE}/conversations/c1"), ("POST", f"{BASE}/messages"),
    ("GET", f"{BASE}/messages/m1"), ("GET", f"{BASE}/conversations/c1/messages/m1"), ("GET", f"{BASE}/senders/s"),
    ("GET", f"{BASE}/templates"), ("DELETE", BASE), ("DELETE", "/pipedrive/callback"), ("GET", "/pipedrive/nope"),
]
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


def test_a_provider_error_checks_its_code_and_status() -> None:
    assert ProviderError("FORBIDDEN", "no").status == 403
    assert ProviderError(ErrorCode.NOT_FOUND, "gone", 410).status == 410
    with pytest.raises(ValidationError, match="code"):
        ProviderError("TEAPOT", "no")
    with pytest.raises(ValidationError, match="status"):
        ProviderError("FORBIDDEN", "no", 500)


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
    conversation = _conversation("c1", [], None)
    object.__setattr__(conversation, "participants", (conversation.participants[1],))  # no source_user left
    shop.answer = conversation
    response = await http.get(f"{BASE}/conversations/c1", headers=AUTH)
    assert response.status == 500
    assert "get_conversation().participants: must hold exactly one source_user" in caplog.text
    shop.answer = ""
    response = await http.post(f"{BASE}/messages", data=_form(), headers=AUTH)
    assert response.status == 500
    assert "post_message(): must return a non-empty message ID" in caplog.text


def test_conversations_need_one_source_user_and_an_end_user() -> None:
    agent = Participant("agent", "Agent", "source_user")
    alice = Participant("alice", "Alice", "end_user")
    with pytest.raises(ValidationError, match="participants: must hold exactly one source_user, got 2"):
        Conversation("c", "", "open", True, [agent, agent, alice])
    with pytest.raises(ValidationError, match="at least one end_user"):
        Conversation("c", "", "open", True, [agent])
    with pytest.raises(ValidationError, match="link"):
        Conversation("c", "chat.example.com", "open", True, [agent, alice])
    with pytest.raises(ValidationError, match="role"):
        Participant("x", "X", "admin")
    with pytest.raises(ValidationError, match="status"):
        Conversation("c", "", "archived", True, [agent, alice])
    assert Conversation("c", "", "open", True, [agent, alice]).link == ""


# -- the uninstall callback and the manifest ------------------------------------------------------------------


async def test_the_uninstall_callback_reaches_the_provider(http: Http, shop: Shop) -> None:
    payload = {"client_id": CLIENT_ID, "company_id": 7, "user_id": "8", "timestamp": "2026-01-02T03:04:05Z"}
    response = await http.delete("/pipedrive/callback", json=payload, headers=AUTH)
    assert response.status == 200
    assert shop.calls == [("on_uninstall", (UninstallEvent(CLIENT_ID, 7, 8, "2026-01-02T03:04:05Z"),))]
    response = await http.delete("/pipedrive/callback", json={"client_id": CLIENT_ID}, headers=AUTH)
    assert response.status == 400
    assert_error_shape(await response.json(), "BAD_REQUEST")


def test_the_manifest_lists_every_endpoint_a_full_provider_implements() -> None:
    document = manifest("https://bot.example.com/", Shop(), prefix="/hooks/pd/")
    root = "https://bot.example.com/hooks/pd/channels/:providerChannelId"
    assert document == {
        "version": "v202101",
        "endpoints": {
            "getConversations": f"{root}/conversations",
            "getConversationById": f"{root}/conversations/:sourceConversationId",
            "postMessage": f"{root}/messages",
            "getMessageById": f"{root}/conversations/:sourceConversationId/messages/:sourceMessageId",
            "getSenderById": f"{root}/senders/:senderId",
            "getTemplates": f"{root}/templates",
            "deleteChannelById": root,
        },
    }


async def test_the_manifest_and_the_app_hold_exactly_the_implemented_endpoints() -> None:
    assert set(manifest("https://bot.example.com", Minimal)["endpoints"]) == {
        "getConversations", "getConversationById", "postMessage"
    }
    http = await _serve(Minimal())
    try:
        for method, path in ROUTES[5:]:
            response = await http.request(method, path, headers=AUTH)
            assert response.status in (404, 405), path
            assert_error_shape(await response.json(), "NOT_FOUND" if response.status == 404 else "BAD_REQUEST")
        assert (await http.get(f"{BASE}/conversations", headers=AUTH)).status == 200
    finally:
        await http.close()


def test_the_manifest_command_prints_the_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.run(["manifest", "--base-url", "https://bot.example.com", "--provider", f"{__name__}:Minimal",
                    "--prefix", "/x"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == manifest("https://bot.example.com", Minimal, "/x")
    assert cli.run(["manifest", "--base-url", "https://b.example.com", "--provider", "json:loads"]) == 2
    assert cli.run(["manifest", "--base-url", "ftp://b.example.com", "--provider", f"{__name__}:Minimal"]) == 2


def test_the_schema_check_catches_a_wrong_shape() -> None:
    if _spec() is None:
        pytest.skip(f"{SPEC_PATH} is absent: no schema to check against")
    with pytest.raises(jsonschema.ValidationError):
        assert_matches_spec("getConversations", 200, {"success": True, "data": [{"id": "c1", "link": ""}]})
    with pytest.raises(jsonschema.ValidationError):
        assert_matches_spec("getMessageById", 200, {"id": "m", "status": "lost", "created_at": "x", "message": "",
                                                    "sender_id": "s"})


@pytest.mark.parametrize(
    "module_name",
    ["pipedrive_channels.extension", "pipedrive_channels.extension.app", "pipedrive_channels.extension.manifest",
     "pipedrive_channels.extension.models", "pipedrive_channels.extension.provider",
     "pipedrive_channels.extension.echo_bot"],
)
def test_every_public_name_of_the_extension_has_a_docstring(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__doc__
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{module_name}.{name}"
        if inspect.isclass(value):
            for attribute, member in vars(value).items():
                if not attribute.startswith("_") and (inspect.isfunction(member) or isinstance(member, property)):
                    assert inspect.getdoc(member), f"{module_name}.{name}.{attribute}"
