"""The webhooks registered at the fake (Pipedrive's v1 ``/webhooks``), and ``GET /v1/users/me``.

``POST /v1/webhooks`` checks its body as the spec says: ``subscription_url`` (an http(s) URL), ``event_action``
(``create``, ``change``, ``delete`` or ``*``), ``event_object`` (the documented objects or ``*``) and ``name`` (at
most 255 characters) are required; ``version`` is ``"1.0"`` or ``"2.0"`` (default ``"2.0"``); ``user_id`` (the user
the webhook is authorized with, by default the token's), ``http_auth_user`` and ``http_auth_password`` are
optional. A refusal is a 400 in the spec's shape, ``{"status": "error", "success": false, "errors": {field:
[reason]}}``, plus an ``error`` text naming the field. A user holds at most 40 webhooks. It answers 201.

No answer ever holds a password: ``http_auth_password`` is always ``null`` in the create and list answers (the fake
keeps it to send with its deliveries). ``last_delivery_time`` and ``last_http_status`` follow the deliveries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from ._envelopes import JsonDict, Refused
from ._params import path_id

EVENT_ACTIONS = ("create", "change", "delete", "*")
# The spec's objects, and those Pipedrive added in 2026.
EVENT_OBJECTS = ("activity", "deal", "lead", "note", "organization", "person", "pipeline", "product", "stage", "user",
                 "project", "task", "board", "phase", "deal_product", "deal_installment", "*")
MAX_PER_USER = 40
_MAX_NAME = 255
_MAX_TEXT = 2048  # a URL or a credential past this is no webhook's
_OK: JsonDict = {"status": "ok", "success": True}


def iso_now() -> str:
    """``2026-01-02T03:04:05.678Z``: how the webhooks API and the deliveries write times."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Webhooks:
    """The stored webhooks by id, each with its password (never answered), and their operations.

    :param identity: ``() -> (company_id, token's user_id)``, read at each write (the fake's knobs).
    :param on_delete: told the id of each webhook deleted, so that its pending deliveries are dropped.
    """

    def __init__(self, identity: Callable[[], tuple[int, int]], on_delete: Callable[[int], None]) -> None:
        self.hooks: dict[int, JsonDict] = {}
        self._identity = identity
        self._on_delete = on_delete
        self._last_id = 0

    def answer(self, hook: JsonDict) -> JsonDict:
        """A webhook as the API answers it: without its password."""
        return {**hook, "http_auth_password": None}

    def answers(self) -> Mapping[int, JsonDict]:
        """The webhooks by id as ``GET /v1/webhooks`` answers them (no password): a read-only copy."""
        return MappingProxyType({key: self.answer(hook) for key, hook in self.hooks.items()})

    def remove(self, webhook_id: int) -> None:
        """Delete a webhook (its pending deliveries with it).

        :raises KeyError: no such webhook.
        """
        del self.hooks[webhook_id]
        self._on_delete(webhook_id)

    # -- the operations ---------------------------------------------------------------------------------------

    def create(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, JsonDict]:
        try:
            hook = self._checked(body)
        except Refused as refused:
            return 400, {"status": "error", "success": False, "error": str(refused),
                         "errors": {refused.field: [refused.problem]}}
        self.hooks[hook["id"]] = hook
        return 201, {**_OK, "data": self.answer(hook)}

    def listing(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, JsonDict]:
        return 200, {**_OK, "data": [self.answer(hook) for hook in self.hooks.values()]}

    def delete(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, JsonDict]:
        try:
            self.remove(path_id(path))
        except KeyError:
            raise Refused("id", "Webhook not found", 404) from None
        return 200, dict(_OK)

    # -- helpers ----------------------------------------------------------------------------------------------

    def _checked(self, body: Any) -> JsonDict:
        if not isinstance(body, dict):
            raise Refused("body", "must be a JSON object")
        company_id, token_user = self._identity()
        url = _text(body, "subscription_url", required=True)
        try:
            parts = urlsplit(url)
            usable = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
        except ValueError:  # e.g. an unbalanced '[' in the host
            usable = False
        if not usable:
            raise Refused("subscription_url", "invalid or non-reachable URL: must be an http(s) URL with a host")
        action, target = _choice(body, "event_action", EVENT_ACTIONS), _choice(body, "event_object", EVENT_OBJECTS)
        name = _text(body, "name", required=True)
        if len(name) > _MAX_NAME:
            raise Refused("name", f"must be at most {_MAX_NAME} characters")
        version = body.get("version", "2.0")
        if version not in ("1.0", "2.0"):
            raise Refused("version", "must be '1.0' or '2.0'")
        user_id = body.get("user_id", token_user)
        if type(user_id) is not int or user_id < 1:
            raise Refused("user_id", "must be a positive integer")
        user, password = _text(body, "http_auth_user"), _text(body, "http_auth_password")
        if ":" in user:
            raise Refused("http_auth_user", "must not hold ':' (Basic credentials split there)")
        if sum(hook["user_id"] == user_id for hook in self.hooks.values()) >= MAX_PER_USER:
            raise Refused("user_id", f"has the most webhooks a user may have ({MAX_PER_USER})")
        self._last_id += 1
        return {
            "id": self._last_id, "company_id": company_id, "owner_id": token_user, "user_id": user_id,
            "event_action": action, "event_object": target, "subscription_url": url, "version": version,
            "is_active": 1, "add_time": iso_now(), "remove_time": None, "type": "general",
            "http_auth_user": user or None, "http_auth_password": password or None, "remove_reason": None,
            "last_delivery_time": None, "last_http_status": None, "admin_id": token_user, "name": name,
        }


def _text(body: JsonDict, field: str, *, required: bool = False) -> str:
    value = body.get(field)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise Refused(field, "is required: a non-empty string" if required else "must be a string or null")
    if len(value) > _MAX_TEXT or not value.isprintable():
        raise Refused(field, f"must be at most {_MAX_TEXT} printable characters")
    return value


def _choice(body: JsonDict, field: str, allowed: tuple[str, ...]) -> str:
    value = body.get(field)
    if not isinstance(value, str) or value not in allowed:
        raise Refused(field, f"must be one of {', '.join(allowed)}")
    return value


def me(company_id: int, user_id: int) -> JsonDict:
    """``GET /v1/users/me``'s answer for the token's user."""
    return {"success": True, "data": {
        "id": user_id, "name": "Fake User", "default_currency": "EUR", "locale": "en_US", "lang": 1,
        "email": "user@fake.example", "phone": None, "activated": True, "last_login": "2026-01-01 00:00:00",
        "created": "2025-01-01 00:00:00", "modified": None, "has_created_company": True,
        "access": [{"app": "global", "admin": True, "permission_set_id": "fake-global-admin"}],
        "active_flag": True, "timezone_name": "UTC", "timezone_offset": "+00:00", "role_id": 1, "icon_url": None,
        "is_you": True, "is_deleted": False, "company_id": company_id, "company_name": "Fake Company",
        "company_domain": "fake", "company_country": "EE", "company_industry": "IT Services",
        "language": {"language_code": "en", "country_code": "US"},
    }}
