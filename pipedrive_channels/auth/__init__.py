"""Credentials: OAuth 2.0 tokens, company API tokens, the OAuth app, token stores, and the single-flight refresh.

Secrets (access and refresh tokens, the client secret) are excluded from every ``repr``; they travel only
in request headers and form bodies, never in exceptions or logs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import aiohttp
import attrs
from multidict import CIMultiDict, CIMultiDictProxy

from ..errors import ApiError, AuthenticationError, TransportError, ValidationError, error_from_response

__all__ = [
    "ApiToken",
    "Authorizer",
    "JsonFileTokenStore",
    "MemoryTokenStore",
    "OAuthApp",
    "OAuthToken",
    "TokenStore",
    "require_api_domain",
    "require_secure_url",
]

_log = logging.getLogger("pipedrive_channels")

REFRESH_MARGIN = 60.0
"""Seconds before expiry at which a token is refreshed proactively (at most half a known lifetime)."""

# https, a Pipedrive host (pipedrive.com or a subdomain) and nothing else: no userinfo, port, path or query.
_API_DOMAIN = re.compile(r"https://((?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)*pipedrive\.com)/?", re.IGNORECASE)
# The fields of a token endpoint's error answer worth keeping; any other may hold a token or echo the form.
_ERROR_FIELDS = ("success", "error", "error_description", "message", "error_info", "code", "errorCode")


def require_secure_url(field: str, url: str) -> str:
    """Return ``url`` without a trailing slash, or raise: tokens go over HTTPS, or HTTP to loopback only."""
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except (TypeError, ValueError, AttributeError):  # not a string, or a malformed IPv6 host
        parts, hostname = None, None
    if parts is not None and "@" in parts.netloc:  # aiohttp would take userinfo as credentials, or refuse it
        raise ValidationError(field, "must not hold a user name or password")
    if parts is None or parts.scheme not in ("http", "https") or not hostname:
        raise ValidationError(field, f"must be an absolute http(s) URL, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(hostname):
        raise ValidationError(field, "must use https (plain http is allowed only for loopback hosts)")
    return url.rstrip("/")


def require_api_domain(domain: str) -> str:
    """Return ``https://<host>`` for a token's ``api_domain``, or raise: its Bearer token goes there, so it
    must be https on ``pipedrive.com`` or a subdomain, with no userinfo, port, path or query.

    A loopback or other host (a fake Pipedrive in tests) is reached through an explicit ``base_url`` instead.
    """
    match = _API_DOMAIN.fullmatch(domain) if isinstance(domain, str) else None
    if match is None:
        raise ValidationError("api_domain", "must be https://pipedrive.com or a subdomain (or pass base_url)")
    return f"https://{match.group(1).lower()}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _optional_text(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise ValidationError(attribute.name, f"must be a string or None, got {type(value).__name__}")


@attrs.frozen
class OAuthToken:
    """An OAuth 2.0 token pair as Pipedrive's token endpoint issues it.

    ``api_domain`` is the company's API host (e.g. ``https://acme.pipedrive.com``); requests go to
    ``{api_domain}/api/v1`` and follow it after every refresh, since the company domain can change.
    """

    access_token: str = attrs.field(repr=False)
    refresh_token: str | None = attrs.field(default=None, repr=False, validator=_optional_text)
    expires_at: datetime | None = attrs.field(default=None)
    api_domain: str | None = attrs.field(default=None, validator=_optional_text)
    scope: str | None = attrs.field(default=None, validator=_optional_text)
    token_type: str = attrs.field(default="Bearer")

    @access_token.validator
    def _check_access_token(self, attribute: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValidationError("access_token", "must be a non-empty string")

    @token_type.validator
    def _check_token_type(self, attribute: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str):
            raise ValidationError("token_type", f"must be a string, got {type(value).__name__}")

    @expires_at.validator
    def _check_expires_at(self, attribute: attrs.Attribute[datetime | None], value: datetime | None) -> None:
        # A naive expiry would be read as local time by timestamp(): refresh far too early or too late.
        if value is not None and (not isinstance(value, datetime) or value.utcoffset() is None):
            raise ValidationError("expires_at", "must be a timezone-aware datetime or None")

    @classmethod
    def from_response(cls, data: Mapping[str, Any], now: datetime) -> OAuthToken:
        """Build a token from the token endpoint's JSON answer; ``expires_in`` counts from ``now``.

        :raises ValidationError: naming the first field that is missing or of the wrong type.
        """
        if not isinstance(data, Mapping):
            raise ValidationError("token", "must be a JSON object")
        access_token = data.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise ValidationError("access_token", "missing from the token endpoint's answer")
        return cls(
            access_token=access_token,
            refresh_token=data.get("refresh_token"),
            expires_at=_expiry(data.get("expires_in"), now),
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
        """Inverse of :meth:`to_json`.

        :raises ValidationError: naming the first field that is unknown, missing or of the wrong type.
        """
        if not isinstance(data, Mapping):
            raise ValidationError("token", "must be a JSON object")
        fields = dict(data)
        if unknown := sorted(map(str, fields.keys() - _TOKEN_FIELDS)):
            raise ValidationError(unknown[0], "is not a field of OAuthToken")
        if "access_token" not in fields:
            raise ValidationError("access_token", "is missing")
        expires_at = fields.get("expires_at")
        if expires_at is not None:
            try:
                fields["expires_at"] = datetime.fromisoformat(expires_at)
            except (TypeError, ValueError):
                raise ValidationError("expires_at", "must be an ISO 8601 date and time") from None
        return cls(**fields)


def _expiry(expires_in: object, now: datetime) -> datetime | None:
    """``now + expires_in`` seconds; a non-number, NaN, infinite or out-of-range value names the field."""
    if expires_in is None:
        return None
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
        raise ValidationError("expires_in", "must be a number of seconds")
    try:
        return now + timedelta(seconds=float(expires_in))
    except (OverflowError, ValueError):  # too large for a float or a datetime, infinite, NaN
        raise ValidationError("expires_in", "must be a finite number of seconds within range") from None


_TOKEN_FIELDS = frozenset(field.name for field in attrs.fields(OAuthToken))


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

    Saves are atomic (a temporary file in the same folder, mode 0600, fsynced, then renamed over the old one),
    so a crash never leaves a half-written token behind. A temporary file a killed save left (it holds a
    token) is removed by the next load or save, once it is older than any save in progress could be.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        # mkstemp's names: the prefix, then 8 characters of [a-z0-9_]
        self._temp_name = re.compile(re.escape(f".{self.path.name}.") + "[a-z0-9_]{8}")

    def __repr__(self) -> str:
        return f"JsonFileTokenStore({str(self.path)!r})"

    async def load(self) -> OAuthToken | None:
        """Read the token, or ``None`` if the file does not exist.

        :raises ValidationError: the file is not a JSON token (the message names the field, never a value).
        """
        return await asyncio.to_thread(self._load)

    async def save(self, token: OAuthToken) -> None:
        """Write ``token`` atomically with mode 0600."""
        await asyncio.to_thread(self._save, token)

    def _load(self) -> OAuthToken | None:
        self._remove_stale_temp_files()
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        data = _decode_json(raw)  # bytes: invalid UTF-8 is "not JSON" too
        if data is _NOT_JSON:
            raise ValidationError("token_file", f"{self.path} is not JSON")
        if not isinstance(data, dict):
            raise ValidationError("token_file", f"{self.path} must hold a JSON object")
        return OAuthToken.from_json(data)

    def _save(self, token: OAuthToken) -> None:
        self._remove_stale_temp_files()
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

    def _remove_stale_temp_files(self) -> None:
        # Only older ones: a younger file may be another process's save under way, about to be renamed.
        cutoff = time.time() - _STALE_TEMP_FILE
        try:
            with os.scandir(self.path.parent) as entries:
                stale = [e.path for e in entries if self._temp_name.fullmatch(e.name) and e.stat().st_mtime < cutoff]
        except OSError:  # the folder is missing or unreadable: nothing to clean
            return
        for path in stale:
            with contextlib.suppress(FileNotFoundError):  # another process cleaned it first
                os.unlink(path)


_STALE_TEMP_FILE = 60.0
"""Seconds after which a store's temporary file is a killed save's leftover (a save takes milliseconds)."""

_NOT_JSON = object()


def _decode_json(text: str | bytes) -> Any:
    """The decoded value, or ``_NOT_JSON``. Never raises, so no decode error is chained to what the caller
    raises: a ``JSONDecodeError`` holds the whole text, tokens included. Deep nesting is not JSON here."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _NOT_JSON


@attrs.define
class OAuthApp:
    """A Pipedrive Marketplace app: exchanges authorization codes and refreshes tokens.

    The client authenticates to the token endpoint with HTTP Basic (``client_id:client_secret``), as
    Pipedrive recommends, and posts ``application/x-www-form-urlencoded`` bodies. A token request takes at
    most ``timeout`` seconds, connection included, and never follows a redirect (the form holds the code or
    the refresh token).
    """

    client_id: str = attrs.field()
    client_secret: str = attrs.field(repr=False)
    redirect_uri: str | None = None
    token_url: str = attrs.field(default="https://oauth.pipedrive.com/oauth/token")
    authorize_url: str = attrs.field(default="https://oauth.pipedrive.com/oauth/authorize")
    timeout: float = attrs.field(default=30.0, kw_only=True)

    @timeout.validator
    def _check_timeout(self, attribute: attrs.Attribute[float], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
            raise ValidationError("timeout", "must be a positive finite number of seconds")

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
        status, body, headers = await self._post(form, session)
        data = _decode_json(body)
        # Never kept in an error: the client secret, the form's code or refresh token, and any token the answer
        # holds (an odd answer may carry freshly issued ones).
        secrets = [self.client_secret, form.get("code"), form.get("refresh_token")]
        if isinstance(data, dict):
            secrets += [data.get("access_token"), data.get("refresh_token")]
        if status != 200:
            raise _token_error(status, data, headers, [text for text in secrets if isinstance(text, str) and text])
        try:
            token = OAuthToken.from_response(data, datetime.now(timezone.utc))
        except ValidationError as exc:  # its message names the field, never a value
            reason = "not JSON" if data is _NOT_JSON else str(exc)
        else:
            if previous is not None and token.refresh_token is None:
                token = attrs.evolve(token, refresh_token=previous.refresh_token)
            return token
        raise AuthenticationError(status, f"the token endpoint's answer is not a token: {reason}")

    async def _post(
        self, form: dict[str, str], session: aiohttp.ClientSession | None
    ) -> tuple[int, bytes, CIMultiDictProxy[str]]:
        """POST ``form`` to the token endpoint, redirects not followed; the status, body and headers."""
        own_session = session is None
        http = aiohttp.ClientSession() if session is None else session
        # HTTP Basic client authentication (RFC 7617), built here: aiohttp 3.14 deprecates BasicAuth.
        basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        failure = None
        try:
            async with http.post(
                self.token_url, data=form, headers={"Authorization": f"Basic {basic}"}, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                return response.status, await response.read(), response.headers
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            failure = type(exc).__name__
        finally:
            if own_session:
                await http.close()
        # Raised here, outside the except clause, so nothing is chained: aiohttp's errors may hold the request's
        # headers, and with them the client's Basic credentials.
        raise TransportError(f"token endpoint unreachable or silent: {failure}")


def _token_error(status: int, data: Any, headers: Mapping[str, str], secrets: list[str]) -> ApiError:
    """The typed error for a token endpoint's failure, holding none of ``secrets`` and no token.

    Only the error fields of a JSON object answer are kept (any other may echo the form or hold a token);
    a redirect names its target's host, and is never followed.
    """

    # One pass, longest first: a secret inside another is not left half-replaced, nor is "<redacted>" itself.
    pattern = re.compile("|".join(map(re.escape, sorted(secrets, key=len, reverse=True))))

    def redact(text: str) -> str:
        return pattern.sub("<redacted>", text) if secrets else text

    safe_headers = CIMultiDict((name, redact(value)) for name, value in headers.items())
    body = None
    if isinstance(data, dict):
        body = {key: redact(value) if isinstance(value, str) else value
                for key, value in data.items() if key in _ERROR_FIELDS and isinstance(value, str | bool | int)}
    if 300 <= status < 400:
        host = _host_of(headers.get("Location", ""))
        return ApiError(status, f"the token endpoint redirects to {host}; redirects are not followed",
                        body=body, headers=safe_headers)
    error = error_from_response(status, body, safe_headers)
    # A rejected code, refresh token or client is an authentication failure; 429/5xx stay as they are.
    if 400 <= status < 500 and status != 429:
        return AuthenticationError(status, error.error, error.error_info, error.code, error.body, safe_headers)
    return error


def _host_of(location: str) -> str:
    try:
        host = urlsplit(location).hostname
    except ValueError:
        host = None
    return host or "an unnamed host"


class Authorizer:
    """The credentials a session sends, kept fresh: one refresh at a time, however many calls wait.

    ``generation`` counts the ends of refreshes (adopted or failed) and adopted stored tokens. A caller notes it
    before sending; after a 401 it asks for a refresh of that generation. If a refresh ended since, it does not
    start another: it retries with the new token, or gets that refresh's failure, which is final for every call
    that waited on it (a later call may try again).

    :param follow_api_domain: requests go to the token's ``api_domain`` (no explicit ``base_url``), so a token
        naming any other host than https ``pipedrive.com`` or a subdomain is refused, from the caller, a token
        answer or the store.
    """

    def __init__(
        self,
        token: OAuthToken | ApiToken | str,
        app: OAuthApp | None = None,
        store: TokenStore | None = None,
        clock: Callable[[], float] = time.time,
        *,
        follow_api_domain: bool = True,
    ) -> None:
        if isinstance(token, str):
            token = OAuthToken(access_token=token)
        if not isinstance(token, OAuthToken | ApiToken):
            raise ValidationError("token", f"must be an OAuthToken, ApiToken or str, got {type(token).__name__}")
        self._app = app
        self._store = store
        self._clock = clock
        self._follow_api_domain = follow_api_domain
        self._flight: asyncio.Future[None] | None = None
        self._failure: tuple[int, Exception] | None = None  # the generation a failed refresh ended, and why
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
        """Adopt the store's token when it expires later than the current one (e.g. after a restart).

        :raises ValidationError: the stored token names an ``api_domain`` requests may not follow.
        """
        if self._store is None or not isinstance(self.token, OAuthToken):
            return
        stored = await self._store.load()
        current = self.token.expires_at
        if stored is not None and stored.expires_at is not None and (current is None or stored.expires_at > current):
            self._set(stored)
            self._failure = None
            self.generation += 1

    async def refresh(self, generation: int, http: aiohttp.ClientSession | None) -> None:
        """Refresh the token unless that happened since ``generation``; concurrent callers share one request.

        :raises PipedriveError: this refresh failed, or the one that ended ``generation`` did.
        """
        if generation != self.generation:
            if self._failure is not None and self._failure[0] == generation:
                raise self._failure[1]
            return
        if not self.can_refresh:
            raise AuthenticationError(401, "the access token is invalid or expired, and it cannot be refreshed")
        if self._flight is None:
            # A task of its own that adopts the new token itself: it goes on, and the token is adopted, even if
            # every caller waiting for it is cancelled.
            self._flight = asyncio.ensure_future(self._refresh(http))
            # Mark the outcome retrieved even if every waiter was cancelled (no "never retrieved" warning).
            self._flight.add_done_callback(lambda flight: flight.cancelled() or flight.exception())
        # shield: a cancelled caller must not cancel the refresh other callers wait on.
        await asyncio.shield(self._flight)

    async def _refresh(self, http: aiohttp.ClientSession | None) -> None:
        assert self._app is not None and isinstance(self.token, OAuthToken)
        try:
            token = await self._app.refresh(self.token, session=http)
            self._check(token)
            if self._store is not None:
                await self._store.save(token)
        except Exception as exc:
            _log.warning("OAuth token refresh failed: %s", exc)
            self._failure = (self.generation, exc)
            raise
        else:
            # Its lifetime from now, when it has just arrived: what expires_in said, less a few microseconds.
            lifetime = token.expires_at.timestamp() - self._clock() if token.expires_at is not None else None
            self._set(token, lifetime)
            self._failure = None
            _log.info("OAuth token refreshed; it expires at %s", token.expires_at)
        finally:
            self.generation += 1
            self._flight = None

    def _check(self, token: OAuthToken | ApiToken) -> None:
        if self._follow_api_domain and isinstance(token, OAuthToken) and token.api_domain is not None:
            require_api_domain(token.api_domain)

    def _set(self, token: OAuthToken | ApiToken, lifetime: float | None = None) -> None:
        """Adopt ``token``; ``lifetime`` is its whole lifetime in seconds, when known (it was just issued)."""
        self._check(token)
        self.token = token
        if isinstance(token, ApiToken):
            self.headers = {"x-api-token": token.value}
        else:
            self.headers = {"Authorization": f"Bearer {token.access_token}"}
        expires_at = token.expires_at if isinstance(token, OAuthToken) else None
        if expires_at is None or not self.can_refresh or (lifetime is not None and lifetime <= 0):
            # A token issued already expired cannot be refreshed ahead of time; a 401 will ask for a new one.
            self._refresh_at = None
        else:
            # At most half its lifetime ahead, so a short-lived token is used before it is refreshed.
            margin = REFRESH_MARGIN if lifetime is None else min(REFRESH_MARGIN, lifetime / 2)
            self._refresh_at = expires_at.timestamp() - margin
