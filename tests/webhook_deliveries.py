"""What the webhook receiver's tests share: Pipedrive's deliveries, built one way, and the app under test served
on 127.0.0.1."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from pipedrive_channels.webhooks import RECEIVER, Handler, WebhookReceiver, create_webhook_app

USER = "pipedrive-hooks"
PASSWORD = "hook-password-9f3b27"
"""The Basic credentials the app under test expects (the tests look for the password in logs and reprs)."""
PATH = "/pipedrive/webhooks"


def payload(event_id: str = "e-1", entity: str = "note", action: str = "create", **meta: Any) -> dict[str, Any]:
    """A webhooks v2 delivery as Pipedrive sends it (IDs as strings), with ``meta`` fields changed or added."""
    return {
        "meta": {
            "action": action, "entity": entity, "entity_id": "42", "id": event_id, "company_id": "7",
            "user_id": "99", "correlation_id": "c-1", "timestamp": "2026-12-01T10:00:00.123Z", "type": "general",
            "version": "2.0", "webhook_id": "5", "webhook_owner_id": "99", "change_source": "app", "attempt": 1,
            "is_bulk_edit": False, "host": "acme.pipedrive.com", "permitted_user_ids": ["99"], **meta,
        },
        "data": {"id": 42, "content": "Reply: thanks", "person_id": 3},
        "previous": None,
    }


def basic(user: str = USER, password: str = PASSWORD) -> str:
    """An ``Authorization`` header carrying these Basic credentials."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@asynccontextmanager
async def serve(handler: Handler, **options: Any) -> AsyncIterator[tuple[TestClient[Any, Any], WebhookReceiver]]:
    """The app (``create_webhook_app(handler, **options)``) started on 127.0.0.1, and its receiver; stopped at
    the end (its clean-up runs)."""
    app = create_webhook_app(handler, username=USER, password=PASSWORD, **options)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client, app[RECEIVER]


async def deliver(client: TestClient[Any, Any], body: Any, *, auth: str | None = None, raw: Any = None,
                  path: str = PATH) -> tuple[int, Any]:
    """POST a delivery (``body`` as JSON, or ``raw``: bytes or an async iterator of them, sent chunked) with the
    right credentials unless ``auth`` says otherwise (``""``: no header); the status and the decoded JSON answer."""
    headers = {"Content-Type": "application/json"}
    if auth != "":
        headers["Authorization"] = basic() if auth is None else auth
    data = raw if raw is not None else json.dumps(body).encode()
    async with client.post(path, data=data, headers=headers) as response:
        return response.status, await response.json(content_type=None)
