"""Exceptions raised by the SDK, and the mapping from Pipedrive's answers to them.

Every exception derives from :class:`PipedriveError`. None of them ever holds a token or the client
secret: they carry the server's answer (status, envelope fields, body, headers) and the request's
method and path, never the request's headers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "ApiError",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExhaustedError",
    "BudgetTimeoutError",
    "BudgetUnavailableError",
    "ForbiddenError",
    "GoneError",
    "NotFoundError",
    "PaymentRequiredError",
    "PipedriveError",
    "RateLimitError",
    "ServerError",
    "TransportError",
    "UnprocessableError",
    "ValidationError",
    "error_class",
    "error_from_response",
]


class PipedriveError(Exception):
    """Base class of every error the SDK raises.

    ``attempts`` and ``elapsed`` say how many attempts the call made and how many seconds it took in all,
    once the client gives up with this error (1 and ``None`` until then).
    """

    attempts: int = 1
    elapsed: float | None = None


class ValidationError(PipedriveError, ValueError):
    """Bad input, raised before anything is sent: names the field and the reason."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class BudgetTimeoutError(PipedriveError, TimeoutError):
    """The call could not be admitted by the rate budget before its deadline; nothing was sent or charged."""


class BudgetExhaustedError(PipedriveError):
    """The daily token budget is spent: nothing was sent or charged.

    :param retry_at: the budget clock's time at which the call would be admitted (``None`` if unknown).
    :param retry_after: seconds from now until then (``None`` if unknown).
    """

    def __init__(self, message: str, *, retry_at: float | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_at = retry_at
        self.retry_after = retry_after


class BudgetUnavailableError(PipedriveError):
    """The shared budget's Redis did not answer, so nothing was admitted or sent (``on_redis_error="fail"``).

    The Redis error is chained as ``__cause__``.
    """


class TransportError(PipedriveError):
    """The request did not get an HTTP answer: connection refused or dropped, or a timeout.

    The message names the original exception's type and text; the exception itself is not chained (neither
    ``__cause__`` nor ``__context__``), because aiohttp's can hold the request's headers, and so the token.
    ``request_sent`` is False only when the request surely never left (the connection could not be made):
    otherwise the server may have processed it.
    """

    def __init__(self, message: str, *, request_sent: bool = True) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class ApiError(PipedriveError):
    """Pipedrive answered with an error (a non-2xx status, or ``"success": false``).

    :param status: the HTTP status.
    :param error: the envelope's ``error`` text (or ``message``), if any.
    :param error_info: the envelope's ``error_info``, if any.
    :param code: the machine code: ``additional_data.code``, else top-level ``code`` or ``errorCode``.
    :param body: the decoded JSON body, or the raw text when it was not JSON (HTML error pages).
    :param headers: the response headers.
    """

    def __init__(
        self,
        status: int,
        error: str | None = None,
        error_info: str | None = None,
        code: str | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        detail = f"HTTP {status}"
        if error:
            detail += f": {error}"
        if code:
            detail += f" [{code}]"
        super().__init__(detail)
        self.status = status
        self.error = error
        self.error_info = error_info
        self.code = code
        self.body = body
        self.headers: Mapping[str, str] = headers if headers is not None else {}


class BadRequestError(ApiError):
    """400: the server rejected the body or parameters."""


class AuthenticationError(ApiError):
    """401, or a failed OAuth exchange or refresh: the credentials are not (or no longer) valid."""


class PaymentRequiredError(ApiError):
    """402: the company account is not open (trial expired, no payment details)."""


class ForbiddenError(ApiError):
    """403: not allowed (e.g. only admins can add channels), or a Cloudflare block page."""


class NotFoundError(ApiError):
    """404: unknown channel or conversation, or an endpoint Pipedrive has retired."""


class GoneError(ApiError):
    """410: the resource or endpoint is permanently gone (the Channels API is deprecated)."""


class UnprocessableError(ApiError):
    """422: the request was understood but cannot be processed."""


class RateLimitError(ApiError):
    """429: the burst limit or the company's daily token budget is spent."""


class ServerError(ApiError):
    """5xx: Pipedrive failed or is in maintenance (503)."""


_ERROR_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: PaymentRequiredError,
    403: ForbiddenError,
    404: NotFoundError,
    410: GoneError,
    422: UnprocessableError,
    429: RateLimitError,
}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def error_class(status: int) -> type[ApiError]:
    """The :class:`ApiError` subclass for an HTTP status (``ApiError`` itself for statuses without one)."""
    return _ERROR_BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)


def _redirect_text(headers: Mapping[str, str]) -> str:
    """What a 3xx answer said, naming only the ``Location``'s host: its path and query may hold anything."""
    location = headers.get("Location")
    if not location:
        return "redirect not followed (no Location header)"
    try:
        host = urlsplit(location).hostname
    except ValueError:  # e.g. an unbalanced '[' in the host
        return "redirect not followed (Location is not a URL)"
    return f"redirect not followed (Location host {host!r})" if host else "redirect not followed (same host)"


def error_from_response(status: int, body: bytes | Any, headers: Mapping[str, str]) -> ApiError:
    """Build the typed error for an answer, reading Pipedrive's envelope defensively.

    ``body`` is the raw bytes (possibly empty, HTML, nested too deep, or not JSON at all) or an already decoded
    JSON value. Every envelope field may be missing. A 3xx is an error too: redirects are never followed.
    """
    decoded: Any = body
    if isinstance(body, bytes | bytearray):
        try:
            decoded = json.loads(body) if body else None
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the interpreter's stack
            decoded = body.decode("utf-8", "replace")
    error = error_info = code = None
    if isinstance(decoded, dict):
        error = _text(decoded.get("error")) or _text(decoded.get("message"))
        error_info = _text(decoded.get("error_info"))
        additional = decoded.get("additional_data")
        if isinstance(additional, dict):
            code = additional.get("code")
        code = code or decoded.get("code") or decoded.get("errorCode")
    if 300 <= status < 400:
        error = _redirect_text(headers)
    code = None if code is None else str(code)
    return error_class(status)(status, error, error_info, code, decoded, headers)
