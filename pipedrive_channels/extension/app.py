"""``create_app``: an aiohttp application serving a :class:`~.ChannelProvider` to Pipedrive.

Every route checks Pipedrive's Basic credentials (the app's client ID and secret) in constant time and answers
401 in the spec's error shape otherwise. Path IDs must be identifiers (no control characters, no ``/``, not ``.``
or ``..``): 400 otherwise. Request bodies are read by one layer: bounded in size (413 past it, the whole body
counted) and in parts, within a time limit (408 past it), a malformed body being a 400; ``*_limit`` query
parameters are clamped to 1..100 (default 30). What a provider returns is validated before it is sent: a provider
bug answers a generic 500 and logs the field at fault with its trace, never a trace or a secret to the caller.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import attrs
from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import BadHttpMessage

from ..errors import ValidationError
from ..models import converter, require_identifier
from .manifest import UNINSTALL_PATH, normalize_prefix, served
from .models import (
    Conversation,
    ExtensionMessage,
    FilePart,
    OutgoingMessage,
    Page,
    Sender,
    Template,
    UninstallEvent,
    check_participants,
)
from .provider import ChannelProvider, ErrorCode, ProviderError, implemented

__all__ = ["DEFAULT_LIMIT", "MAX_FORM_PARTS", "MAX_LIMIT", "PROVIDER_KEY", "create_app"]

DEFAULT_LIMIT = 30
"""``conversations_limit``/``messages_limit`` when Pipedrive sends none (the spec's default)."""
MAX_LIMIT = 100
"""The largest ``*_limit`` a provider is asked for; larger values are clamped to it."""
MAX_FORM_PARTS = 1_000
"""The most parts (multipart) or fields (urlencoded) a ``postMessage`` form may have (413 past it)."""

PROVIDER_KEY = web.AppKey("pipedrive_channels.provider", ChannelProvider)
"""``app[PROVIDER_KEY]`` is the provider the application serves."""

_log = logging.getLogger("pipedrive_channels.extension")
_T = TypeVar("_T")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_CHUNK = 64 * 1024
_CALLBACK_MAX_BYTES = 64 * 1024  # the uninstall callback's body is four short fields
_MAX_ID = 2**63 - 1  # company and user IDs are database integers: a longer number is not one
# What a malformed body raises while it is read and parsed: aiohttp's parsers (BadHttpMessage: LineTooLong,
# InvalidHeader; ValueError, AssertionError), a charset lookup (LookupError), decoding (UnicodeDecodeError is
# a ValueError), deep JSON (RecursionError). Caught around the body reading only: the provider's own errors
# stay 500s.
_MALFORMED = (BadHttpMessage, ValueError, LookupError, RecursionError, AssertionError)
_GENERIC_500 = {"success": False, "data": {"message": "Internal error", "code": "INTERNAL_ERROR"}}
_CODE_BY_STATUS = {401: ErrorCode.UNAUTHORIZED, 403: ErrorCode.FORBIDDEN, 404: ErrorCode.NOT_FOUND}


class _BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class _InvalidAnswer(ValidationError):
    """The provider returned something the spec does not allow."""


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"success": False, "data": {"message": message, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def _credentials_match(header: str, client_id: bytes, client_secret: bytes) -> bool:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    user, colon, password = decoded.partition(b":")
    # Both comparisons always run, so the time taken does not tell which half was wrong.
    same_user = hmac.compare_digest(user, client_id)
    same_password = hmac.compare_digest(password, client_secret)
    return bool(colon) and same_user and same_password


def _limit(request: web.Request, name: str) -> int:
    raw = request.query.get(name, "").strip()
    if not raw:
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise _BadRequest(f"{name} must be an integer") from None
    return min(max(value, 1), MAX_LIMIT)


def _after(request: web.Request) -> str | None:
    return request.query.get("after") or None


def _expect(value: Any, cls: type[_T], where: str) -> _T:
    """``value`` if it is a valid ``cls`` (its validators run again), else :class:`_InvalidAnswer`."""
    if not isinstance(value, cls):
        raise _InvalidAnswer(where, f"must be a {cls.__name__}, got {type(value).__name__}")
    try:
        attrs.validate(value)  # type: ignore[arg-type]
        if isinstance(value, Conversation):
            check_participants(value.participants)
            for index, message in enumerate(value.messages):
                _expect(message, ExtensionMessage, f"{where}.messages[{index}]")
    except _InvalidAnswer:
        raise
    except ValidationError as exc:
        raise _InvalidAnswer(f"{where}.{exc.field}", exc.reason) from None
    return value


def _ok(data: Any, **extra: Any) -> web.Response:
    return web.json_response({"success": True, "data": data, **extra})


# -- request bodies -------------------------------------------------------------------------------------------


async def _read_body(request: web.Request, cap: int, timeout: float, parse: Callable[[], Awaitable[_T]]) -> _T:
    """Run ``parse``, which reads and parses the body: 413 past ``cap`` bytes, 408 past ``timeout``, 400 if malformed.

    ``parse`` calls :func:`_check_size` as it reads; a ``Content-Length`` past the cap is refused before reading.
    """
    if request.content_length is not None and request.content_length > cap:
        raise _BadRequest(f"the body is larger than {cap} bytes", 413)
    try:
        return await asyncio.wait_for(parse(), timeout)
    except asyncio.TimeoutError:
        raise _BadRequest(f"the body was not received within {timeout:g} s", 408) from None
    except _BadRequest:
        raise
    except ValidationError as exc:
        raise _BadRequest(str(exc)) from None
    except _MALFORMED as exc:
        raise _BadRequest(f"malformed body: {type(exc).__name__}") from None


def _check_size(request: web.Request, cap: int) -> None:
    # total_bytes counts every (decoded) body byte received so far, part headers and boundaries included: read
    # or still buffered, so it bounds memory too.
    if request.content.total_bytes > cap:
        raise _BadRequest(f"the body is larger than {cap} bytes", 413)


async def _read_all(request: web.Request, cap: int) -> bytes:
    chunks: list[bytes] = []
    while chunk := await request.content.readany():
        _check_size(request, cap)
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_json(request: web.Request) -> Any:
    return json.loads((await _read_all(request, _CALLBACK_MAX_BYTES)).decode(request.charset or "utf-8"))


# -- postMessage forms ----------------------------------------------------------------------------------------


async def _read_form(request: web.Request, cap: int, timeout: float) -> OutgoingMessage:
    fields, files = await _read_body(request, cap, timeout, lambda: _parse_form(request, cap))
    sender_id = fields.get("senderId", [""])[0]
    conversation_id = fields.get("conversationId", [""])[0]
    for name, value in (("senderId", sender_id), ("conversationId", conversation_id)):
        if not value:
            raise _BadRequest(f"{name} is required")
    recipients = [r.strip() for value in fields.get("recipientIds", []) for r in value.split(",")]
    try:
        return OutgoingMessage(
            message=fields.get("message", [""])[0],
            sender_id=sender_id,
            conversation_id=conversation_id,
            recipient_ids=tuple(r for r in recipients if r),
            files=files,
        )
    except ValidationError as exc:
        raise _BadRequest(str(exc)) from None


async def _parse_form(request: web.Request, cap: int) -> tuple[dict[str, list[str]], list[FilePart]]:
    fields: dict[str, list[str]] = {}
    files: list[FilePart] = []
    if request.content_type == "multipart/form-data":
        await _read_multipart(request, cap, fields, files)
    elif request.content_type == "application/x-www-form-urlencoded":
        charset = request.charset or "utf-8"
        text = (await _read_all(request, cap)).decode(charset)
        # max_num_fields: past it, a ValueError (400); errors="strict": a bad %-escape is a 400, not U+FFFD.
        pairs = parse_qsl(text, keep_blank_values=True, encoding=charset, errors="strict",
                          max_num_fields=MAX_FORM_PARTS)
        for name, value in pairs:
            fields.setdefault(name.removesuffix("[]"), []).append(value)
    else:
        raise _BadRequest("postMessage expects multipart/form-data")
    return fields, files


async def _read_multipart(request: web.Request, cap: int, fields: dict[str, list[str]], files: list[FilePart]) -> None:
    reader = await request.multipart()
    parts = 0
    while (part := await reader.next()) is not None:
        parts += 1
        if parts > MAX_FORM_PARTS:
            raise _BadRequest(f"the form has more than {MAX_FORM_PARTS} parts", 413)
        if not isinstance(part, BodyPartReader):
            raise _BadRequest("nested multipart forms are not supported")
        _check_size(request, cap)
        chunks: list[bytes] = []
        while chunk := await part.read_chunk(_CHUNK):
            _check_size(request, cap)
            chunks.append(chunk)
        data = b"".join(chunks)
        name = (part.name or "").removesuffix("[]")
        if part.filename is not None or name == "files":
            content_type = part.headers.get(hdrs.CONTENT_TYPE, "application/octet-stream")
            files.append(FilePart(name=part.filename or name, content_type=content_type, data=data))
        else:
            fields.setdefault(name, []).append(data.decode(part.get_charset(default="utf-8")))


def _uninstall_event(body: Any) -> UninstallEvent:
    if not isinstance(body, dict):
        raise _BadRequest("the body must be a JSON object")
    client_id = body.get("client_id")
    if not isinstance(client_id, str) or not client_id:
        raise _BadRequest("client_id is required")
    ids: dict[str, int] = {}
    for name in ("company_id", "user_id"):
        value = body.get(name)
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= len(str(_MAX_ID)):
            value = int(value)  # ASCII digits only: "²".isdigit() is true but int("²") fails
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_ID:
            raise _BadRequest(f"{name} must be a non-negative integer")
        ids[name] = value
    timestamp = body.get("timestamp")
    if timestamp is not None and not isinstance(timestamp, str):
        raise _BadRequest(f"timestamp must be a string, got {type(timestamp).__name__}")
    return UninstallEvent(
        client_id=client_id, company_id=ids["company_id"], user_id=ids["user_id"], timestamp=timestamp
    )


def _check_path_ids(request: web.Request) -> None:
    """Refuse a path ID that is not an identifier: the provider may use IDs in file paths, URLs or headers."""
    for name, value in request.match_info.items():
        try:
            require_identifier(name, value)
        except ValidationError as exc:
            raise _BadRequest(str(exc)) from None
        if "/" in value or value in (".", ".."):  # only reachable percent-encoded: %2F, %2E
            raise _BadRequest(f"{name}: must not contain '/' or be '.' or '..'")


# -- the application ------------------------------------------------------------------------------------------


class _Routes:
    """The request handlers, bound to one provider."""

    def __init__(self, provider: ChannelProvider, max_upload_bytes: int, body_timeout: float) -> None:
        self.provider = provider
        self.max_upload_bytes = max_upload_bytes
        self.body_timeout = body_timeout

    async def get_conversations(self, request: web.Request) -> web.Response:
        channel_id = request.match_info["providerChannelId"]
        limit, messages_limit = _limit(request, "conversations_limit"), _limit(request, "messages_limit")
        page = await self.provider.get_conversations(channel_id, limit, messages_limit, _after(request))
        page = _expect(page, Page, "get_conversations()")
        items = [_expect(item, Conversation, f"get_conversations().items[{i}]") for i, item in enumerate(page.items)]
        additional = {} if page.after is None else {"after": page.after}
        return _ok([converter.unstructure(item) for item in items], additional_data=additional)

    async def get_conversation(self, request: web.Request) -> web.Response:
        info = request.match_info
        messages_limit = _limit(request, "messages_limit")
        conversation = await self.provider.get_conversation(
            info["providerChannelId"], info["sourceConversationId"], messages_limit, _after(request)
        )
        conversation = _expect(conversation, Conversation, "get_conversation()")
        cursor = conversation.next_messages_cursor
        additional = {} if cursor is None else {"after": cursor}
        return _ok(converter.unstructure(conversation), additional_data=additional)

    async def post_message(self, request: web.Request) -> web.Response:
        outgoing = await _read_form(request, self.max_upload_bytes, self.body_timeout)
        message_id = await self.provider.post_message(request.match_info["providerChannelId"], outgoing)
        if not isinstance(message_id, str) or not message_id:
            raise _InvalidAnswer("post_message()", f"must return a non-empty message ID, got {message_id!r}")
        return _ok({"id": message_id})

    async def get_message(self, request: web.Request) -> web.Response:
        info = request.match_info
        message = await self.provider.get_message(
            info["providerChannelId"], info["sourceMessageId"], info.get("sourceConversationId")
        )
        # The spec answers a bare message object here, without the success/data envelope.
        return web.json_response(converter.unstructure(_expect(message, ExtensionMessage, "get_message()")))

    async def get_sender(self, request: web.Request) -> web.Response:
        info = request.match_info
        sender = await self.provider.get_sender(info["providerChannelId"], info["senderId"])
        return _ok(converter.unstructure(_expect(sender, Sender, "get_sender()")))

    async def get_templates(self, request: web.Request) -> web.Response:
        templates = await self.provider.get_templates(request.match_info["providerChannelId"])
        if not isinstance(templates, Sequence) or isinstance(templates, str):
            raise _InvalidAnswer("get_templates()", f"must be a sequence of Template, got {type(templates).__name__}")
        checked = [_expect(t, Template, f"get_templates()[{i}]") for i, t in enumerate(templates)]
        return _ok({"templates": [converter.unstructure(t) for t in checked]})

    async def delete_channel(self, request: web.Request) -> web.Response:
        await self.provider.delete_channel(request.match_info["providerChannelId"])
        return web.json_response({"success": True})

    async def on_uninstall(self, request: web.Request) -> web.Response:
        body = await _read_body(request, _CALLBACK_MAX_BYTES, self.body_timeout, lambda: _read_json(request))
        await self.provider.on_uninstall(_uninstall_event(body))
        return web.json_response({"success": True})


def _middleware(client_id: str, client_secret: str) -> Any:
    expected_id, expected_secret = client_id.encode(), client_secret.encode()

    @web.middleware
    async def guard(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if not _credentials_match(request.headers.get(hdrs.AUTHORIZATION, ""), expected_id, expected_secret):
            return _error(401, "UNAUTHORIZED", "Missing or invalid credentials",
                          headers={hdrs.WWW_AUTHENTICATE: 'Basic realm="pipedrive"'})
        try:
            _check_path_ids(request)
            return await handler(request)
        except ProviderError as exc:
            headers = {}
            if exc.retry_by is not None:
                seconds = (exc.retry_by - datetime.now(timezone.utc)).total_seconds()
                headers[hdrs.RETRY_AFTER] = str(max(0, math.ceil(seconds)))
            return web.json_response(exc.body(), status=exc.status, headers=headers)
        except _BadRequest as exc:
            response = _error(exc.status, ErrorCode.BAD_REQUEST.value, exc.message)
            if not request.content.is_eof():
                return await _answer_and_close(request, response)
            return response
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _CODE_BY_STATUS.get(exc.status, ErrorCode.BAD_REQUEST).value
            if exc.status >= 500:
                return _error(exc.status, "INTERNAL_ERROR", exc.reason)
            return _error(exc.status, code, exc.reason, headers={k: v for k, v in exc.headers.items()
                                                                 if k == hdrs.ALLOW})
        except Exception as exc:  # a provider bug: the trace goes to the log, a generic answer to Pipedrive
            _log.exception("%s %s failed: %s: %s", request.method, request.path, type(exc).__name__, exc)
            return web.json_response(_GENERIC_500, status=500)

    return guard


async def _answer_and_close(request: web.Request, response: web.Response) -> web.Response:
    # The body was refused unread (too large, too slow, malformed): answer, then close the connection at once.
    # Left to aiohttp, it would go on reading and discarding the body for its lingering_time (10 s).
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()
    return response


def create_app(
    provider: ChannelProvider,
    *,
    client_id: str,
    client_secret: str,
    prefix: str = "/pipedrive",
    max_upload_bytes: int = 25 * 2**20,
    body_timeout: float = 30.0,
) -> web.Application:
    """An aiohttp application serving ``provider``'s endpoints under ``prefix``, for Pipedrive to call.

    :param provider: the integration; its optional methods are served only when it overrides them.
    :param client_id: the app's OAuth client ID, which Pipedrive sends as the Basic user name.
    :param client_secret: the app's OAuth client secret, which Pipedrive sends as the Basic password.
    :param prefix: the path under which the routes live; give the same one to :func:`~.manifest`.
    :param max_upload_bytes: the most bytes a ``postMessage`` body may have, part headers and boundaries
        included (413 past it, as past :data:`MAX_FORM_PARTS` parts).
    :param body_timeout: the most seconds reading a request body may take (408 past it, and the connection is
        closed), so a stalled upload does not hold a connection.

    The OAuth uninstall callback is ``DELETE {prefix}/callback`` when the provider implements ``on_uninstall``.
    ``getMessageById`` is served both with and without the ``conversations/{id}`` segment.
    Run it with ``aiohttp.web.run_app(app)`` or mount it in a larger application with ``add_subapp``.
    """
    if not isinstance(provider, ChannelProvider):
        raise ValidationError("provider", f"must be a ChannelProvider, got {type(provider).__name__}")
    for name, value in (("client_id", client_id), ("client_secret", client_secret)):
        if not isinstance(value, str) or not value:
            raise ValidationError(name, "must be a non-empty string (the app would be open to anyone)")
    if isinstance(max_upload_bytes, bool) or not isinstance(max_upload_bytes, int) or max_upload_bytes < 1:
        raise ValidationError("max_upload_bytes", f"must be a positive int, got {max_upload_bytes!r}")
    if isinstance(body_timeout, bool) or not isinstance(body_timeout, int | float) or not 0 < body_timeout < math.inf:
        raise ValidationError("body_timeout", f"must be a positive number of seconds, got {body_timeout!r}")
    root = normalize_prefix(prefix)
    routes = _Routes(provider, max_upload_bytes, body_timeout)
    app = web.Application(middlewares=[_middleware(client_id, client_secret)])
    app[PROVIDER_KEY] = provider
    for endpoint in served(provider):
        handler: _Handler = getattr(routes, endpoint.provider_method)
        app.router.add_route(endpoint.method, root + endpoint.path, handler)
        if endpoint.key == "getMessageById":  # the spec's own path form, without the conversation
            app.router.add_get(root + "/channels/{providerChannelId}/messages/{sourceMessageId}", handler)
    if implemented(provider, "on_uninstall"):
        app.router.add_delete(root + UNINSTALL_PATH, routes.on_uninstall)
    return app
