"""The bodies Pipedrive answers with when it refuses a request: its error envelopes, as the live API words them."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

JsonDict = dict[str, Any]

_DOCS_INFO = "Please check the reference docs in https://developers.pipedrive.com/docs/api/v1"
_GENERIC_INFO = "Please check developers.pipedrive.com"

UNAUTHORIZED: JsonDict = {"success": False, "error": "unauthorized access", "errorCode": 401}


def invalid(error: str, code: str) -> JsonDict:
    """A 400 (or 404) naming the failed check and its code, e.g. ``INVALID_BODY``."""
    return {"success": False, "error": error, "error_info": _DOCS_INFO, "additional_data": {"code": code}}


def not_found(error: str) -> JsonDict:
    return invalid(error, "NOT_FOUND")


class Refused(Exception):
    """A request check that failed, raised by the persons and notes checks and answered as :meth:`answer`."""

    def __init__(self, field: str, problem: str, status: int = 400) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
        self.status = status

    def answer(self) -> tuple[int, JsonDict]:
        """``(status, body)``: the body's ``error`` names the field first, as Pipedrive's validator does."""
        if self.status == 404:
            return 404, not_found(self.problem)
        return self.status, invalid(f"Validation failed: {self.field}: {self.problem}", "ERR_SCHEMA_VALIDATION_FAILED")


def oauth_error(error: str, message: str) -> JsonDict:
    """The token endpoint's error body, e.g. ``invalid_grant``."""
    return {"success": False, "error": error, "message": message}


def error_body(status: int) -> JsonDict:
    """Pipedrive's generic error envelope for ``status``."""
    if status == 401:
        return UNAUTHORIZED
    if status == 429:
        error = "Request over limit"
    elif status >= 500:
        error = "Service unavailable"
    elif status in (404, 410):
        error = "Not found" if status == 404 else "Gone"
    else:
        try:
            error = HTTPStatus(status).phrase
        except ValueError:  # a status http.HTTPStatus does not know, e.g. 499
            error = "Error"
    return {
        "success": False,
        "error": error,
        "error_info": _GENERIC_INFO,
        "data": None,
        "additional_data": None,
    }
