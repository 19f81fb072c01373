"""A fake Pipedrive server for testing code that talks to the Channels API.

:class:`FakePipedrive` is a real HTTP server (``aiohttp.web``) on ``127.0.0.1`` with an ephemeral port. It
serves the four Channels endpoints under both ``/v1`` and ``/api/v1`` and the OAuth token endpoint, and
validates requests on its own, independently of the SDK. Knobs such as :attr:`FakePipedrive.latency` or
:meth:`FakePipedrive.fail_next` inject the faults a client must survive::

    async with FakePipedrive() as fake:
        token = fake.issue_token()["access_token"]
        async with aiohttp.ClientSession() as http:
            await http.post(f"{fake.base_url}/channels", json={"name": "Chat", "provider_channel_id": "c1"},
                            headers={"Authorization": f"Bearer {token}"})
        assert "c1" in fake.channels

Run ``python -m pipedrive_channels.testing --access-token TOKEN`` to serve it from its own process: it prints
``READY <root_url>`` once listening and stops on SIGTERM, SIGINT or (when stdin is a pipe) stdin EOF.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import json
import math
import os
import random
import re
import secrets
import signal
import stat
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from time import monotonic
from types import TracebackType
from typing import Any
from urllib.parse import unquote

from aiohttp import web

__all__ = ["FakePipedrive", "RecordedRequest", "busiest_window", "main"]

_JsonDict = dict[str, Any]
_Operation = Callable[[str, Any, Mapping[str, str]], tuple[int, _JsonDict]]

_WINDOW = 2.0  # Pipedrive's burst limit counts requests per token over a rolling 2-second window.
_PREFIXES = ("/v1", "/api/v1")  # "/api/v1" is what "{api_domain}/api/v1" base URLs hit.
_SECRET_HEADERS = frozenset({"authorization", "x-api-token"})
_COMPANY_ID = 1
_USER_ID = 1
_SCOPE = "base,messengers-integration"
_DOCS_INFO = "Please check the reference docs in https://developers.pipedrive.com/docs/api/v1"
_GENERIC_INFO = "Please check developers.pipedrive.com"
_ADD_CHANNEL_ERROR = (
    "Expected { name: string; avatar_url?: string; provider_channel_id: string; }, but was incompatible"
)
_RECEIVE_ERROR = (
    "Expected { id: string; sender_id: string; conversation_id: string; conversation_link?: string; "
    "channel_id: string; created_at: string; message: string; status: unknown; attachments: { id: string; "
    "type: string; name: string | null; size: number | null; url: string; preview_url: string | null; }[]; "
    "reply_by?: string | null; }, but was incompatible"
)
_UNAUTHORIZED: _JsonDict = {"success": False, "error": "unauthorized access", "errorCode": 401}
_PROVIDER_TYPES = frozenset({"facebook", "whatsapp", "other"})
_STATUSES = frozenset({"sent", "delivered", "read", "failed"})
# "YYYY-MM-DD HH:MM" (documented), "YYYY-MM-DD HH:MM:SS" and ISO 8601 ("2022-03-01T07:58:35.449Z").
_DATE = re.compile(r"(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d)(?::(\d\d)(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?")
_FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request that reached the fake, as listed in :attr:`FakePipedrive.requests`."""

    method: str
    """HTTP method, e.g. ``"POST"``."""
    path: str
    """The raw path, still percent-encoded (``/v1/channels/a%2Fb``), without the query string."""
    headers: dict[str, str]
    """Request headers; ``Authorization`` and ``x-api-token`` values are replaced by ``"<redacted>"``."""
    json: Any
    """The parsed JSON body, or None (no body, invalid JSON, or a form body sent to the token endpoint)."""
    at: float
    """``time.monotonic()`` when the request arrived."""
    status: int | None
    """The status answered, or None for a connection dropped by :meth:`~FakePipedrive.drop_next`."""


@dataclass(slots=True)
class _Fault:
    remaining: int
    path: str | None
    status: int | None  # None: drop the connection
    headers: Mapping[str, str]
    body: object


class FakePipedrive:
    """A fake Pipedrive serving the Channels API and OAuth token endpoint on ``127.0.0.1``.

    Use it as an async context manager (or call :meth:`start` and :meth:`close`). The public attributes
    (``latency``, ``refresh_failures``, ``api_domain``, ...) are plain knobs: assign them at any time.

    :param client_id: the OAuth client id the token endpoint accepts (also ``marketplace_client_id``).
    :param client_secret: the OAuth client secret the token endpoint accepts.
    :param access_token_ttl: lifetime in seconds of the access tokens issued, also sent as ``expires_in``.
    :param rate_limit: requests per token per rolling 2-second window, sent as ``x-ratelimit-limit``.
    :param enforce_rate_limit: answer 429 to requests beyond ``rate_limit`` in the window.
    :param api_domain: ``api_domain`` sent in token responses; None means :attr:`root_url`. The SDK follows only
        an https Pipedrive ``api_domain``, so a client of the fake passes ``base_url=fake.base_url``.
    """

    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",
        access_token_ttl: float = 3600,
        rate_limit: int = 80,
        enforce_rate_limit: bool = False,
        api_domain: str | None = None,
    ) -> None:
        self.client_id = client_id
        """The OAuth client id accepted by the token endpoint."""
        self.client_secret = client_secret
        """The OAuth client secret accepted by the token endpoint."""
        self.access_token_ttl = access_token_ttl
        """Lifetime in seconds of access tokens issued from now on."""
        self.rate_limit = rate_limit
        """Requests allowed per token per rolling 2-second window."""
        self.enforce_rate_limit = enforce_rate_limit
        """Answer 429 beyond :attr:`rate_limit`; when False the headers are still sent."""
        self.api_domain = api_domain
        """``api_domain`` returned by later token responses; None means :attr:`root_url`."""
        self.refresh_failures = 0
        """The next this-many ``refresh_token`` grants answer 400 ``invalid_grant``."""
        self.token_latency = 0.0
        """Seconds the token endpoint sleeps before answering."""
        self.latency = 0.0
        """Seconds every Channels endpoint sleeps before answering."""
        self.requests: list[RecordedRequest] = []
        """Every request to the Channels, token and authorize endpoints, in arrival order."""
        self.token_requests = 0
        """Number of requests that reached the token endpoint."""
        self.channels: dict[str, _JsonDict] = {}
        """Stored channels by ``provider_channel_id``, as answered by the add-channel endpoint."""
        self.messages: dict[tuple[str, str], dict[str, _JsonDict]] = {}
        """Stored message bodies by ``(provider_channel_id, conversation_id)``, then by message id."""
        self.collections: dict[tuple[str, str], list[_JsonDict]] = {}
        """Generic collections by ``(version, path)``, see :meth:`add_collection`."""
        self._access_tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._refresh_tokens: set[str] = set()
        self._api_tokens: set[str] = set()
        self._codes: dict[str, str | None] = {}  # authorization code -> redirect_uri it was issued for
        self._windows: dict[str, deque[float]] = {}  # rate-limit key -> arrival times inside the window
        self._faults: list[_Fault] = []
        self._random_faults: list[tuple[float, _Fault]] = []
        self._random = random.Random()
        self._runner: web.AppRunner | None = None
        self._root_url: str | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def start(self, port: int = 0) -> None:
        """Start listening on ``127.0.0.1:port`` (0 picks a free port)."""
        if self._runner is not None:
            raise RuntimeError("FakePipedrive is already started")
        app = web.Application()
        for prefix in _PREFIXES:
            app.router.add_post(f"{prefix}/channels", self._channels_handler(self._add_channel))
            app.router.add_post(f"{prefix}/channels/messages/receive", self._channels_handler(self._receive))
            # One catch-all route, split by hand on the raw path, so an id holding "%2F" stays one segment
            # whatever aiohttp's router does with encoded slashes.
            app.router.add_delete(f"{prefix}/channels/{{tail:.+}}", self._channels_handler(self._delete))
        app.router.add_post("/oauth/token", self._token)
        app.router.add_get("/oauth/authorize", self._authorize)
        # Last, so the Channels routes above win: any other path may be a collection (add_collection).
        for prefix in (*_PREFIXES, "/api/v2"):
            app.router.add_get(f"{prefix}/{{tail:.+}}", self._channels_handler(self._collection_get))
            app.router.add_post(f"{prefix}/{{tail:.+}}", self._channels_handler(self._collection_post))
        # A short shutdown timeout: close() must not wait a minute for a handler stuck in `latency`.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._root_url = f"http://127.0.0.1:{runner.addresses[0][1]}"

    async def close(self) -> None:
        """Stop the server and close its connections. Safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakePipedrive:
        """Start the server."""
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the server."""
        await self.close()

    # -- URLs ---------------------------------------------------------------------------------------------

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT``; only available once started."""
        if self._root_url is None:
            raise RuntimeError("FakePipedrive is not started")
        return self._root_url

    @property
    def base_url(self) -> str:
        """Base URL of the Channels API: ``root_url + "/v1"`` (``/api/v1`` is served too)."""
        return self.root_url + "/v1"

    @property
    def token_url(self) -> str:
        """URL of the OAuth token endpoint."""
        return self.root_url + "/oauth/token"

    @property
    def authorize_url(self) -> str:
        """URL of the OAuth authorize endpoint (it only echoes its query)."""
        return self.root_url + "/oauth/authorize"

    # -- credentials --------------------------------------------------------------------------------------

    def issue_code(self, redirect_uri: str | None = None) -> str:
        """Return an authorization code the token endpoint accepts once.

        :param redirect_uri: when given, the exchange must send the same ``redirect_uri``.
        """
        code = secrets.token_urlsafe(16)
        self._codes[code] = redirect_uri
        return code

    def issue_token(self) -> _JsonDict:
        """Mint a token pair without an HTTP round trip; returns the token endpoint's JSON answer."""
        refresh_token = secrets.token_urlsafe(32)
        self._refresh_tokens.add(refresh_token)
        return self._mint(refresh_token)

    def add_access_token(self, value: str, ttl: float | None = None) -> None:
        """Accept ``Authorization: Bearer <value>`` for ``ttl`` seconds (None: until expired by hand)."""
        self._access_tokens[value] = math.inf if ttl is None else monotonic() + ttl

    def add_api_token(self, value: str) -> None:
        """Accept ``x-api-token: <value>``."""
        self._api_tokens.add(value)

    def expire_access_tokens(self) -> None:
        """Make every access token known so far answer 401 (refresh tokens stay valid)."""
        self._access_tokens.clear()

    def add_collection(self, path: str, items: Sequence[_JsonDict] = (), *, version: str = "v1") -> None:
        """Serve a small in-memory collection at ``path`` (e.g. ``"/deals"``) of API ``version``.

        ``GET path`` lists it a page at a time (v1: ``start``/``limit`` and ``additional_data.pagination``; v2:
        ``cursor``/``limit`` and ``additional_data.next_cursor``), ``GET path/{id}`` answers one item, and
        ``POST path`` appends the JSON body with a new ``id``. Listing is sorted by insertion; ``limit`` is 100
        unless the request says otherwise.
        """
        self.collections[(version, path)] = [dict(item) for item in items]

    # -- fault injection ----------------------------------------------------------------------------------

    def fail_next(
        self,
        n: int,
        status: int,
        *,
        headers: Mapping[str, str] | None = None,
        body: object = None,
        path: str | None = None,
    ) -> None:
        """Answer the next ``n`` Channels requests with ``status``, before checking their credentials.

        :param headers: extra headers; they override the ``x-ratelimit-*`` headers sent anyway.
        :param body: a JSON value, or ``str``/``bytes`` sent raw as ``text/html`` (an HTML error page).
            None sends Pipedrive's error envelope for ``status``.
        :param path: only count requests whose raw path ends with this, e.g. ``"/messages/receive"``.
        """
        if n > 0:
            self._faults.append(_Fault(n, path, status, dict(headers or {}), body))

    def drop_next(self, n: int, *, path: str | None = None) -> None:
        """Read the next ``n`` Channels requests fully, then close the connection without answering.

        :param path: only count requests whose raw path ends with this.
        """
        if n > 0:
            self._faults.append(_Fault(n, path, None, {}, None))

    def fail_randomly(
        self, probability: float, status: int | None, *, headers: Mapping[str, str] | None = None
    ) -> None:
        """From now on, answer each Channels request with ``status`` (None: drop it) with ``probability``.

        Several calls add independent faults, checked in order; ``clear_random_faults()`` removes them all.
        Scheduled faults (:meth:`fail_next`, :meth:`drop_next`) go first.
        """
        if not 0 <= probability <= 1:
            raise ValueError("probability must be in [0, 1]")
        self._random_faults.append((probability, _Fault(1, None, status, dict(headers or {}), None)))

    def clear_random_faults(self) -> None:
        """Stop the faults added by :meth:`fail_randomly`."""
        self._random_faults.clear()

    # -- HTTP handlers ------------------------------------------------------------------------------------

    def _channels_handler(self, operation: _Operation) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            return await self._serve_channels(request, operation)

        return handler

    async def _serve_channels(self, request: web.Request, operation: _Operation) -> web.Response:
        at = monotonic()
        body = _parse_json(await request.read())
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        path = request.rel_url.raw_path
        fault = self._take_fault(path) if self._faults or self._random_faults else None
        if fault is not None and fault.status is None:
            self._record(request, path, body, at, None)
            if request.transport is not None:
                request.transport.close()
            return web.Response()  # never sent: aiohttp sees the closed transport and gives up quietly
        now = monotonic()
        key, authorized = self._credential(request, now)
        rate_headers, over_limit = self._count(key, now)
        if fault is not None:
            response = _fault_response(fault, rate_headers)
        elif not authorized:
            response = web.json_response(_UNAUTHORIZED, status=401, headers=rate_headers)
        elif over_limit and self.enforce_rate_limit:
            response = web.json_response(_error_body(429), status=429, headers=rate_headers)
        else:
            status, payload = operation(path, body, request.query)
            response = web.json_response(payload, status=status, headers=rate_headers)
        self._record(request, path, body, at, response.status)
        return response

    def _take_fault(self, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.path is None or path.endswith(fault.path):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        for probability, fault in self._random_faults:
            if self._random.random() < probability:
                return fault
        return None

    def _credential(self, request: web.Request, now: float) -> tuple[str, bool]:
        """Return the rate-limit key of the request and whether its credential is valid."""
        authorization = request.headers.get("Authorization", "")
        bearer = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
        if bearer and self._access_tokens.get(bearer, -math.inf) > now:
            return bearer, True
        api_token = request.headers.get("x-api-token", "")
        if api_token in self._api_tokens:
            return api_token, True
        return bearer or api_token, False

    def _count(self, key: str, now: float) -> tuple[dict[str, str], bool]:
        """Count one request for ``key``; return the rate-limit headers and whether it is over the limit."""
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = deque()
        while window and window[0] <= now - _WINDOW:
            window.popleft()
        window.append(now)  # rejected requests count too, as Pipedrive counts every request
        headers = {
            "x-ratelimit-limit": str(self.rate_limit),
            "x-ratelimit-remaining": str(max(0, self.rate_limit - len(window))),
            "x-ratelimit-reset": f"{window[0] + _WINDOW - now:.3f}",
        }
        return headers, len(window) > self.rate_limit

    def _record(self, request: web.Request, path: str, body: Any, at: float, status: int | None) -> None:
        headers = {k: "<redacted>" if k.lower() in _SECRET_HEADERS else v for k, v in request.headers.items()}
        # Handlers finish out of order under latency; insert by arrival time (almost always at the end).
        record = RecordedRequest(request.method, path, headers, body, at, status)
        bisect.insort(self.requests, record, key=lambda r: r.at)

    # -- Channels operations: (raw path, parsed body) -> (status, JSON answer) -----------------------------

    def _add_channel(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, _JsonDict]:
        if not _valid_channel(body):
            return 400, _invalid(_ADD_CHANNEL_ERROR, "INVALID_BODY")
        return 200, {"success": True, "data": self._put_channel(body)}

    def _put_channel(self, body: _JsonDict) -> _JsonDict:
        provider_channel_id = body["provider_channel_id"]
        old = self.channels.get(provider_channel_id, {})
        channel = {
            "id": old.get("id") or str(uuid.uuid4()),
            "name": body["name"],
            "avatar_url": body.get("avatar_url"),
            "provider_channel_id": provider_channel_id,
            "marketplace_client_id": self.client_id,
            "pd_company_id": _COMPANY_ID,
            "pd_user_id": _USER_ID,
            "created_at": old.get("created_at") or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            "provider_type": body.get("provider_type", "other"),
            "template_support": body.get("template_support", False),
        }
        self.channels[provider_channel_id] = channel
        return channel

    def _receive(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, _JsonDict]:
        if not _valid_message(body):
            return 400, _invalid(_RECEIVE_ERROR, "INVALID_RECEIVE_MESSAGE_PAYLOAD")
        if body["channel_id"] not in self.channels:
            return 404, _not_found("Channel not found.")
        # Receiving an id again updates the message: that is how status changes are delivered.
        self.messages.setdefault((body["channel_id"], body["conversation_id"]), {})[body["id"]] = body
        return 200, {"success": True, "data": body}

    def _delete(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, _JsonDict]:
        segments = [unquote(s) for s in path.partition("/channels/")[2].split("/")]
        if len(segments) == 1:
            channel_id = segments[0]
            if self.channels.pop(channel_id, None) is None:
                return 404, _not_found("Channel not found.")
            for key in [key for key in self.messages if key[0] == channel_id]:
                del self.messages[key]
            return 200, {"success": True}
        if len(segments) == 3 and segments[1] == "conversations":
            key = (segments[0], segments[2])
            if key[0] not in self.channels:
                return 404, _not_found("Channel not found.")
            if self.messages.pop(key, None) is None:
                return 404, _not_found("Conversation not found.")
            return 200, {"success": True}
        return 404, _not_found("Not found")

    def _collection_get(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, _JsonDict]:
        version, relative = _version_of(path)
        items = self.collections.get((version, relative))
        if items is None:
            parent, _, item_id = relative.rpartition("/")
            for item in self.collections.get((version, parent), []):
                if str(item.get("id")) == unquote(item_id):
                    return 200, {"success": True, "data": item}
            return 404, _not_found("Not found")
        try:
            limit = int(query.get("limit", "100"))
            start = int(query.get("start", "0")) if version == "v1" else int(query.get("cursor", "c0")[1:])
        except ValueError:
            return 400, _invalid("Bad pagination parameter", "INVALID_PARAMETER")
        page, more = items[start : start + limit], start + limit < len(items)
        if version == "v1":
            pagination = {"start": start, "limit": limit, "more_items_in_collection": more}
            additional: _JsonDict = {"pagination": {**pagination, "next_start": start + limit} if more else pagination}
        else:
            additional = {"next_cursor": f"c{start + limit}" if more else None}
        return 200, {"success": True, "data": page, "additional_data": additional}

    def _collection_post(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, _JsonDict]:
        version, relative = _version_of(path)
        items = self.collections.get((version, relative))
        if items is None:
            return 404, _not_found("Not found")
        if not isinstance(body, dict):
            return 400, _invalid("Expected a JSON object", "INVALID_BODY")
        item = {**body, "id": len(items) + 1}
        items.append(item)
        return 200, {"success": True, "data": item}

    # -- OAuth --------------------------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        at = monotonic()
        self.token_requests += 1
        form = await request.post()
        if self.token_latency > 0:
            await asyncio.sleep(self.token_latency)
        status, payload = self._grant(request, {k: v for k, v in form.items() if isinstance(v, str)})
        self._record(request, request.rel_url.raw_path, None, at, status)
        return web.json_response(payload, status=status)

    def _grant(self, request: web.Request, form: dict[str, str]) -> tuple[int, _JsonDict]:
        if request.content_type != _FORM:
            return 400, _oauth_error("invalid_request", f"Invalid request: content must be {_FORM}")
        credentials = _basic_credentials(request.headers.get("Authorization", ""))
        if credentials != (self.client_id, self.client_secret):
            return 401, _oauth_error("invalid_client", "Invalid client: client is invalid")
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            code = form.get("code", "")
            if code not in self._codes:
                return 400, _oauth_error("invalid_grant", "Invalid grant: authorization code is invalid")
            redirect_uri = self._codes.pop(code)  # spent even when the redirect_uri is wrong
            if redirect_uri is not None and form.get("redirect_uri") != redirect_uri:
                return 400, _oauth_error("invalid_grant", "Invalid request: redirect_uri is invalid")
            return 200, self.issue_token()
        if grant_type == "refresh_token":
            if self.refresh_failures > 0:
                self.refresh_failures -= 1
                return 400, _oauth_error("invalid_grant", "Invalid grant: refresh token is invalid")
            refresh_token = form.get("refresh_token", "")
            if refresh_token not in self._refresh_tokens:
                return 400, _oauth_error("invalid_grant", "Invalid grant: refresh token is invalid")
            return 200, self._mint(refresh_token)  # Pipedrive does not rotate refresh tokens
        return 400, _oauth_error("unsupported_grant_type", "Unsupported grant type: grant_type is invalid")

    def _mint(self, refresh_token: str) -> _JsonDict:
        access_token = secrets.token_urlsafe(32)
        self._access_tokens[access_token] = monotonic() + self.access_token_ttl
        return {
            "access_token": access_token,
            "token_type": "Bearer",
            "refresh_token": refresh_token,
            "scope": _SCOPE,
            "expires_in": self.access_token_ttl,
            "api_domain": self.api_domain or self.root_url,
        }

    async def _authorize(self, request: web.Request) -> web.Response:
        self._record(request, request.rel_url.raw_path, None, monotonic(), 200)
        return web.json_response({"success": True, "query": dict(request.query)})


# -- validation and bodies --------------------------------------------------------------------------------


def busiest_window(times: Iterable[float], window: float = 2.0) -> int:
    """The most events in any rolling ``window`` seconds, counted as the fake counts: times in ``(t - window, t]``.

    ``busiest_window(r.at for r in fake.requests)`` says whether a client kept to a burst limit at the server.
    """
    ordered, start, most = sorted(times), 0, 0
    for end, at in enumerate(ordered):
        while ordered[start] <= at - window:
            start += 1
        most = max(most, end - start + 1)
    return most


def _version_of(path: str) -> tuple[str, str]:
    """("v2", "/deals") for "/api/v2/deals"; ("v1", "/deals") for "/v1/deals" and "/api/v1/deals"."""
    for prefix, version in (("/api/v2", "v2"), ("/api/v1", "v1"), ("/v1", "v1")):
        if path.startswith(prefix + "/"):
            return version, path[len(prefix) :]
    return "v1", path


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _basic_credentials(authorization: str) -> tuple[str, str] | None:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        login, colon, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except ValueError:  # bad base64 or UTF-8
        return None
    return (login, password) if colon else None


def _text(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _optional(body: _JsonDict, key: str, *types: type) -> bool:
    return key not in body or isinstance(body[key], types)


def _date(value: object) -> bool:
    match = _DATE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(part or 0) for part in match.groups())
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError:  # e.g. month 13
        return False
    return True


def _valid_channel(body: Any) -> bool:
    if not isinstance(body, dict):
        return False
    provider_type = body.get("provider_type", "other")
    return (
        _text(body.get("name"))
        and _text(body.get("provider_channel_id"))
        and _optional(body, "avatar_url", str)
        and _optional(body, "template_support", bool)
        and isinstance(provider_type, str)
        and provider_type in _PROVIDER_TYPES
    )


def _valid_message(body: Any) -> bool:
    if not isinstance(body, dict):
        return False
    status = body.get("status")
    reply_by = body.get("reply_by")
    attachments = body.get("attachments", [])  # the spec makes it optional, the live validator may not
    return (
        all(_text(body.get(key)) for key in ("id", "channel_id", "sender_id", "conversation_id"))
        and isinstance(body.get("message"), str)
        and isinstance(status, str)
        and status in _STATUSES
        and _date(body.get("created_at"))
        and (reply_by is None or _date(reply_by))
        and _optional(body, "conversation_link", str)
        and isinstance(attachments, list)
        and all(_valid_attachment(item) for item in attachments)
    )


def _valid_attachment(item: Any) -> bool:
    if not isinstance(item, dict):
        return False
    size = item.get("size")
    return (
        all(isinstance(item.get(key), str) for key in ("id", "type", "url"))
        and isinstance(item.get("name"), (str, type(None)))
        and isinstance(item.get("preview_url"), (str, type(None)))
        and (size is None or (isinstance(size, (int, float)) and not isinstance(size, bool)))
        and _optional(item, "link_expires", bool)
    )


def _invalid(error: str, code: str) -> _JsonDict:
    return {"success": False, "error": error, "error_info": _DOCS_INFO, "additional_data": {"code": code}}


def _not_found(error: str) -> _JsonDict:
    return _invalid(error, "NOT_FOUND")


def _oauth_error(error: str, message: str) -> _JsonDict:
    return {"success": False, "error": error, "message": message}


def _error_body(status: int) -> _JsonDict:
    """Pipedrive's generic error envelope for ``status``."""
    if status == 401:
        return _UNAUTHORIZED
    if status == 429:
        error = "Request over limit"
    elif status >= 500:
        error = "Service unavailable"
    elif status in (404, 410):
        error = "Not found" if status == 404 else "Gone"
    else:
        try:
            error = HTTPStatus(status).phrase
        except ValueError:  # a status http.HTTPStatus does not know, e.g. 499
            error = "Error"
    return {
        "success": False,
        "error": error,
        "error_info": _GENERIC_INFO,
        "data": None,
        "additional_data": None,
    }


def _fault_response(fault: _Fault, rate_headers: dict[str, str]) -> web.Response:
    assert fault.status is not None
    headers = {**rate_headers, **fault.headers}
    if isinstance(fault.body, (str, bytes)):
        content_type = "text/html; charset=utf-8"
        raw = fault.body.encode() if isinstance(fault.body, str) else fault.body
    else:
        content_type = "application/json"
        raw = json.dumps(_error_body(fault.status) if fault.body is None else fault.body).encode()
    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = content_type
    return web.Response(body=raw, status=fault.status, headers=headers)


# -- running in its own process ---------------------------------------------------------------------------


class _StopOnEof(asyncio.Protocol):
    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop.set()


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # Windows: SIGINT still raises KeyboardInterrupt
            loop.add_signal_handler(signum, stop.set)
    stdin: asyncio.BaseTransport | None = None
    # Only a pipe: a parent that dies closes it. /dev/null or a file would end the server at once.
    with contextlib.suppress(OSError, ValueError):
        if stat.S_ISFIFO(os.fstat(0).st_mode):
            stdin, _ = await loop.connect_read_pipe(
                lambda: _StopOnEof(stop), os.fdopen(0, "rb", closefd=False)
            )
    fake = FakePipedrive()
    if args.access_token:
        fake.add_access_token(args.access_token)
    if args.channel:
        fake._put_channel({"name": args.channel, "provider_channel_id": args.channel})
    await fake.start(args.port)
    try:
        print(f"READY {fake.root_url}", flush=True)
        await stop.wait()
    finally:
        await fake.close()
        if stdin is not None:
            stdin.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Serve a :class:`FakePipedrive` until SIGTERM, SIGINT or stdin EOF (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m pipedrive_channels.testing", description=main.__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--access-token", help="accept this bearer token, never expiring")
    parser.add_argument("--channel", help="pre-add a channel with this provider_channel_id")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
