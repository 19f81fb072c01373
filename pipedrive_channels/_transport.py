"""The transport: one aiohttp session, the auth header, the base URL, and the mapping of answers to errors.

This is the innermost layer of a call. It sends exactly what it is given to ``base_url + path`` and turns
anything but a successful JSON envelope into a typed :class:`~pipedrive_channels.errors.ApiError`. It knows nothing
of endpoints, budgets or retries: the caller refreshes a token about to expire (:meth:`Transport.refresh_due`) before
it charges the budget for a request, and decides whether a 401 is worth a :meth:`Transport.refresh` and a second
attempt.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from .auth import Authorizer, require_api_domain, require_secure_url
from .errors import ApiError, TransportError, ValidationError, error_class, error_from_response

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_MAX_ANSWER_BYTES", "Response", "Transport"]

DEFAULT_BASE_URL = "https://api.pipedrive.com/v1"
"""Where requests go when neither ``base_url`` nor the token's ``api_domain`` says otherwise."""

DEFAULT_MAX_ANSWER_BYTES = 8 * 1024 * 1024
"""The largest answer read, counted decoded (after gzip): many times Pipedrive's largest page (500 items)."""

_log = logging.getLogger("pipedrive_channels")
_NOT_OPEN = "the client is not open: use `async with ChannelsClient(...)` or `await open()`"
_CLOSED = "this client is closed; create a new one"


# Failures that happen before a byte of the request is sent: retrying them can never act twice.
_NOT_SENT: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,
    *((aiohttp.ConnectionTimeoutError,) if hasattr(aiohttp, "ConnectionTimeoutError") else ()),
)


@functools.lru_cache(maxsize=1024)
def _url(text: str) -> URL:
    # encoded=True: the path is already percent-encoded, and re-quoting could turn %2F into a '/'.
    # Cached because a fresh URL object recomputes its derived parts inside aiohttp on every request,
    # which measured about 10 us per call, while most calls go to the same few URLs.
    return URL(text, encoded=True)


# The C scanner json.loads ends in, under two layers of Python (an instance attribute, not in typeshed).
_scan: Callable[[str, int], tuple[Any, int]] = vars(json.JSONDecoder())["scan_once"]


def _loads(text: str) -> Any:
    """``json.loads(text)``: the scanner alone when the value fills the text, else json.loads for its exact answer."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:  # no value at the start: leading whitespace, or not JSON at all
        return json.loads(text)
    return value if end == len(text) else json.loads(text)  # trailing whitespace, or extra data after the value


def _v2_beside(base_url: str) -> str:
    """The v2 base URL beside a v1 one: ``https://api.pipedrive.com/v1`` gives ``https://api.pipedrive.com/api/v2``,
    ``https://acme.pipedrive.com/api/v1`` gives ``https://acme.pipedrive.com/api/v2``, and any other base URL gets
    ``/api/v2`` appended to its root (the base URL without a trailing ``/v1`` and ``/api``)."""
    root = base_url.removesuffix("/v1").removesuffix("/api")
    return f"{root}/api/v2"


class Response(NamedTuple):
    """A successful answer: the HTTP status, the decoded JSON envelope (``None`` if empty), the headers."""

    status: int
    body: Any
    headers: CIMultiDictProxy[str]


class _State(enum.Enum):
    """Where a transport is in its life: it sends only while ``OPEN``, and a closed one never reopens."""

    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


_OPEN = _State.OPEN  # checked before every request: an enum member looked up on its class costs ~75 ns on 3.11


class Transport:
    """Sends authenticated requests to Pipedrive and maps the answers.

    :param authorizer: the credentials and their refresh.
    :param base_url: e.g. ``http://127.0.0.1:8080/v1``; if ``None``, ``{api_domain}/api/v1`` of the current
        token (a Pipedrive host only, see :func:`~pipedrive_channels.auth.require_api_domain`), else
        :data:`DEFAULT_BASE_URL`. Plain HTTP is refused unless the host is loopback.
    :param session: an aiohttp session to use (not closed by :meth:`close`), which can send before :meth:`open`;
        else one is created on open.
    :param timeout: seconds for one request, connection included.
    :param max_answer_bytes: the largest answer read, counted after decompression; a larger one is an
        :class:`~pipedrive_channels.errors.ApiError` and its connection is closed.
    """

    def __init__(
        self,
        authorizer: Authorizer,
        *,
        base_url: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 30.0,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        if isinstance(max_answer_bytes, bool) or not isinstance(max_answer_bytes, int) or max_answer_bytes < 1:
            raise ValidationError("max_answer_bytes", f"must be a positive int, got {max_answer_bytes!r}")
        self._max_answer_bytes = max_answer_bytes
        self._auth = authorizer
        self._explicit_base_url = require_secure_url("base_url", base_url) if base_url is not None else None
        self._http = session
        self._owns_http = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._state = _State.NEW if session is None else _State.OPEN
        self._adopt_credentials()

    @property
    def base_url(self) -> str:
        """Where v1 endpoint paths are appended now (follows ``api_domain`` after refreshes)."""
        self._follow_authorizer()
        return self._base_url

    @property
    def base_url_v2(self) -> str:
        """Where v2 endpoint paths are appended: the v1 base URL without ``/v1`` (and ``/api``), + ``/api/v2``."""
        self._follow_authorizer()
        return self._base_url_v2

    @property
    def authorizer(self) -> Authorizer:
        """The credentials this transport sends."""
        return self._auth

    async def open(self) -> None:
        """Create the aiohttp session if none was given, and adopt a newer stored token."""
        if self._state is _State.CLOSED:
            raise RuntimeError(_CLOSED)
        await self._auth.load_stored()
        if self._state is _State.NEW:
            self._http = aiohttp.ClientSession(timeout=self._timeout)
            self._state = _State.OPEN

    async def close(self) -> None:
        """Close the aiohttp session if this object created it; a closed transport cannot be reopened."""
        http, self._http, self._state = self._http, None, _State.CLOSED
        if self._owns_http and http is not None:
            await http.close()

    @property
    def generation(self) -> int:
        """The authorizer's generation (it changes when a refresh ends); note it before sending, for a 401."""
        return self._auth.generation

    @property
    def can_refresh(self) -> bool:
        """Whether a 401 can be answered by refreshing the token."""
        return self._auth.can_refresh

    async def refresh(self, generation: int) -> None:
        """Refresh the token unless that already happened since ``generation`` (single-flight)."""
        await self._auth.refresh(generation, self._http)

    def refresh_due(self) -> bool:
        """Whether the token expires within the refresh margin (cheap, and no coroutine: checked before every send)."""
        return self._auth.refresh_due()

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        version: str = "v1",
        params: Mapping[str, str] | None = None,
    ) -> Response:
        """Send ``method`` to the ``version``'s base URL + ``path`` (already percent-encoded) with a JSON ``body``.

        ``params`` become the query string. A token about to expire is the caller's to refresh first
        (:meth:`refresh_due`, :meth:`refresh`), before it charges a budget for the request.

        Redirects are never followed: a token must not go to whatever host a ``Location`` names.

        :raises ApiError: a subclass per status for non-2xx answers (3xx included), ``ApiError`` for
            ``success: false``, an answer that is not JSON, or one larger than ``max_answer_bytes``.
        :raises TransportError: no HTTP answer (connection error, dropped connection, timeout).
        """
        if self._state is not _OPEN:
            raise RuntimeError(_CLOSED if self._state is _State.CLOSED else _NOT_OPEN)
        http = self._http
        assert http is not None  # an open transport always has its aiohttp session
        if self._adopted != self._auth.generation:  # _follow_authorizer, inlined: it runs before every request
            self._adopt_credentials()
        failure: TransportError | None = None
        try:
            base = self._base_url if version == "v1" else self._base_url_v2
            # Awaited, then entered: the response's own context (release, and wait for the body's writer) without
            # the request context manager's coroutine between this one and aiohttp's on every suspension.
            async with await http.request(
                method, _url(base + path), data=body, params=params, headers=self._headers, timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                # Content-Length counts the encoded bytes: only without a Content-Encoding is it the size read.
                size = None if "Content-Encoding" in response.headers else response.content_length
                if size is not None and size <= self._max_answer_bytes:
                    raw = await response.read()  # the common case, without a coroutine of its own: one read
                else:
                    raw = await self._read_capped(response, size)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            failure = _transport_error(method, path, exc)
        if failure is not None:
            raise failure  # outside the except block: not even __context__ holds aiohttp's exception
        status, headers = response.status, response.headers
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s %s -> %d", method, path, status)
        if not 200 <= status < 300:
            raise error_from_response(status, raw, headers)
        try:
            # Decoding first skips json.loads' encoding detection on bytes; a non-UTF-8 body is a ValueError too.
            decoded = _loads(raw.decode()) if raw else None
        except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the interpreter's stack
            text = raw.decode("utf-8", "replace")
            raise ApiError(status, "the answer is not JSON", body=text, headers=headers) from exc
        if isinstance(decoded, dict) and decoded.get("success") is False:
            raise error_from_response(status, decoded, headers)
        return Response(status, decoded, headers)

    async def _read_capped(self, response: aiohttp.ClientResponse, size: int | None) -> bytes:
        """An answer of unknown decoded ``size`` (``None``), or one over ``max_answer_bytes``: its body, read until
        it passes the cap, else an error (the rest is never read)."""
        cap = self._max_answer_bytes
        if size is None:
            chunks, size = [], 0
            while size <= cap and (chunk := await response.content.readany()):
                chunks.append(chunk)
                size += len(chunk)
            if size <= cap:
                return b"".join(chunks)
        response.close()  # the connection, with the unread rest, must not go back to the pool
        status = response.status
        message = f"the answer is larger than max_answer_bytes ({cap} bytes)"
        raise error_class(status)(status, message, headers=response.headers)

    def _follow_authorizer(self) -> None:
        # The authorizer's refresh adopts the new token itself, even when every caller that waited for it was
        # cancelled; the transport catches up here, cheaply, before it uses the credentials.
        if self._adopted != self._auth.generation:
            self._adopt_credentials()

    def _adopt_credentials(self) -> None:
        self._adopted = self._auth.generation
        self._headers = {**self._auth.headers, "Content-Type": "application/json"}
        domain = self._auth.api_domain
        if self._explicit_base_url is not None:
            self._base_url = self._explicit_base_url
        elif domain:
            self._base_url = require_api_domain(domain) + "/api/v1"
        else:
            self._base_url = DEFAULT_BASE_URL
        self._base_url_v2 = _v2_beside(self._base_url)


def _transport_error(method: str, path: str, exc: BaseException) -> TransportError:
    """The :class:`TransportError` for an aiohttp failure, from its type and text only.

    aiohttp's ``ClientResponseError`` (and its subclasses) hold ``request_info.headers``, the token among
    them, and its text ends with the URL: keep its status and message, which come from the answer.
    """
    text = f"{exc.status}, {exc.message}" if isinstance(exc, aiohttp.ClientResponseError) else str(exc)
    reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    _log.debug("%s %s failed: %s", method, path, reason)
    return TransportError(f"{method} {path}: {reason}", request_sent=not isinstance(exc, _NOT_SENT))
