"""Models: validation before sending, the wire format, and round-trips through the converter."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from pipedrive_channels import Attachment, Channel, Message, MessageStatus, ProviderType, ValidationError
from pipedrive_channels.extension.models import ExtensionMessage
from pipedrive_channels.models import NewChannel, converter, parse_datetime

UTC = timezone.utc
CREATED = datetime(2022, 3, 1, 9, 58, 35, tzinfo=timezone(timedelta(hours=2)))
ATTACHMENT = Attachment(id="a-1", type="image/png", url="https://h.example/a.png")


def make_message(**changes: object) -> Message:
    fields: dict[str, object] = {
        "id": "m-1",
        "channel_id": "ch-1",
        "sender_id": "u-1",
        "conversation_id": "c-1",
        "message": "hello",
        "status": MessageStatus.SENT,
        "created_at": CREATED,
    }
    fields.update(changes)
    return Message(**fields)  # type: ignore[arg-type]


def test_message_wire_format_is_utc_minutes_and_always_has_attachments() -> None:
    assert converter.unstructure(make_message()) == {
        "id": "m-1",
        "channel_id": "ch-1",
        "sender_id": "u-1",
        "conversation_id": "c-1",
        "message": "hello",
        "status": "sent",
        "created_at": "2022-03-01 07:58",
        "attachments": [],
    }


def test_message_with_every_field_round_trips() -> None:
    attachment = Attachment(
        id="a-1", type="image/png", url="https://x.example/a.png", name="a.png", size=600,
        preview_url="https://x.example/a.preview.png", link_expires=True,
    )
    message = make_message(
        created_at=datetime(2022, 3, 1, 7, 58, tzinfo=UTC),
        reply_by=datetime(2022, 3, 2, 7, 58, tzinfo=UTC),
        conversation_link="https://provider.example/c/1",
        attachments=[attachment],
        status="read",
    )
    body = converter.unstructure(message)
    assert body["reply_by"] == "2022-03-02 07:58"
    assert body["attachments"] == [
        {
            "id": "a-1", "type": "image/png", "url": "https://x.example/a.png", "name": "a.png", "size": 600,
            "preview_url": "https://x.example/a.preview.png", "link_expires": True,
        }
    ]
    assert converter.structure(body, Message) == message


def test_attachment_optional_fields_are_sent_as_null() -> None:
    body = converter.unstructure(Attachment(id="a", type="text/plain", url="http://h.example/f"))
    assert body == {"id": "a", "type": "text/plain", "url": "http://h.example/f", "name": None, "size": None,
                    "preview_url": None}


@pytest.mark.parametrize(
    "text",
    ["2022-03-01 07:58", "2022-03-01 07:58:00", "2022-03-01T07:58:00Z", "2022-03-01T07:58:00.000Z",
     "2022-03-01T09:58:00+02:00"],
)
def test_datetimes_parse_from_the_spec_format_and_iso_8601(text: str) -> None:
    assert parse_datetime(text) == datetime(2022, 3, 1, 7, 58, tzinfo=UTC)


def test_answer_parsing_ignores_unknown_fields_and_defaults_missing_optional_ones() -> None:
    data = {"id": "e2", "name": "My Channel", "provider_channel_id": "p-1", "created_at": "2022-03-01 00:00:00",
            "provider_type": "whatsapp", "something_new": [1, 2]}
    channel = converter.structure(data, Channel)
    assert channel.provider_type is ProviderType.WHATSAPP
    assert channel.created_at == datetime(2022, 3, 1, tzinfo=UTC)
    assert channel.pd_company_id is None and channel.template_support is None


def test_models_are_frozen() -> None:
    message = make_message()
    with pytest.raises(AttributeError):
        message.message = "changed"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": ""}, "id"),
        ({"channel_id": ""}, "channel_id"),
        ({"sender_id": 5}, "sender_id"),
        ({"conversation_id": "c\n1"}, "conversation_id"),
        ({"message": ""}, "message"),
        ({"message": None}, "message"),
        ({"status": "seen"}, "status"),
        ({"created_at": datetime(2022, 3, 1, 7, 58)}, "created_at"),
        ({"created_at": "2022-03-01 07:58"}, "created_at"),
        ({"reply_by": datetime(2022, 3, 1, 7, 58)}, "reply_by"),
        ({"conversation_link": "ftp://x.example/c"}, "conversation_link"),
        ({"conversation_link": "javascript:alert(1)"}, "conversation_link"),
        ({"attachments": [{"id": "a"}]}, "attachments[0]"),
    ],
)
def test_bad_message_input_names_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        make_message(**changes)
    assert info.value.field == field
    assert field in str(info.value)


def test_empty_text_is_allowed_with_an_attachment() -> None:
    attachment = Attachment(id="a", type="image/png", url="https://h.example/a.png")
    assert make_message(message="", attachments=[attachment]).attachments == (attachment,)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"id": "", "type": "t", "url": "https://h.example/x"}, "id"),
        ({"id": "a", "type": "", "url": "https://h.example/x"}, "type"),
        ({"id": "a", "type": "t", "url": "file:///etc/passwd"}, "url"),
        ({"id": "a", "type": "t", "url": "https://h.example/x", "size": -1}, "size"),
        ({"id": "a", "type": "t", "url": "https://h.example/x", "size": "big"}, "size"),
        ({"id": "a", "type": "t", "url": "https://h.example/x", "preview_url": "nope"}, "preview_url"),
    ],
)
def test_bad_attachment_input_names_the_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Attachment(**fields)  # type: ignore[arg-type]
    assert info.value.field == field


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "", "provider_channel_id": "p"}, "name"),
        ({"name": "n", "provider_channel_id": ""}, "provider_channel_id"),
        ({"name": "n", "provider_channel_id": "p\x00"}, "provider_channel_id"),
        ({"name": "n", "provider_channel_id": "p", "provider_type": "telegram"}, "provider_type"),
        ({"name": "n", "provider_channel_id": "p", "avatar_url": "data:image/png;base64,AA"}, "avatar_url"),
        ({"name": "n", "provider_channel_id": "p", "template_support": "yes"}, "template_support"),
    ],
)
def test_bad_new_channel_input_names_the_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        NewChannel(**fields)  # type: ignore[arg-type]
    assert info.value.field == field


def test_new_channel_body_omits_unset_avatar() -> None:
    assert converter.unstructure(NewChannel(name="n", provider_channel_id="p")) == {
        "name": "n", "provider_channel_id": "p", "template_support": False, "provider_type": "other",
    }


def make_extension_message(**changes: object) -> ExtensionMessage:
    fields: dict[str, object] = {"id": "m-1", "sender_id": "u-1", "message": "hello", "status": "sent",
                                 "created_at": CREATED}
    fields.update(changes)
    return ExtensionMessage(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"message": ""}, "message", "must not be empty when the message has no attachments"),
        ({"message": b"hi"}, "message", "must be a string, got bytes"),
        ({"status": "seen"}, "status", "must be one of 'sent', 'delivered', 'read', 'failed', got 'seen'"),
        ({"status": ["sent"]}, "status", "must be one of 'sent', 'delivered', 'read', 'failed', got ['sent']"),
        ({"attachments": 5}, "attachments", "must be a sequence of Attachment, got int"),
        ({"attachments": "a.png"}, "attachments", "must be a sequence of Attachment, got str"),
        ({"attachments": [ATTACHMENT, {"id": "a"}]}, "attachments[1]", "must be an Attachment, got dict"),
    ],
)
def test_a_message_and_an_extension_message_refuse_alike(changes: dict[str, object], field: str, reason: str) -> None:
    for build in (make_message, make_extension_message):
        with pytest.raises(ValidationError) as info:
            build(**changes)
        assert (info.value.field, info.value.reason) == (field, reason)
