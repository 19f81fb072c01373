"""Pipedrive -> your bot: a typed, durable receiver for Pipedrive's webhooks v2.

Pipedrive delivers each change (a note added, a deal moved, a person merged) to a webhook's URL with the Basic
credentials given when it was created. :func:`create_webhook_app` serves that URL: it checks the credentials,
records the event (durably, with a journal), answers 200 at once and runs the handler afterwards, each event
once::

    router = Router()

    @router.on("note", "create")
    async def note_added(event: WebhookEvent) -> None:
        print(event.meta.entity_id, event.data)

    app = create_webhook_app(router, username=USER, password=PASSWORD, journal="webhooks.sqlite")
    web.run_app(app, port=8080)

``app[RECEIVER]`` shows what the receiver did (``stats``) and what failed (``failed()``, ``retry_failed()``).
"""

from ._app import BODY_TIMEOUT_SECONDS, DEFAULT_PATH, RECEIVER, create_webhook_app
from ._events import MAX_ID_LENGTH, WebhookEvent, WebhookMeta, WebhookPayloadError
from ._receiver import (
    MAX_BACKOFF_SECONDS,
    SHUTDOWN_GRACE_SECONDS,
    Acceptance,
    HandlerCancelledError,
    WebhookReceiver,
    WebhookStats,
)
from ._router import ANY, Handler, Router
from ._store import JOURNAL_RETENTION_SECONDS, MAX_FAILED_IN_MEMORY, RECENT_IDS, FailedEvent
from ._subscriptions import Webhook, ensure_webhook

__all__ = [
    "ANY",
    "BODY_TIMEOUT_SECONDS",
    "DEFAULT_PATH",
    "JOURNAL_RETENTION_SECONDS",
    "MAX_BACKOFF_SECONDS",
    "MAX_FAILED_IN_MEMORY",
    "MAX_ID_LENGTH",
    "RECEIVER",
    "RECENT_IDS",
    "SHUTDOWN_GRACE_SECONDS",
    "Acceptance",
    "FailedEvent",
    "Handler",
    "HandlerCancelledError",
    "Router",
    "Webhook",
    "WebhookEvent",
    "WebhookMeta",
    "WebhookPayloadError",
    "WebhookReceiver",
    "WebhookStats",
    "create_webhook_app",
    "ensure_webhook",
]
