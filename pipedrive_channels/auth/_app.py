"""The OAuth app: the authorization URL, and the token requests (code exchange, refresh) with redacted errors.

The client secret, the code and the refresh token travel only in the request's header and form; an error from
the token endpoint keeps none of them, nor any token its answer holds, and chains no aiohttp error.
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import attrs
from multidict import CIMultiDict, CIMultiDictProxy

from ..errors import ApiError, AuthenticationError, TransportError, ValidationError, error_from_response
from ._tokens import NOT_JSON, OAuthToken, decode_json, require_secure_url

__all__ = ["OAuthApp"]

# The fields of a token endpoint's error answer worth keeping; any other may hold a token or echo the form.
_ERROR_FIELDS = ("success", "error", "error_description", "message", "error_info", "code", "errorCode")


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
        data = decode_json(body)
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
            reason = "not JSON" if data is NOT_JSON else str(exc)
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
