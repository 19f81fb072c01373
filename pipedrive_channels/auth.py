"""Credentials: OAuth 2.0 tokens, company API tokens, the OAuth app, token stores, and the single-flight refresh.

Secrets (access and refresh tokens, the client secret) are excluded from every ``repr``; they travel only
in request headers and form bodies, never in exceptions or logs.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import aiohttp
import attrs

from .errors import AuthenticationError, TransportError, ValidationError, error_from_response

__all__ = [
    "ApiToken",
    "Authorizer",
    "JsonFileTokenStore",
    "MemoryTokenStore",
    "OAuthApp",
    "OAuthToken",
    "TokenStore",
    "require_secure_url",
]

_log = logging.getLogger("pipedrive_channels")

REFRESH_MARGIN = 60.0
"""Seconds before expiry at which a token is refreshed proactively."""


def require_secure_url(field: str, url: str) -> str:
    """Return ``url`` without a trailing slash, or raise: tokens go over HTTPS, or HTTP to loopback only."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(field, f"must be an absolute http(s) URL, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValidationError(field, "must use https (plain http is allowed only for loopback hosts)")
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@attrs.frozen
class OAuthToken:
    """An OAuth 2.0 token pair as Pipedrive's token endpoint issues it.

    ``api_domain`` is the company's API host (e.g. ``https://acme.pipedrive.com``); requests go to
    ``{api_domain}/api/v1`` and follow it after every refresh, since the company domain can change.
    """

    access_token: str = attrs.field(repr=False)
    refresh_token: str | None = attrs.field(default=None, repr=False)
    expires_at: datetime | None = attrs.field(default=None)
    api_domain: str | None = None
    scope: str | None = None
    token_type: str = "Bearer"

    @access_token.validator
    def _check_access_token(self, attribute: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValidationError("access_token", "must be a non-empty string")

    @expires_at.validator
    def _check_expires_at(self, attribute: attrs.Attribute[datetime | None], value: datetime | None) -> None:
        # A naive expiry would be read as local time by timestamp(): refresh far too early or too late.
        if value is not None and (not isinstance(value, datetime) or value.utcoffset() is None):
            raise ValidationError("expires_at", "must be a timezone-aware datetime or None")

    @classmethod
    def from_response(cls, data: Mapping[str, Any], now: datetime) -> OAuthToken:
        """Build a token from the token endpoint's JSON answer; ``expires_in`` counts from ``now``."""
        access_token = data.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise ValidationError("access_token", "missing from the token endpoint's answer")
        expires_in = data.get("expires_in")
        return cls(
            access_token=access_token,
            refresh_token=data.get("refresh_token"),
            expires_at=now + timedelta(seconds=float(expires_in)) if expires_in is not None else None,
            api_domain=data.get("api_domain"),
            scope=data.get("scope"),
            token_type=data.get("token_type") or "Bearer",
        )

    def to_json(self) -> dict[str, Any]:
        """The token as a JSON-ready dict (for token stores; it holds secrets)."""
        data = attrs.asdict(self)
        data["expires_at"] = self.expires_at.isoformat() if self.expires_at else None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OAuthToken:
        """Inverse of :meth:`to_json`."""
        fields = dict(data)
        expires_at = fields.get("expires_at")
        fields["expires_at"] = datetime.fromisoformat(expires_at) if expires_at else None
        return cls(**fields)


@attrs.frozen
class ApiToken:
    """A company API token, sent as the ``x-api-token`` header. It is never refreshed."""

    value: str = attrs.field(repr=False)


class TokenStore(Protocol):
    """Where refreshed tokens are kept, so a restarted process picks up the newest one."""

    async def load(self) -> OAuthToken | None:
        """Return the stored token, or ``None`` when there is none."""

    async def save(self, token: OAuthToken) -> None:
        """Persist ``token``, replacing the stored one."""


class MemoryTokenStore:
    """A :class:`TokenStore` in memory: shares refreshed tokens between clients in one process."""

    def __init__(self, token: OAuthToken | None = None) -> None:
        self._token = token

    def __repr__(self) -> str:
        return f"MemoryTokenStore(has_token={self._token is not None})"

    async def load(self) -> OAuthToken | None:
        """Return the stored token."""
        return self._token

    async def save(self, token: OAuthToken) -> None:
        """Keep ``token``."""
        self._token = token


class JsonFileTokenStore:
    """A :class:`TokenStore` in a JSON file, readable by its owner only (mode 0600).

    Saves are atomic (a temporary file in the same folder, fsynced, then renamed over the old one), so a
    crash never leaves a half-written token behind.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"JsonFileTokenStore({str(self.path)!r})"

    async def load(self) -> OAuthToken | None:
        """Read the token, or ``None`` if the file does not exist."""
        return await asyncio.to_thread(self._load)

    async def save(self, token: OAuthToken) -> None:
        """Write ``token`` atomically with mode 0600."""
        await asyncio.to_thread(self._save, token)

    def _load(self) -> OAuthToken | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return OAuthToken.from_json(json.loads(text))

    def _save(self, token: OAuthToken) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)  # mkstemp: mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(token.to_json(), file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise


@attrs.define
class OAuthApp:
    """A Pipedrive Marketplace app: exchanges authorization codes and refreshes tokens.

    The client authenticates to the token endpoint with HTTP Basic (``client_id:client_secret``), as
    Pipedrive recommends, and posts ``application/x-www-form-urlencoded`` bodies.
    """

    client_id: str = attrs.field()
    client_secret: str = attrs.field(repr=False)
    redirect_uri: str | None = None
    token_url: str = attrs.field(default="https://oauth.pipedrive.com/oauth/token")
    authorize_url: str = attrs.field(default="https://oauth.pipedrive.com/oauth/authorize")

    @client_id.validator
    def _check_client_id(self, attribute: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValidationError("client_id", "must be a non-empty string")

    @token_url.validator
    def _check_token_url(self, attribute: attrs.Attribute[str], value: str) -> None:
        require_secure_url("token_url", value)

    def authorization_url(self, state: str) -> str:
        """The URL to send the installing user to; Pipedrive redirects back with ``code`` and ``state``."""
        query = {"client_id": self.client_id, "state": state}
        if self.redirect_uri:
            query["redirect_uri"] = self.redirect_uri
        return f"{self.authorize_url}?{urlencode(query)}"

    async def exchange_code(self, code: str, *, session: aiohttp.ClientSession | None = None) -> OAuthToken:
        """Exchange an authorization code (valid 5 minutes, once) for a token pair."""
        if not code:
            raise ValidationError("code", "must be a non-empty string")
        form = {"grant_type": "authorization_code", "code": code}
        if self.redirect_uri:
            form["redirect_uri"] = self.redirect_uri
        return await self._token_request(form, session, previous=None)

    async def refresh(self, token: OAuthToken, *, session: aiohttp.ClientSession | None = None) -> OAuthToken:
        """Get a fresh access token; keeps ``token``'s refresh token if the answer has none."""
        if not token.refresh_token:
            raise ValidationError("refresh_token", "the token has no refresh token")
        form = {"grant_type": "refresh_token", "refresh_token": token.refresh_token}
        return await self._token_request(form, session, previous=token)

    async def _token_request(
        self, form: dict[str, str], session: aiohttp.ClientSession | None, previous: OAuthToken | None
    ) -> OAuthToken:
        own_session = session is None
        http = aiohttp.ClientSession() if session is None else session
        # HTTP Basic client authentication (RFC 7617), built here: aiohttp 3.14 deprecates BasicAuth.
        basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        try:
            async with http.post(self.token_url, data=form, headers={"Authorization": f"Basic {basic}"}) as response:
                body = await response.read()
                status, headers = response.status, response.headers
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise TransportError(f"token endpoint unreachable: {type(exc).__name__}") from exc
        finally:
            if own_session:
                await http.close()
        if status != 200:
            error = error_from_response(status, body, headers)
            # A rejected code, refresh token or client is an authentication failure; 429/5xx stay as they are.
            if 400 <= status < 500 and status != 429:
                raise AuthenticationError(status, error.error, error.error_info, error.code, error.body, headers)
            raise error
        try:
            token = OAuthToken.from_response(json.loads(body), datetime.now(timezone.utc))
        except (ValueError, TypeError) as exc:
            raise AuthenticationError(status, "the token endpoint's answer is not a token", body=body) from exc
        if previous is not None and token.refresh_token is None:
            token = attrs.evolve(token, refresh_token=previous.refresh_token)
        return token


class Authorizer:
    """The credentials a session sends, kept fresh: one refresh at a time, however many calls wait.

    ``generation`` counts refreshes. A caller notes it before sending; after a 401 it asks for a refresh
    of that generation, and if another call already refreshed since, it simply retries with the new token.
    """

    def __init__(
        self,
        token: OAuthToken | ApiToken | str,
        app: OAuthApp | None = None,
        store: TokenStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(token, str):
            token = OAuthToken(access_token=token)
        if not isinstance(token, OAuthToken | ApiToken):
            raise ValidationError("token", f"must be an OAuthToken, ApiToken or str, got {type(token).__name__}")
        self._app = app
        self._store = store
        self._clock = clock
        self._flight: asyncio.Future[None] | None = None
        self.generation = 0
        self._set(token)

    def __repr__(self) -> str:
        return f"Authorizer(kind={type(self.token).__name__}, generation={self.generation})"

    @property
    def can_refresh(self) -> bool:
        """Whether a 401 can be answered by a refresh (an OAuth token with a refresh token and an app)."""
        return self._app is not None and isinstance(self.token, OAuthToken) and bool(self.token.refresh_token)

    @property
    def api_domain(self) -> str | None:
        """The current token's ``api_domain``, if any."""
        return self.token.api_domain if isinstance(self.token, OAuthToken) else None

    def refresh_due(self) -> bool:
        """Whether the token expires within the refresh margin (cheap: called before every request)."""
        return self._refresh_at is not None and self._clock() >= self._refresh_at

    async def load_stored(self) -> None:
        """Adopt the store's token when it expires later than the current one (e.g. after a restart)."""
        if self._store is None or not isinstance(self.token, OAuthToken):
            return
        stored = await self._store.load()
        current = self.token.expires_at
        if stored is not None and stored.expires_at is not None and (current is None or stored.expires_at > current):
            self._set(stored)

    async def refresh(self, generation: int, http: aiohttp.ClientSession | None) -> None:
        """Refresh the token unless it changed since ``generation``; concurrent callers share one request."""
        if generation != self.generation:
            return
        if not self.can_refresh:
            raise AuthenticationError(401, "the access token is invalid or expired, and it cannot be refreshed")
        if self._flight is None:
            self._flight = asyncio.ensure_future(self._refresh(http))
            # Mark the outcome retrieved even if every waiter was cancelled (no "never retrieved" warning).
            self._flight.add_done_callback(lambda flight: flight.cancelled() or flight.exception())
        # shield: a cancelled caller must not cancel the refresh other callers wait on.
        await asyncio.shield(self._flight)

    async def _refresh(self, http: aiohttp.ClientSession | None) -> None:
        assert self._app is not None and isinstance(self.token, OAuthToken)
        try:
            try:
                token = await self._app.refresh(self.token, session=http)
            except Exception as exc:
                _log.warning("OAuth token refresh failed: %s", exc)
                raise
            if self._store is not None:
                await self._store.save(token)
            self._set(token)
            self.generation += 1
            _log.info("OAuth token refreshed; it expires at %s", token.expires_at)
        finally:
            self._flight = None

    def _set(self, token: OAuthToken | ApiToken) -> None:
        self.token = token
        if isinstance(token, ApiToken):
            self.headers = {"x-api-token": token.value}
        else:
            self.headers = {"Authorization": f"Bearer {token.access_token}"}
        expires_at = token.expires_at if isinstance(token, OAuthToken) else None
        self._refresh_at = (
            expires_at.timestamp() - REFRESH_MARGIN if expires_at is not None and self.can_refresh else None
        )
