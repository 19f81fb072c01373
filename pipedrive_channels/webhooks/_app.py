"""``create_webhook_app``: the aiohttp application Pipedrive delivers webhooks v2 to.

One route, ``POST path``. Each delivery's Basic credentials are checked in constant time (401 otherwise, before
the body is read), the body is read within ``max_body_bytes`` (413 past it, refused from ``Content-Length``
without reading) and parsed (400 with the reason), then recorded and answered 200 at once: the handler runs
afterwards (:class:`~._receiver.WebhookReceiver`), so whatever it does, the answer comes well within Pipedrive's
10 s, and a handler that raises never turns into a 5xx (each first-attempt failure counts toward a ban).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import os
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import BadHttpMessage

from .._journal import CheckpointError
from ..client import ChannelsClient
from ..errors import ValidationError
from ._events import WebhookEvent, WebhookPayloadError
from ._receiver import Acceptance, WebhookReceiver
from ._router import Handler

__all__ = ["BODY_TIMEOUT_SECONDS", "DEFAULT_PATH", "RECEIVER", "create_webhook_app"]

DEFAULT_PATH = "/pipedrive/webhooks"
"""Where the app takes deliveries unless told otherwise."""
BODY_TIMEOUT_SECONDS = 10.0
"""How long a delivery's body may take to arrive (408 past it): Pipedrive itself gives up after 10 s."""
RECEIVER = web.AppKey("pipedrive_channels.webhooks.receiver", WebhookReceiver)
"""``app[RECEIVER]`` is the app's :class:`WebhookReceiver`: its stats, failed events, ``retry_failed()``."""

_log = logging.getLogger("pipedrive_channels.webhooks")
_REALM = {"WWW-Authenticate": 'Basic realm="pipedrive-webhooks", charset="UTF-8"'}


class _BasicCredentials:
    """The user and password deliveries must carry; never shown (its repr hides both)."""

    __slots__ = ("_password", "_user")

    def __init__(self, username: str, password: str) -> None:
        self._user = username.encode()
        self._password = password.encode()

    def __repr__(self) -> str:
        return "_BasicCredentials(<hidden>)"

    def match(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries them; takes the same time whatever is wrong with it."""
        user, password, well_formed = b"", b"", False
        scheme, _, encoded = (header or "").partition(" ")
        if scheme.lower() == "basic":
            try:
                user, colon, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
                well_formed = bool(colon)
            except (binascii.Error, ValueError):  # not base64, or not ASCII
                pass
        # Both comparisons always run, even on a missing or malformed header, so timing tells nothing.
        same_user = hmac.compare_digest(user, self._user)
        same_password = hmac.compare_digest(password, self._password)
        return well_formed and same_user and same_password


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _answer(status: int, reason: str | None = None, headers: dict[str, str] | None = None,
            **fields: Any) -> web.Response:
    body: dict[str, Any] = {"success": reason is None, **fields}
    if reason is not None:
        body["error"] = reason
    return web.json_response(body, status=status, headers=headers)


async def _read_body(request: web.Request, cap: int) -> bytes:
    """The body, at most ``cap`` bytes (:class:`_Refused` 413 past it, without reading the rest)."""
    if request.content_length is not None and request.content_length > cap:
        raise _Refused(413, f"the body is larger than {cap} bytes")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > cap:
            raise _Refused(413, f"the body is larger than {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes) -> tuple[WebhookEvent, str]:
    """The event and the body's text (journalled as received); :class:`_Refused` 400 naming what is wrong."""
    try:
        text = body.decode("utf-8")
        payload = json.loads(text)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _Refused(400, f"the body is not JSON ({type(error).__name__})") from None
    try:
        return WebhookEvent.from_json(payload), text
    except WebhookPayloadError as error:
        raise _Refused(400, str(error)) from None


class _Deliveries:
    """The route's handler: check, read, record, answer."""

    def __init__(self, receiver: WebhookReceiver, credentials: _BasicCredentials, max_body_bytes: int) -> None:
        self._receiver = receiver
        self._credentials = credentials
        self._max_body_bytes = max_body_bytes

    def __repr__(self) -> str:
        return f"_Deliveries({self._receiver!r})"

    async def handle(self, request: web.Request) -> web.Response:
        """Answer one delivery."""
        if not self._credentials.match(request.headers.get(hdrs.AUTHORIZATION)):
            _log.warning("webhook delivery from %s refused: wrong or missing credentials", request.remote)
            return _answer(401, "wrong or missing credentials", _REALM)
        try:
            body = await asyncio.wait_for(_read_body(request, self._max_body_bytes), BODY_TIMEOUT_SECONDS)
            event, text = _parse(body)
        except _Refused as refused:
            _log.warning("webhook delivery refused (%d): %s", refused.status, refused.reason)
            return _answer(refused.status, refused.reason)
        except asyncio.TimeoutError:
            return _answer(408, f"the body was not received within {BODY_TIMEOUT_SECONDS:g} s")
        except (BadHttpMessage, ValueError) as error:  # a malformed chunked body, say
            return _answer(400, f"malformed body: {type(error).__name__}")
        try:
            outcome = self._receiver.accept(event, text)
        except CheckpointError as error:
            _log.error("webhook event %s not recorded, answered 503 (Pipedrive retries): %s", event.meta.id, error)
            return _answer(503, "the event cannot be recorded now")
        if outcome is Acceptance.FULL:
            _log.warning("webhook event %s refused with 503: the queue is full and there is no journal",
                         event.meta.id)
            return _answer(503, "the queue is full; retry later")
        if outcome is Acceptance.STOPPED:
            return _answer(503, "the receiver is not running; retry later")
        return _answer(200, duplicate=outcome is Acceptance.DUPLICATE)


def create_webhook_app(
    handler: Handler,
    *,
    username: str,
    password: str,
    journal: str | os.PathLike[str] | None = None,
    path: str = DEFAULT_PATH,
    concurrency: int = 8,
    max_body_bytes: int = 1 << 20,
    queue_size: int = 1000,
    ignore_own: bool = False,
    client: ChannelsClient | None = None,
    attempts: int = 4,
    backoff: float = 1.0,
) -> web.Application:
    """An aiohttp application taking Pipedrive's webhooks v2 deliveries at ``POST path`` and handling each event
    once, after answering.

    :param handler: an async callable taking a :class:`WebhookEvent` (a :class:`Router`, say).
    :param username: the Basic user name given when the webhook was created (``http_auth_user``).
    :param password: its password (``http_auth_password``); never logged nor shown.
    :param journal: a SQLite file keeping each event from before its 200 until handled: events acknowledged
        but not handled (a crash, a stop) are handled at the next start, and duplicates are known for
        :data:`~._store.JOURNAL_RETENTION_SECONDS`. Without one, the last :data:`~._store.RECENT_IDS` IDs are
        remembered in memory, and queued events are lost at a stop. One app at a time may use a journal.
    :param path: the route's path.
    :param concurrency: how many handlers run at once.
    :param max_body_bytes: the largest body taken (413 past it).
    :param queue_size: how many events may wait for a worker in memory. Past it, with a journal, events are still
        acknowledged (read back from the journal later); without one they are refused with 503 (Pipedrive retries
        after 3, 30 and 150 s).
    :param ignore_own: skip (acknowledge, count, not handle) the events the token's own user made through the
        API (``meta.change_source == "api"``), so that a bot's own writes do not loop back to it.
    :param client: reads the token's user once, from ``GET /v1/users/me``, through its budget; required with
        ``ignore_own``.
    :param attempts: how many times a raising handler is run in all before the event is kept as failed.
    :param backoff: seconds before the second attempt, doubled for each next one (at most
        :data:`~._receiver.MAX_BACKOFF_SECONDS`).
    :raises ValidationError: a parameter is out of range, or ``ignore_own`` is given without ``client``.

    ``app[RECEIVER]`` is its :class:`WebhookReceiver`. The journal is opened at the app's start-up and closed at
    its clean-up, after the workers stopped (:meth:`WebhookReceiver.stop`).
    """
    for name, value in (("username", username), ("password", password)):
        if not isinstance(value, str) or not value:
            raise ValidationError(name, "must be a non-empty string")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValidationError("path", f"must start with '/', got {path!r}")
    if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise ValidationError("max_body_bytes", f"must be a positive integer, got {max_body_bytes!r}")
    receiver = WebhookReceiver(handler, journal=journal, concurrency=concurrency, queue_size=queue_size,
                               ignore_own=ignore_own, client=client, attempts=attempts, backoff=backoff)
    app = web.Application(client_max_size=max_body_bytes)
    app[RECEIVER] = receiver
    app.router.add_post(path, _Deliveries(receiver, _BasicCredentials(username, password), max_body_bytes).handle)

    async def start(_: web.Application) -> None:
        await receiver.start()

    async def stop(_: web.Application) -> None:
        await receiver.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app
