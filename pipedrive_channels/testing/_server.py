"""The fake's HTTP server: its lifecycle, routes, knobs and the record of every request it saw."""

from __future__ import annotations

import asyncio
import bisect
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from time import monotonic
from types import TracebackType
from typing import Any

from aiohttp import web

from ._envelopes import UNAUTHORIZED, JsonDict, error_body
from ._faults import Fault, FaultPlan
from ._oauth import Authority
from ._rate import RateWindows
from ._store import Operation, Store
from ._validation import valid_channel

_PREFIXES = ("/v1", "/api/v1")  # "/api/v1" is what "{api_domain}/api/v1" base URLs hit.
_SECRET_HEADERS = frozenset({"authorization", "x-api-token"})


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
        self._oauth = Authority(self)
        self._store = Store(self)
        self._faults = FaultPlan()
        self._windows = RateWindows()  # kept across restarts, as the tokens are
        self._runner: web.AppRunner | None = None
        self._root_url: str | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def start(self, port: int = 0) -> None:
        """Start listening on ``127.0.0.1:port`` (0 picks a free port)."""
        if self._runner is not None:
            raise RuntimeError("FakePipedrive is already started")
        app = _Routes(self, self._oauth, self._store, self._faults, self._windows).app()
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
        return self._oauth.issue_code(redirect_uri)

    def issue_token(self) -> JsonDict:
        """Mint a token pair without an HTTP round trip; returns the token endpoint's JSON answer."""
        return self._oauth.issue_token()

    def add_access_token(self, value: str, ttl: float | None = None) -> None:
        """Accept ``Authorization: Bearer <value>`` for ``ttl`` seconds (None: until expired by hand)."""
        self._oauth.add_access_token(value, ttl)

    def add_api_token(self, value: str) -> None:
        """Accept ``x-api-token: <value>``."""
        self._oauth.add_api_token(value)

    def expire_access_tokens(self) -> None:
        """Make every access token known so far answer 401 (refresh tokens stay valid)."""
        self._oauth.expire_access_tokens()

    # -- what it holds ------------------------------------------------------------------------------------

    @property
    def channels(self) -> dict[str, JsonDict]:
        """Stored channels by ``provider_channel_id``, as answered by the add-channel endpoint."""
        return self._store.channels

    @property
    def messages(self) -> dict[tuple[str, str], dict[str, JsonDict]]:
        """Stored message bodies by ``(provider_channel_id, conversation_id)``, then by message id."""
        return self._store.messages

    @property
    def collections(self) -> dict[tuple[str, str], list[JsonDict]]:
        """Generic collections by ``(version, path)``, see :meth:`add_collection`."""
        return self._store.collections

    def add_channel(
        self,
        provider_channel_id: str,
        name: str | None = None,
        *,
        avatar_url: str | None = None,
        provider_type: str = "other",
        template_support: bool = False,
    ) -> JsonDict:
        """Store a channel as the add-channel endpoint would, without a request; return it as answered.

        Adding an id again renames it and keeps its ``id`` and ``created_at``, as the endpoint does.

        :param name: the channel's name; None means ``provider_channel_id``.
        :param provider_type: ``"facebook"``, ``"whatsapp"`` or ``"other"``.
        :raises ValueError: the endpoint would refuse this channel (an empty id or name, an unknown type).
        """
        body: JsonDict = {
            "name": provider_channel_id if name is None else name,
            "provider_channel_id": provider_channel_id,
            "provider_type": provider_type,
            "template_support": template_support,
            **({} if avatar_url is None else {"avatar_url": avatar_url}),
        }
        if not valid_channel(body):
            raise ValueError(f"the add-channel endpoint would refuse this channel: {body!r}")
        return self._store.put_channel(body)

    def add_collection(self, path: str, items: Sequence[JsonDict] = (), *, version: str = "v1") -> None:
        """Serve a small in-memory collection at ``path`` (e.g. ``"/deals"``) of API ``version``.

        ``GET path`` lists it a page at a time (v1: ``start``/``limit`` and ``additional_data.pagination``; v2:
        ``cursor``/``limit`` and ``additional_data.next_cursor``), ``GET path/{id}`` answers one item, and
        ``POST path`` appends the JSON body with a new ``id``. Listing is sorted by insertion; ``limit`` is 100
        unless the request says otherwise.
        """
        self._store.collections[(version, path)] = [dict(item) for item in items]

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
        self._faults.schedule(Fault(n, path, status, dict(headers or {}), body))

    def drop_next(self, n: int, *, path: str | None = None) -> None:
        """Read the next ``n`` Channels requests fully, then close the connection without answering.

        :param path: only count requests whose raw path ends with this.
        """
        self._faults.schedule(Fault(n, path, None, {}, None))

    def fail_randomly(
        self, probability: float, status: int | None, *, headers: Mapping[str, str] | None = None
    ) -> None:
        """From now on, answer each Channels request with ``status`` (None: drop it) with ``probability``.

        Several calls add independent faults, checked in order; ``clear_random_faults()`` removes them all.
        Scheduled faults (:meth:`fail_next`, :meth:`drop_next`) go first.
        """
        self._faults.add_random(probability, Fault(1, None, status, dict(headers or {}), None))

    def clear_random_faults(self) -> None:
        """Stop the faults added by :meth:`fail_randomly`."""
        self._faults.clear_random()


class _Routes:
    """The fake's HTTP side: each request through the fault plan, the credentials, the rate window and its operation.

    It reads the fake's knobs at each request and appends to :attr:`FakePipedrive.requests`.
    """

    def __init__(
        self, fake: FakePipedrive, oauth: Authority, store: Store, faults: FaultPlan, windows: RateWindows
    ) -> None:
        self._fake = fake
        self._oauth = oauth
        self._store = store
        self._faults = faults
        self._windows = windows

    def app(self) -> web.Application:
        app = web.Application()
        store = self._store
        for prefix in _PREFIXES:
            app.router.add_post(f"{prefix}/channels", self._channels_handler(store.add_channel))
            app.router.add_post(f"{prefix}/channels/messages/receive", self._channels_handler(store.receive))
            # One catch-all route, split by hand on the raw path, so an id holding "%2F" stays one segment
            # whatever aiohttp's router does with encoded slashes.
            app.router.add_delete(f"{prefix}/channels/{{tail:.+}}", self._channels_handler(store.delete))
        app.router.add_post("/oauth/token", self._token)
        app.router.add_get("/oauth/authorize", self._authorize)
        # Last, so the Channels routes above win: any other path may be a collection (add_collection).
        for prefix in (*_PREFIXES, "/api/v2"):
            app.router.add_get(f"{prefix}/{{tail:.+}}", self._channels_handler(store.collection_get))
            app.router.add_post(f"{prefix}/{{tail:.+}}", self._channels_handler(store.collection_post))
        return app

    def _channels_handler(self, operation: Operation) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            return await self._serve_channels(request, operation)

        return handler

    async def _serve_channels(self, request: web.Request, operation: Operation) -> web.Response:
        at = monotonic()
        body = _parse_json(await request.read())
        if self._fake.latency > 0:
            await asyncio.sleep(self._fake.latency)
        path = request.rel_url.raw_path
        fault = self._faults.take(path) if self._faults else None
        if fault is not None and fault.status is None:
            self._record(request, path, body, at, None)
            if request.transport is not None:
                request.transport.close()
            return web.Response()  # never sent: aiohttp sees the closed transport and gives up quietly
        now = monotonic()
        headers = request.headers
        key, authorized = self._oauth.credential(headers.get("Authorization", ""), headers.get("x-api-token", ""), now)
        rate_headers, over_limit = self._windows.count(key, now, self._fake.rate_limit)
        if fault is not None:
            response = fault.response(rate_headers)
        elif not authorized:
            response = web.json_response(UNAUTHORIZED, status=401, headers=rate_headers)
        elif over_limit and self._fake.enforce_rate_limit:
            response = web.json_response(error_body(429), status=429, headers=rate_headers)
        else:
            status, payload = operation(path, body, request.query)
            response = web.json_response(payload, status=status, headers=rate_headers)
        self._record(request, path, body, at, response.status)
        return response

    async def _token(self, request: web.Request) -> web.Response:
        at = monotonic()
        self._fake.token_requests += 1
        form = await request.post()
        if self._fake.token_latency > 0:
            await asyncio.sleep(self._fake.token_latency)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        status, payload = self._oauth.grant(request.content_type, request.headers.get("Authorization", ""), fields)
        self._record(request, request.rel_url.raw_path, None, at, status)
        return web.json_response(payload, status=status)

    async def _authorize(self, request: web.Request) -> web.Response:
        self._record(request, request.rel_url.raw_path, None, monotonic(), 200)
        return web.json_response({"success": True, "query": dict(request.query)})

    def _record(self, request: web.Request, path: str, body: Any, at: float, status: int | None) -> None:
        headers = {k: "<redacted>" if k.lower() in _SECRET_HEADERS else v for k, v in request.headers.items()}
        # Handlers finish out of order under latency; insert by arrival time (almost always at the end).
        record = RecordedRequest(request.method, path, headers, body, at, status)
        bisect.insort(self._fake.requests, record, key=lambda r: r.at)


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None
