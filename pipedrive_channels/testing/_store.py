"""What the fake holds for the Channels API (channels, their conversations' messages) and its generic collections.

Each operation maps a request that passed the credential and rate checks, ``(raw path, parsed JSON body, query)``,
to ``(status, JSON answer)``, or raises :class:`~._envelopes.Refused` (a 400 or 404 naming the field).

Channels and messages written are told to the webhooks, as entities of their own that only an ``event_object`` of
``*`` receives (Pipedrive's registry knows no such objects): ``channel`` (``entity_id`` its
``provider_channel_id``; create, change when added again with other fields, delete) and ``message`` (``entity_id``
the message's id; create, change when received again with other fields, and delete when its conversation is).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, Protocol
from urllib.parse import unquote

from ._costs import collection_cost
from ._deliveries import Changes, changed_fields
from ._envelopes import JsonDict, invalid, not_found
from ._validation import ADD_CHANNEL_ERROR, RECEIVE_ERROR, valid_channel, valid_message

Operation = Callable[[str, Any, Mapping[str, str]], tuple[int, JsonDict]]



class Owner(Protocol):
    """The knobs the store reads at each write: the fake's :attr:`~FakePipedrive.client_id` and ``company_id``."""

    client_id: str
    company_id: int


class Store:
    """The fake's data. The dicts are the fake's public :attr:`~FakePipedrive.channels` (and so on)."""

    def __init__(self, owner: Owner, changes: Changes) -> None:
        self._owner = owner
        self._changes = changes
        self.channels: dict[str, JsonDict] = {}
        self.messages: dict[tuple[str, str], dict[str, JsonDict]] = {}
        self.collections: dict[tuple[str, str], list[JsonDict]] = {}

    def put_channel(self, body: JsonDict) -> JsonDict:
        """Store a valid add-channel body; adding an id again renames it and keeps its ``id`` and ``created_at``."""
        provider_channel_id = body["provider_channel_id"]
        known = self.channels.get(provider_channel_id)
        old = known or {}
        channel = {
            "id": old.get("id") or str(uuid.uuid4()),
            "name": body["name"],
            "avatar_url": body.get("avatar_url"),
            "provider_channel_id": provider_channel_id,
            "marketplace_client_id": self._owner.client_id,
            "pd_company_id": self._owner.company_id,
            "pd_user_id": old.get("pd_user_id") or self._changes.origin.user_id,
            "created_at": old.get("created_at") or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            "provider_type": body.get("provider_type", "other"),
            "template_support": body.get("template_support", False),
        }
        self.channels[provider_channel_id] = channel
        if known is None:
            self._changes.changed("channel", "create", provider_channel_id, dict(channel), None)
        elif previous := changed_fields(known, channel):
            self._changes.changed("channel", "change", provider_channel_id, dict(channel), previous)
        return channel

    def put_checked_channel(
        self, provider_channel_id: str, name: str | None, avatar_url: str | None, provider_type: str, template: bool
    ) -> JsonDict:
        """:meth:`FakePipedrive.add_channel`: :meth:`put_channel`, or ``ValueError`` where the endpoint answers 400."""
        body: JsonDict = {
            "name": provider_channel_id if name is None else name,
            "provider_channel_id": provider_channel_id,
            "provider_type": provider_type,
            "template_support": template,
            **({} if avatar_url is None else {"avatar_url": avatar_url}),
        }
        if not valid_channel(body):
            raise ValueError(f"the add-channel endpoint would refuse this channel: {body!r}")
        return self.put_channel(body)

    # -- the Channels operations ------------------------------------------------------------------------

    def add_channel(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, JsonDict]:
        if not valid_channel(body):
            return 400, invalid(ADD_CHANNEL_ERROR, "INVALID_BODY")
        return 200, {"success": True, "data": self.put_channel(body)}

    def receive(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, JsonDict]:
        if not valid_message(body):
            return 400, invalid(RECEIVE_ERROR, "INVALID_RECEIVE_MESSAGE_PAYLOAD")
        if body["channel_id"] not in self.channels:
            return 404, not_found("Channel not found.")
        # Receiving an id again updates the message: that is how status changes are delivered.
        conversation = self.messages.setdefault((body["channel_id"], body["conversation_id"]), {})
        known = conversation.get(body["id"])
        conversation[body["id"]] = body
        if known is None:
            self._changes.changed("message", "create", body["id"], dict(body), None)
        elif previous := changed_fields(known, body):
            self._changes.changed("message", "change", body["id"], dict(body), previous)
        return 200, {"success": True, "data": body}

    def delete(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, JsonDict]:
        segments = [unquote(s) for s in path.partition("/channels/")[2].split("/")]
        if len(segments) == 1:
            channel_id = segments[0]
            channel = self.channels.pop(channel_id, None)
            if channel is None:
                return 404, not_found("Channel not found.")
            for key in [key for key in self.messages if key[0] == channel_id]:
                del self.messages[key]
            self._changes.changed("channel", "delete", channel_id, None, channel)
            return 200, {"success": True}
        if len(segments) == 3 and segments[1] == "conversations":
            key = (segments[0], segments[2])
            if key[0] not in self.channels:
                return 404, not_found("Channel not found.")
            messages = self.messages.pop(key, None)
            if messages is None:
                return 404, not_found("Conversation not found.")
            for message_id, message in messages.items():
                self._changes.changed("message", "delete", message_id, None, message)
            return 200, {"success": True}
        return 404, not_found("Not found")

    # -- the generic collections (FakePipedrive.add_collection) ------------------------------------------

    def collection_get(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, JsonDict]:
        version, relative = _version_of(path)
        items = self.collections.get((version, relative))
        if items is None:
            parent, _, item_id = relative.rpartition("/")
            for item in self.collections.get((version, parent), []):
                if str(item.get("id")) == unquote(item_id):
                    return 200, {"success": True, "data": item}
            return 404, not_found("Not found")
        try:
            limit = int(query.get("limit", "100"))
            start = int(query.get("start", "0")) if version == "v1" else int(query.get("cursor", "c0")[1:])
        except ValueError:
            return 400, invalid("Bad pagination parameter", "INVALID_PARAMETER")
        page, more = items[start : start + limit], start + limit < len(items)
        if version == "v1":
            pagination = {"start": start, "limit": limit, "more_items_in_collection": more}
            additional: JsonDict = {"pagination": {**pagination, "next_start": start + limit} if more else pagination}
        else:
            additional = {"next_cursor": f"c{start + limit}" if more else None}
        return 200, {"success": True, "data": page, "additional_data": additional}

    def collection_cost(self, method: str, path: str) -> int:
        """What a collection request costs: a list, one of its items, or a write (see ``_costs``)."""
        version, relative = _version_of(path)
        return collection_cost(version, method, (version, relative) in self.collections)

    def collection_post(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, JsonDict]:
        version, relative = _version_of(path)
        items = self.collections.get((version, relative))
        if items is None:
            return 404, not_found("Not found")
        if not isinstance(body, dict):
            return 400, invalid("Expected a JSON object", "INVALID_BODY")
        item = {**body, "id": len(items) + 1}
        items.append(item)
        return 200, {"success": True, "data": item}


def _version_of(path: str) -> tuple[str, str]:
    """("v2", "/deals") for "/api/v2/deals"; ("v1", "/deals") for "/v1/deals" and "/api/v1/deals"."""
    for prefix, version in (("/api/v2", "v2"), ("/api/v1", "v1"), ("/v1", "v1")):
        if path.startswith(prefix + "/"):
            return version, path[len(prefix) :]
    return "v1", path
