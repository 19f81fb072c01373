"""The transport: one aiohttp session, the auth header, the base URL, and the mapping of answers to errors.

This is the innermost layer of a call. It sends exactly what it is given to ``base_url + path``, refreshes
the OAuth token when it is about to expire, and turns anything but a successful JSON envelope into a typed
:class:`~pipedrive_channels.errors.ApiError`. It knows nothing of endpoints, budgets or retries: the caller
decides whether a 401 is worth a :meth:`Session.refresh` and a second attempt.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from .auth import Authorizer, require_secure_url
from .errors import ApiError, TransportError, error_from_response

__all__ = ["DEFAULT_BASE_URL", "Response", "Session"]

DEFAULT_BASE_URL = "https://api.pipedrive.com/v1"
"""Where requests go when neither ``base_url`` nor the token's ``api_domain`` says otherwise."""

_log = logging.getLogger("pipedrive_channels")


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


class Session:
    """Sends authenticated requests to Pipedrive and maps the answers.

    :param authorizer: the credentials and their refresh.
    :param base_url: e.g. ``http://127.0.0.1:8080/v1``; if ``None``, ``{api_domain}/api/v1`` of the current
        token, else :data:`DEFAULT_BASE_URL`. Plain HTTP is refused unless the host is loopback.
    :param session: an aiohttp session to use (not closed by :meth:`close`); else one is created on open.
    :param timeout: seconds for one request, connection included.
    """

    def __init__(
        self,
        authorizer: Authorizer,
        *,
        base_url: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._auth = authorizer
        self._explicit_base_url = require_secure_url("base_url", base_url) if base_url is not None else None
        self._http = session
        self._owns_http = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._closed = False
        self._adopt_credentials()

    @property
    def base_url(self) -> str:
        """Where v1 endpoint paths are appended now (follows ``api_domain`` after refreshes)."""
        return self._base_url

    @property
    def base_url_v2(self) -> str:
        """Where v2 endpoint paths are appended: the v1 base URL without ``/v1`` (and ``/api``), + ``/api/v2``."""
        return self._base_url_v2

    @property
    def authorizer(self) -> Authorizer:
        """The credentials this session sends."""
        return self._auth

    async def open(self) -> None:
        """Create the aiohttp session if none was given, and adopt a newer stored token."""
        if self._closed:
            raise RuntimeError("this session is closed; create a new client")
        await self._auth.load_stored()
        self._adopt_credentials()
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self._timeout)

    async def close(self) -> None:
        """Close the aiohttp session if this object created it."""
        self._closed = True
        if self._owns_http and self._http is not None:
            await self._http.close()
        self._http = None

    @property
    def generation(self) -> int:
        """How many times the token was refreshed; note it before sending, to refresh after a 401."""
        return self._auth.generation

    @property
    def can_refresh(self) -> bool:
        """Whether a 401 can be answered by refreshing the token."""
        return self._auth.can_refresh

    async def refresh(self, generation: int) -> None:
        """Refresh the token unless that already happened since ``generation`` (single-flight)."""
        await self._auth.refresh(generation, self._http)
        self._adopt_credentials()

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

        Refreshes the token first when it expires within the margin. ``params`` become the query string.

        :raises ApiError: a subclass per status for non-2xx answers, or ``ApiError`` for ``success: false``.
        :raises TransportError: no HTTP answer (connection error, dropped connection, timeout).
        """
        http = self._http
        if http is None:
            raise RuntimeError("the client is not open: use `async with ChannelsClient(...)` or `await open()`")
        if self._auth.refresh_due():
            await self.refresh(self._auth.generation)
        try:
            base = self._base_url if version == "v1" else self._base_url_v2
            async with http.request(
                method, _url(base + path), data=body, params=params, headers=self._headers, timeout=self._timeout
            ) as response:
                raw = await response.read()
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            _log.debug("%s %s failed: %s", method, path, reason)
            raise TransportError(f"{method} {path}: {reason}", request_sent=not isinstance(exc, _NOT_SENT)) from exc
        status, headers = response.status, response.headers
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s %s -> %d", method, path, status)
        if not 200 <= status < 300:
            raise error_from_response(status, raw, headers)
        try:
            # Decoding first skips json.loads' encoding detection on bytes; a non-UTF-8 body is a ValueError too.
            decoded = json.loads(raw.decode()) if raw else None
        except ValueError as exc:
            text = raw.decode("utf-8", "replace")
            raise ApiError(status, "the answer is not JSON", body=text, headers=headers) from exc
        if isinstance(decoded, dict) and decoded.get("success") is False:
            raise error_from_response(status, decoded, headers)
        return Response(status, decoded, headers)

    def _adopt_credentials(self) -> None:
        self._headers = {**self._auth.headers, "Content-Type": "application/json"}
        domain = self._auth.api_domain
        if self._explicit_base_url is not None:
            self._base_url = self._explicit_base_url
        elif domain:
            self._base_url = require_secure_url("api_domain", domain) + "/api/v1"
        else:
            self._base_url = DEFAULT_BASE_URL
        self._base_url_v2 = _v2_beside(self._base_url)
