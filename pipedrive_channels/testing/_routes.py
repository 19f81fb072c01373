"""The fake's HTTP side: its routes, and each request through the faults, credentials, rate windows and operation."""

from __future__ import annotations

import asyncio
import bisect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from . import _costs
from ._deliveries import Deliveries, Origin
from ._envelopes import UNAUTHORIZED, Refused, error_body
from ._faults import FaultPlan
from ._oauth import Authority
from ._persons import Persons
from ._rate import RateWindows
from ._store import Operation, Store
from ._webhooks import Webhooks, me

_PREFIXES = ("/v1", "/api/v1")  # "/api/v1" is what "{api_domain}/api/v1" base URLs hit.
_V2 = "/api/v2"
_SECRET_HEADERS = frozenset({"authorization", "x-api-token"})
Charge = Callable[[str, str], int]  # (method, raw path) -> tokens
_MAX_BODY = 4 * 1024 * 1024  # a 100,000-character note fits, whatever its characters and JSON escapes


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
    cost: int = 0
    """The tokens it spent (see :attr:`FakePipedrive.tokens_spent`)."""


class Knobs(Protocol):
    """What the routes read of the fake at each request, and the tallies they keep on it."""

    latency: float
    token_latency: float
    rate_limit: int
    enforce_rate_limit: bool
    requests: list[RecordedRequest]
    token_requests: int
    tokens_spent: int
    user_id: int
    company_id: int


class Routes:
    """The fake's HTTP side: each request through the fault plan, the credentials, the rate windows and its operation.

    It reads the fake's knobs at each request, adds to :attr:`FakePipedrive.tokens_spent` and appends to
    :attr:`FakePipedrive.requests`.
    """

    def __init__(
        self,
        fake: Knobs,
        *,
        oauth: Authority,
        store: Store,
        persons: Persons,
        webhooks: Webhooks,
        deliveries: Deliveries,
        faults: FaultPlan,
        windows: RateWindows,
        clock: Callable[[], float],
    ) -> None:
        self._fake = fake
        self._oauth = oauth
        self._store = store
        self._persons = persons
        self._webhooks = webhooks
        self._deliveries = deliveries
        self._faults = faults
        self._windows = windows
        self._clock = clock

    def app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY)
        store, persons, notes, hooks = self._store, self._persons, self._persons.notes, self._webhooks
        v1, v2 = _costs.V1, _costs.V2
        for prefix in _PREFIXES:
            self._add(app, "POST", prefix, "/channels", store.add_channel, v1["POST /channels"])
            self._add(app, "POST", prefix, "/channels/messages/receive", store.receive,
                      v1["POST /channels/messages/receive"])
            # One catch-all route, split by hand on the raw path, so an id holding "%2F" stays one segment
            # whatever aiohttp's router does with encoded slashes. A channel and a conversation cost the same.
            self._add(app, "DELETE", prefix, "/channels/{tail:.+}", store.delete, v1["DELETE /channels/{id}"])
            for method, template, operation in (
                ("GET", "/notes", notes.listing), ("POST", "/notes", notes.create), ("GET", "/notes/{id}", notes.get),
                ("PUT", "/notes/{id}", notes.update), ("DELETE", "/notes/{id}", notes.delete),
                ("GET", "/webhooks", hooks.listing), ("POST", "/webhooks", hooks.create),
                ("DELETE", "/webhooks/{id}", hooks.delete), ("GET", "/users/me", self._me),
            ):
                self._add(app, method, prefix, template, operation, v1[f"{method} {template}"])
        for method, template, operation in (  # the search first: "/persons/search" is no person's id
            ("GET", "/persons/search", persons.search), ("POST", "/persons", persons.create),
            ("GET", "/persons/{id}", persons.get), ("PATCH", "/persons/{id}", persons.update),
            ("DELETE", "/persons/{id}", persons.delete),
        ):
            self._add(app, method, _V2, template, operation, v2[f"{method} {template}"])
        app.router.add_post("/oauth/token", self._token)
        app.router.add_get("/oauth/authorize", self._authorize)
        # Last, so the routes above win: any other path may be a collection (add_collection).
        for prefix in (*_PREFIXES, _V2):
            self._add(app, "GET", prefix, "/{tail:.+}", store.collection_get, store.collection_cost)
            self._add(app, "POST", prefix, "/{tail:.+}", store.collection_post, store.collection_cost)
        return app

    def _add(
        self,
        app: web.Application,
        method: str,
        prefix: str,
        template: str,
        operation: Operation,
        cost: int | Charge,
    ) -> None:
        """Route ``method prefix+template`` to ``operation``, charging ``cost`` (or ``cost(method, path)``)."""
        charge = cost if callable(cost) else (lambda method, path: cost)

        async def handler(request: web.Request) -> web.Response:
            return await self._serve(request, operation, charge)

        app.router.add_route(method, prefix + template, handler)

    async def _serve(self, request: web.Request, operation: Operation, charge: Charge) -> web.Response:
        at = self._clock()
        body = _parse_json(await request.read())
        if self._fake.latency > 0:
            await asyncio.sleep(self._fake.latency)
        path = request.rel_url.raw_path
        fault = self._faults.take(path, request.method) if self._faults else None
        if fault is not None and fault.status is None:
            self._record(request, path, body, at, None)
            if request.transport is not None:
                request.transport.close()
            return web.Response()  # never sent: aiohttp sees the closed transport and gives up quietly
        now = self._clock()
        headers = request.headers
        key, authorized = self._oauth.credential(headers.get("Authorization", ""), headers.get("x-api-token", ""), now)
        rate_headers, over_limit = self._windows.count(key, now, self._fake.rate_limit, search=_is_search(path))
        cost = 0
        if fault is not None:
            response = fault.response(rate_headers)
        elif not authorized:
            response = web.json_response(UNAUTHORIZED, status=401, headers=rate_headers)
        elif over_limit and self._fake.enforce_rate_limit:
            response = web.json_response(error_body(429), status=429, headers=rate_headers)
        else:
            try:
                # Changes made through the API are the token's user's (every token is the fake's user's).
                with self._deliveries.acting(Origin("api", self._fake.user_id)):
                    status, payload = operation(path, body, request.query)
            except Refused as refused:  # a check of the persons or notes routes
                status, payload = refused.answer()
            cost = charge(request.method, path)
            self._fake.tokens_spent += cost
            response = web.json_response(payload, status=status, headers=rate_headers)
        self._record(request, path, body, at, response.status, cost)
        return response

    def _me(self, path: str, body: Any, query: Any) -> tuple[int, dict[str, Any]]:
        return 200, me(self._fake.company_id, self._fake.user_id)

    async def _token(self, request: web.Request) -> web.Response:
        at = self._clock()
        self._fake.token_requests += 1
        form = await request.post()
        if self._fake.token_latency > 0:
            await asyncio.sleep(self._fake.token_latency)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        status, payload = self._oauth.grant(request.content_type, request.headers.get("Authorization", ""), fields)
        self._record(request, request.rel_url.raw_path, None, at, status)
        return web.json_response(payload, status=status)

    async def _authorize(self, request: web.Request) -> web.Response:
        self._record(request, request.rel_url.raw_path, None, self._clock(), 200)
        return web.json_response({"success": True, "query": dict(request.query)})

    def _record(
        self, request: web.Request, path: str, body: Any, at: float, status: int | None, cost: int = 0
    ) -> None:
        headers = {k: "<redacted>" if k.lower() in _SECRET_HEADERS else v for k, v in request.headers.items()}
        # Handlers finish out of order under latency; insert by arrival time (almost always at the end).
        record = RecordedRequest(request.method, path, headers, body, at, status, cost)
        bisect.insort(self._fake.requests, record, key=lambda r: r.at)


def _is_search(path: str) -> bool:
    """Pipedrive's search operations (``/persons/search``, ``/itemSearch``, ...): they have their own window."""
    last = path.rstrip("/").rpartition("/")[2]
    return last == "search" or "/itemSearch" in path


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the interpreter's stack
        return None


async def listen(app: web.Application, port: int) -> web.AppRunner:
    """Serve ``app`` on ``127.0.0.1:port`` (0 picks a free port); the runner to clean up."""
    # A short shutdown timeout: closing must not wait a minute for a handler stuck in `latency`.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
