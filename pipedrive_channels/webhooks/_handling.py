"""The handling of one event: the ``ignore_own`` check, the handler in a task of its own, its retries.

A handler that raises is retried with exponential backoff (``backoff``, doubled per attempt, at most
:data:`MAX_BACKOFF_SECONDS`) until ``attempts`` ran out; the :class:`Outcome` says how the event ended, and the
receiver records it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import attrs

from ..client import ChannelsClient
from ..errors import PipedriveError, ValidationError
from ._events import WebhookEvent, WebhookMeta
from ._router import Handler

MAX_BACKOFF_SECONDS = 60.0
"""The longest wait between two attempts of a raising handler (the waits double from ``backoff``)."""
CANCEL_WAIT_SECONDS = 1.0
"""How long a cancelled handler is waited for to end."""

_log = logging.getLogger("pipedrive_channels.webhooks")


class HandlerCancelledError(PipedriveError):
    """The handler itself raised ``CancelledError`` (not a stop): a failure, retried like any error."""


@attrs.frozen
class Outcome:
    """How one event ended after ``attempts`` attempts: handled, ``skipped`` (the bot's own), or ``failure``."""

    attempts: int
    skipped: bool = False
    failure: str | None = None
    """``"TypeName: message"`` of the last error, when every attempt raised."""


class OwnUser:
    """Who the bot is for ``ignore_own``: the token's user, read once from ``GET /v1/users/me``."""

    def __init__(self, client: ChannelsClient) -> None:
        self._client = client
        self._user_id: int | None = None
        self._lock = asyncio.Lock()

    def restart(self) -> None:
        """Make the lock anew, for a new start: an asyncio primitive belongs to the loop it was first used in."""
        self._lock = asyncio.Lock()

    async def made(self, meta: WebhookMeta) -> bool:
        """Whether the event was made through the API by the token's own user."""
        if meta.change_source != "api" or meta.user_id is None:
            return False
        return meta.user_id == await self._own_id()

    async def _own_id(self) -> int:
        """The token's user ID (a failure raises; the next event asks again)."""
        async with self._lock:
            if self._user_id is None:
                response = await self._client.request("GET", "/users/me")
                data: Any = response.data
                user_id = data.get("id") if isinstance(data, dict) else None
                if isinstance(user_id, bool) or not isinstance(user_id, int):
                    raise ValidationError("GET /users/me: data.id", "must be an integer")
                self._user_id = user_id
            return self._user_id


class Attempts:
    """How an event is handled: up to ``attempts`` times with backoff; the bot's own skipped when ``own``."""

    def __init__(self, *, attempts: int, backoff: float, own: OwnUser | None) -> None:
        self._attempts = attempts
        self._backoff = backoff
        self.own = own

    async def run(self, handler: Handler, event: WebhookEvent) -> Outcome:
        """Run ``handler`` on ``event`` until an attempt returns or none is left; a stop's cancellation goes on up."""
        meta = event.meta
        for attempt in range(1, self._attempts + 1):
            try:
                if self.own is not None and await self.own.made(meta):
                    _log.debug("webhook event %s (%s.%s): the bot's own change, skipped", meta.id, meta.entity,
                               meta.action)
                    return Outcome(attempt, skipped=True)
                await _call_handler(handler, event)
            except Exception as error:  # the handler's bug or outage: retried, then kept as failed, never a 5xx
                failure = error
            else:
                return Outcome(attempt)
            name = type(failure).__name__
            if attempt == self._attempts:
                _log.error("webhook event %s (%s.%s): the handler failed %d times, kept as failed: %s",
                           meta.id, meta.entity, meta.action, attempt, name, exc_info=failure)
                return Outcome(attempt, failure=f"{name}: {failure}")
            delay = min(self._backoff * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
            _log.warning("webhook event %s (%s.%s): the handler raised %s (attempt %d of %d), retried in %g s",
                         meta.id, meta.entity, meta.action, name, attempt, self._attempts, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: attempts >= 1")


async def _call_handler(handler: Handler, event: WebhookEvent) -> None:
    """Run the handler in a task of its own, so that its own cancellation (it awaited something cancelled) is
    told apart from the worker's (a stop, the loop's end): the first is a failure like any error
    (:class:`HandlerCancelledError`), the second cancels the handler too and goes on up."""
    task = asyncio.ensure_future(handler(event))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if task.cancelled():
            raise HandlerCancelledError("the handler was cancelled") from None
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_WAIT_SECONDS)  # bounded: a handler may ignore it
        raise
