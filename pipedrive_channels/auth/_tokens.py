"""Token models: an OAuth 2.0 token pair and a company API token, and the checks on where a token may go.

Secrets are excluded from every ``repr``. ``decode_json`` decodes text that may hold tokens without letting a
decode error (which quotes the text) be chained to anything raised.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import attrs

from ..errors import ValidationError

__all__ = ["NOT_JSON", "ApiToken", "OAuthToken", "decode_json", "require_api_domain", "require_secure_url"]

# https, a Pipedrive host (pipedrive.com or a subdomain) and nothing else: no userinfo, port, path or query.
_API_DOMAIN = re.compile(r"https://((?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)*pipedrive\.com)/?", re.IGNORECASE)


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


NOT_JSON = object()


def decode_json(text: str | bytes) -> Any:
    """The decoded value, or ``NOT_JSON``. Never raises, so no decode error is chained to what the caller
    raises: a ``JSONDecodeError`` holds the whole text, tokens included. Deep nesting is not JSON here."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return NOT_JSON
