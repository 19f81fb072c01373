"""The webhooks v2 payload as values, and the router: what a handler can rely on whatever Pipedrive sends."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from webhook_deliveries import payload

from pipedrive_channels import PipedriveError, ValidationError
from pipedrive_channels.webhooks import Router, WebhookEvent, WebhookMeta, WebhookPayloadError


def test_a_delivery_reads_as_typed_fields() -> None:
    event = WebhookEvent.from_json(payload("e-1", merged_to_id="8", merged_from_id=9, change_source="api"))
    meta = event.meta
    assert (meta.id, meta.action, meta.entity, meta.entity_id) == ("e-1", "create", "note", "42")
    assert (meta.company_id, meta.user_id, meta.attempt, meta.merged_to_id, meta.merged_from_id) == (7, 99, 1, 8, 9)
    assert (meta.correlation_id, meta.type, meta.version, meta.webhook_id) == ("c-1", "general", "2.0", "5")
    assert meta.change_source == "api" and meta.is_bulk_edit is False
    assert meta.time == datetime(2026, 12, 1, 10, 0, 0, 123000, tzinfo=timezone.utc)
    assert event.data == {"id": 42, "content": "Reply: thanks", "person_id": 3} and event.previous is None


def test_unknown_fields_are_kept_and_unknown_values_accepted() -> None:
    event = WebhookEvent.from_json(payload(entity="deal_installment", action="archive", brand_new={"x": 1}))
    assert (event.meta.entity, event.meta.action) == ("deal_installment", "archive")
    assert event.meta.extra == {"webhook_owner_id": "99", "host": "acme.pipedrive.com",
                                "permitted_user_ids": ["99"], "brand_new": {"x": 1}}


def test_only_id_action_and_entity_are_required() -> None:
    meta = WebhookEvent.from_json({"meta": {"id": "e", "action": "delete", "entity": "person"}}).meta
    assert meta == WebhookMeta(id="e", action="delete", entity="person")
    assert meta.time is None and meta.extra == {}


def test_a_numeric_id_is_kept_as_its_decimal_string() -> None:
    meta = WebhookEvent.from_json(payload(123, entity_id=5, webhook_id=6)).meta
    assert (meta.id, meta.entity_id, meta.webhook_id) == ("123", "5", "6")


@pytest.mark.parametrize("timestamp", ["yesterday", "2026-13-01T00:00:00Z", ""])
def test_an_unparsable_timestamp_is_kept_and_has_no_time(timestamp: str) -> None:
    meta = WebhookEvent.from_json(payload(timestamp=timestamp)).meta
    assert meta.timestamp == timestamp and meta.time is None


def test_a_timestamp_with_an_offset_is_kept_aware() -> None:
    meta = WebhookEvent.from_json(payload(timestamp="2026-12-01T12:00:00+02:00")).meta
    assert meta.time is not None and meta.time.astimezone(timezone.utc).hour == 10


@pytest.mark.parametrize(("body", "field"), [
    ([payload()], "body"),
    ("text", "body"),
    (None, "body"),
    ({"data": {}}, "meta"),
    ({"meta": None}, "meta"),
    ({"meta": []}, "meta"),
    ({"meta": {"action": "create", "entity": "note"}}, "meta.id"),
    ({"meta": {"id": "", "action": "create", "entity": "note"}}, "meta.id"),
    ({"meta": {"id": "e", "entity": "note"}}, "meta.action"),
    ({"meta": {"id": "e", "action": "create"}}, "meta.entity"),
    (payload(id=True), "meta.id"),
    (payload(id=["e"]), "meta.id"),
    (payload(id="x" * 257), "meta.id"),
    (payload(action=1), "meta.action"),
    (payload(user_id="ninety"), "meta.user_id"),
    (payload(user_id=-1), "meta.user_id"),
    (payload(user_id="²"), "meta.user_id"),
    (payload(company_id=1.5), "meta.company_id"),
    (payload(attempt=True), "meta.attempt"),
    (payload(is_bulk_edit="no"), "meta.is_bulk_edit"),
    (payload(timestamp=1700000000), "meta.timestamp"),
    (payload(change_source=["api"]), "meta.change_source"),
    (payload(merged_to_id={"id": 1}), "meta.merged_to_id"),
    ({**payload(), "data": []}, "data"),
    ({**payload(), "previous": "name"}, "previous"),
])
def test_a_wrong_shape_names_the_field(body: Any, field: str) -> None:
    with pytest.raises(WebhookPayloadError) as raised:
        WebhookEvent.from_json(body)
    assert raised.value.field == field
    assert isinstance(raised.value, ValidationError) and isinstance(raised.value, PipedriveError)


def test_the_event_repr_shows_the_meta_but_not_the_data() -> None:
    text = repr(WebhookEvent.from_json(payload("e-7")))
    assert "e-7" in text and "Reply: thanks" not in text


def test_events_compare_by_value_and_hash_by_meta() -> None:
    event = WebhookEvent.from_json(payload("e-1"))
    assert event == WebhookEvent.from_json(payload("e-1")) and event != WebhookEvent.from_json(payload("e-2"))
    assert len({event, WebhookEvent.from_json(payload("e-1"))}) == 1


# -- the router -----------------------------------------------------------------------------------------------


def _event(entity: str, action: str) -> WebhookEvent:
    return WebhookEvent.from_json(payload(entity=entity, action=action))


async def test_the_most_specific_route_wins() -> None:
    router = Router()
    ran: list[str] = []

    def route(name: str, entity: str = "*", action: str = "*") -> None:
        @router.on(entity, action)
        async def handler(event: WebhookEvent) -> None:
            ran.append(name)

    route("note.create", "note", "create")
    route("note.*", "note")
    route("*.delete", action="delete")
    route("*.*")
    for entity, action in [("note", "create"), ("note", "delete"), ("deal", "delete"), ("deal", "change")]:
        await router(_event(entity, action))
    assert ran == ["note.create", "note.*", "*.delete", "*.*"]


async def test_the_fallback_takes_what_no_route_matches_and_else_nothing_runs() -> None:
    router = Router()
    ran: list[str] = []

    @router.on("note", "create")
    async def note_added(event: WebhookEvent) -> None:
        ran.append("note")

    await router(_event("person", "change"))  # no route, no fallback: nothing, no error
    assert ran == [] and router.route(_event("person", "change")) is None

    @router.fallback
    async def anything_else(event: WebhookEvent) -> None:
        ran.append(f"fallback {event.meta.entity}")

    await router(_event("person", "change"))
    await router(_event("note", "create"))
    assert ran == ["fallback person", "note"]
    assert router.route(_event("note", "create")) is note_added


def test_a_route_has_one_handler_and_a_router_one_fallback() -> None:
    router = Router()

    async def handler(event: WebhookEvent) -> None:
        pass

    router.on("note", "create")(handler)
    with pytest.raises(ValidationError, match=r"note\.create already has a handler"):
        router.on("note", "create")
    router.fallback(handler)
    with pytest.raises(ValidationError) as raised:
        router.fallback(handler)
    assert raised.value.field == "fallback"
    for entity, action in [("", "create"), ("note", ""), (None, "create")]:
        with pytest.raises(ValidationError):
            router.on(entity, action)  # type: ignore[arg-type]
    assert repr(router) == "Router([note.create])"


async def test_a_handler_error_reaches_the_caller() -> None:
    router = Router()

    @router.on("note")
    async def broken(event: WebhookEvent) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await router(_event("note", "create"))
