"""The fake's OAuth authority: the codes, tokens and API tokens it issued, its grants, and the credential check."""

from __future__ import annotations

import base64
import math
import secrets
from time import monotonic
from typing import Protocol

from ._envelopes import JsonDict, oauth_error

FORM = "application/x-www-form-urlencoded"
_SCOPE = "base,messengers-integration"


class Owner(Protocol):
    """The fake's knobs the authority reads at each grant (and ``refresh_failures``, which it counts down)."""

    client_id: str
    client_secret: str
    access_token_ttl: float
    api_domain: str | None
    refresh_failures: int

    @property
    def root_url(self) -> str: ...


class Authority:
    """What Pipedrive's OAuth server knows: codes once each, access tokens until expiry, refresh and API tokens."""

    def __init__(self, owner: Owner) -> None:
        self._owner = owner
        self._access_tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._refresh_tokens: set[str] = set()
        self._api_tokens: set[str] = set()
        self._codes: dict[str, str | None] = {}  # authorization code -> redirect_uri it was issued for

    def issue_code(self, redirect_uri: str | None) -> str:
        code = secrets.token_urlsafe(16)
        self._codes[code] = redirect_uri
        return code

    def issue_token(self) -> JsonDict:
        refresh_token = secrets.token_urlsafe(32)
        self._refresh_tokens.add(refresh_token)
        return self._mint(refresh_token)

    def add_access_token(self, value: str, ttl: float | None) -> None:
        self._access_tokens[value] = math.inf if ttl is None else monotonic() + ttl

    def add_api_token(self, value: str) -> None:
        self._api_tokens.add(value)

    def expire_access_tokens(self) -> None:
        self._access_tokens.clear()

    def credential(self, authorization: str, api_token: str, now: float) -> tuple[str, bool]:
        """The rate-limit key of a request's credential (its token) and whether the credential is valid."""
        bearer = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
        if bearer and self._access_tokens.get(bearer, -math.inf) > now:
            return bearer, True
        if api_token in self._api_tokens:
            return api_token, True
        return bearer or api_token, False

    def grant(self, content_type: str, authorization: str, form: dict[str, str]) -> tuple[int, JsonDict]:
        """Answer a token request: its status and JSON body, worded as Pipedrive's OAuth server words them."""
        if content_type != FORM:
            return 400, oauth_error("invalid_request", f"Invalid request: content must be {FORM}")
        if _basic_credentials(authorization) != (self._owner.client_id, self._owner.client_secret):
            return 401, oauth_error("invalid_client", "Invalid client: client is invalid")
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            code = form.get("code", "")
            if code not in self._codes:
                return 400, oauth_error("invalid_grant", "Invalid grant: authorization code is invalid")
            redirect_uri = self._codes.pop(code)  # spent even when the redirect_uri is wrong
            if redirect_uri is not None and form.get("redirect_uri") != redirect_uri:
                return 400, oauth_error("invalid_grant", "Invalid request: redirect_uri is invalid")
            return 200, self.issue_token()
        if grant_type == "refresh_token":
            if self._owner.refresh_failures > 0:
                self._owner.refresh_failures -= 1
                return 400, oauth_error("invalid_grant", "Invalid grant: refresh token is invalid")
            refresh_token = form.get("refresh_token", "")
            if refresh_token not in self._refresh_tokens:
                return 400, oauth_error("invalid_grant", "Invalid grant: refresh token is invalid")
            return 200, self._mint(refresh_token)  # Pipedrive does not rotate refresh tokens
        return 400, oauth_error("unsupported_grant_type", "Unsupported grant type: grant_type is invalid")

    def _mint(self, refresh_token: str) -> JsonDict:
        access_token = secrets.token_urlsafe(32)
        ttl = self._owner.access_token_ttl
        self._access_tokens[access_token] = monotonic() + ttl
        return {
            "access_token": access_token,
            "token_type": "Bearer",
            "refresh_token": refresh_token,
            "scope": _SCOPE,
            "expires_in": ttl,
            "api_domain": self._owner.api_domain or self._owner.root_url,
        }


def _basic_credentials(authorization: str) -> tuple[str, str] | None:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        login, colon, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except ValueError:  # bad base64 or UTF-8
        return None
    return (login, password) if colon else None
