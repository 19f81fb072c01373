"""Subscriptions: make sure Pipedrive sends a bot the webhooks v2 it needs (``GET`` and ``POST /v1/webhooks``).

:func:`ensure_webhook` is idempotent: call it at every start. It lists the company's webhooks and creates the one
missing, through the client's budget and retry policy (``GET /v1/webhooks`` costs 10 tokens, ``POST`` 10, the
``DELETE`` of a stale one 6). The webhook's password is sent once, in the ``POST``: Pipedrive's list never shows it,
and no :class:`Webhook`, log line or exception of this module holds it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs

from ..errors import ApiError, NotFoundError, ValidationError

if TYPE_CHECKING:
    from ..client import ChannelsClient

__all__ = ["Webhook", "ensure_webhook"]

_log = logging.getLogger("pipedrive_channels")

EVENT_ACTIONS = ("create", "change", "delete", "*")
VERSIONS = ("1.0", "2.0")
_MAX_NAME = 255  # the spec's maxLength
_MAX_TEXT = 2048  # a URL, an object or a credential past this is no webhook's
_SCRUBBED = "<redacted>"


@attrs.frozen
class Webhook:
    """A webhook as Pipedrive lists it (``GET /v1/webhooks``), without its password, which Pipedrive never shows.

    :param active: ``is_active`` is 1 and the webhook has no ``remove_time``; a webhook Pipedrive deactivated or
        removed delivers nothing.
    """

    id: int
    subscription_url: str
    event_action: str
    event_object: str
    version: str | None = None
    name: str | None = None
    http_auth_user: str | None = None
    user_id: int | None = None
    owner_id: int | None = None
    active: bool = True

    @classmethod
    def from_api(cls, item: object, where: str = "data") -> Webhook:
        """Read one webhook of an answer; a field of the wrong shape is an :class:`ApiError` naming it (``where``
        is how the answer reached it, e.g. ``data[3]``)."""
        if not isinstance(item, Mapping):
            raise _odd(where, f"must be an object, got {type(item).__name__}")
        hook_id = item.get("id")
        if type(hook_id) is not int or hook_id < 1:
            raise _odd(f"{where}.id", "must be a positive integer")
        return cls(
            id=hook_id,
            subscription_url=_field(item, where, "subscription_url", str, required=True),
            event_action=_field(item, where, "event_action", str, required=True),
            event_object=_field(item, where, "event_object", str, required=True),
            version=_field(item, where, "version", str),
            name=_field(item, where, "name", str),
            http_auth_user=_field(item, where, "http_auth_user", str),
            user_id=_field(item, where, "user_id", int),
            owner_id=_field(item, where, "owner_id", int),
            active=item.get("is_active", 1) in (1, True) and item.get("remove_time") is None,
        )


async def ensure_webhook(
    client: ChannelsClient,
    url: str,
    *,
    event_action: str,
    event_object: str,
    username: str,
    password: str,
    name: str | None = None,
    version: str = "2.0",
    user_id: int | None = None,
) -> Webhook:
    """Return the company's webhook sending ``event_action``.``event_object`` events to ``url``, creating it if
    missing.

    A listed webhook matches on ``subscription_url``, ``event_action``, ``event_object`` and ``version`` (and
    ``user_id`` when given), and must be active. A match with the Basic user ``username`` is returned as it is: a
    second call sends no ``POST``. A webhook Pipedrive deleted (after 3 days of failed deliveries) or deactivated
    is created again. Matches with another Basic user are stale credentials: the new webhook is created first, then
    they are deleted, so deliveries never stop. The list never shows passwords, so a changed ``password`` alone
    cannot be seen: rotate credentials by changing ``username`` too (or delete the webhook first).

    Not atomic: two processes calling it at once for a new webhook may both create it. Call it from one place.

    :param url: the bot's public http(s) URL (Pipedrive refuses self-signed certificates and never follows
        redirects).
    :param event_action: ``create``, ``change``, ``delete`` or ``*``.
    :param event_object: ``note``, ``person``, ``deal``, ... or ``*`` (not checked against a list: Pipedrive adds
        objects).
    :param username: the Basic user Pipedrive sends with every delivery (no ``:``).
    :param password: the Basic password; sent once, in the ``POST``, and kept nowhere.
    :param name: the webhook's name in Pipedrive's UI; by default ``"{event_action}.{event_object} to
        {host}{path}"`` of ``url`` (its query left out), cut to 255 characters.
    :param user_id: the user the webhook is authorized with (it only hears of what that user may see); by default
        the token's user.
    :raises ValidationError: a parameter is unusable; nothing was sent.
    :raises ApiError: Pipedrive refused a request, or answered something that is no webhook (naming the field).
    """
    _check_url(url)
    _check_choice("event_action", event_action, EVENT_ACTIONS)
    _check_choice("version", version, VERSIONS)
    _check_text("event_object", event_object, max_length=64)
    _check_text("username", username)
    if ":" in username:
        raise ValidationError("username", "must not hold ':' (Basic credentials split there)")
    _check_text("password", password, shown=False)
    if name is None:
        name = _default_name(url, event_action, event_object)
    _check_text("name", name, max_length=_MAX_NAME)
    if user_id is not None and (type(user_id) is not int or user_id < 1):
        raise ValidationError("user_id", "must be a positive integer")

    matches = [
        hook for hook in await _listed(client)
        if hook.active and (hook.subscription_url, hook.event_action, hook.event_object, hook.version)
        == (url, event_action, event_object, version) and user_id in (None, hook.user_id)
    ]
    for hook in matches:
        if hook.http_auth_user == username:
            return hook
    body: dict[str, Any] = {
        "subscription_url": url, "event_action": event_action, "event_object": event_object, "version": version,
        "name": name, "http_auth_user": username, "http_auth_password": password,
        **({} if user_id is None else {"user_id": user_id}),
    }
    try:
        response = await client.request("POST", "/webhooks", json=body)
    except ApiError as error:
        raise _scrubbed(error, password) from None
    created = Webhook.from_api(response.data)
    _log.info("created webhook %d (%s.%s)", created.id, event_action, event_object)
    for stale in matches:  # the same subscription with other credentials: replaced, not kept beside the new one
        try:
            await client.request("DELETE", client.path("/webhooks/{id}", id=stale.id))
        except NotFoundError:  # gone already
            continue
        _log.info("deleted webhook %d (stale credentials, replaced by %d)", stale.id, created.id)
    return created


async def _listed(client: ChannelsClient) -> list[Webhook]:
    """The company's webhooks (``GET /v1/webhooks``, 10 tokens), each as a :class:`Webhook`.

    :raises ApiError: the answer's ``data`` is no list of webhooks (naming the field).
    """
    response = await client.request("GET", "/webhooks")
    if not isinstance(response.data, list):
        raise _odd("data", f"must be a list of webhooks, got {type(response.data).__name__}", response.status)
    return [Webhook.from_api(item, f"data[{index}]") for index, item in enumerate(response.data)]


# -- checks -------------------------------------------------------------------------------------------------


def _check_text(field: str, value: object, *, max_length: int = _MAX_TEXT, shown: bool = True) -> None:
    """A non-empty printable string of at most ``max_length`` characters; a secret (``shown=False``) is never
    quoted in the error."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "must be a non-empty string")
    if len(value) > max_length:
        raise ValidationError(field, f"must be at most {max_length} characters, got {len(value)}")
    if not value.isprintable():
        raise ValidationError(field, "must not hold control characters" + ("" if shown else " (value not shown)"))


def _check_choice(field: str, value: object, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValidationError(field, f"must be one of {', '.join(allowed)}, got {value!r:.60}")


def _check_url(url: str) -> None:
    _check_text("url", url)
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. an unbalanced '[' in the host
        raise ValidationError("url", f"must be an http(s) URL with a host, got {url!r:.80}") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise ValidationError("url", f"must be an http(s) URL with a host, got {url!r:.80}")
    if parts.username is not None or parts.password is not None:
        raise ValidationError("url", "must not hold credentials (use username= and password=)")


def _default_name(url: str, event_action: str, event_object: str) -> str:
    parts = urlsplit(url)
    return f"{event_action}.{event_object} to {parts.hostname}{parts.path}"[:_MAX_NAME]


def _field(item: Mapping[str, Any], where: str, key: str, kind: type, *, required: bool = False) -> Any:
    value = item.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) or (kind is str and not value and required):
        raise _odd(f"{where}.{key}", f"must be a{' non-empty' if required else ''} {kind.__name__}")
    return value


def _odd(field: str, problem: str, status: int = 200) -> ApiError:
    """An answer that is no webhook list or webhook; its body is left out (it may hold the password)."""
    return ApiError(status, f"unexpected answer: {field}: {problem}")


def _scrubbed(error: ApiError, password: str) -> ApiError:
    """``error`` again, the password replaced wherever the answer echoed it (its text, body and headers)."""
    scrubbed = type(error)(
        error.status, _scrub(error.error, password), _scrub(error.error_info, password),
        _scrub(error.code, password), _scrub(error.body, password),
        {key: _scrub(value, password) for key, value in error.headers.items()},
    )
    scrubbed.attempts, scrubbed.elapsed = error.attempts, error.elapsed
    return scrubbed


def _scrub(value: Any, password: str) -> Any:
    if isinstance(value, str):
        return value.replace(password, _SCRUBBED)
    if isinstance(value, list):
        return [_scrub(item, password) for item in value]
    if isinstance(value, dict):
        return {_scrub(key, password): _scrub(item, password) for key, item in value.items()}
    return value
