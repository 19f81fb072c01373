"""Issue 11 (hardening), the models' side: structuring never turns a wrong JSON type into text (#8), and a
date-time without a UTC form is a ValidationError, not an OverflowError (#10)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pipedrive_channels import Attachment, Channel, Message, ValidationError
from pipedrive_channels.backfill import BadInput, read_jsonl
from pipedrive_channels.models import converter, parse_datetime, require_identifier

BODY: dict[str, Any] = {
    "id": "m-1", "channel_id": "ch-1", "sender_id": "u-1", "conversation_id": "c-1", "message": "hello",
    "status": "sent", "created_at": "2022-03-01 07:58",
}
ATTACHMENT = {"id": "a-1", "type": "image/png", "url": "https://h.example/a.png"}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": {"x": 1}}, "id"),
        ({"id": ["m-1"]}, "id"),
        ({"id": 5}, "id"),  # the spec types IDs as strings: a number is refused, not converted
        ({"id": True}, "id"),
        ({"sender_id": None}, "sender_id"),
        ({"channel_id": 1.5}, "channel_id"),
        ({"message": None}, "message"),
        ({"message": 42}, "message"),
        ({"conversation_link": ["https://x.example/c"]}, "conversation_link"),
        ({"attachments": "abc"}, "attachments"),
        ({"attachments": [7]}, "attachments[0]"),
        ({"attachments": [{**ATTACHMENT, "id": None}]}, "attachments[0].id"),
        ({"attachments": [{**ATTACHMENT, "name": {"n": 1}}]}, "attachments[0].name"),
        ({"attachments": [{**ATTACHMENT, "size": "12"}]}, "attachments[0].size"),
        ({"attachments": [{**ATTACHMENT, "size": float("nan")}]}, "attachments[0].size"),
        ({"attachments": [{**ATTACHMENT, "link_expires": "false"}]}, "attachments[0].link_expires"),
    ],
)
def test_a_wrong_json_type_is_a_validation_error_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        converter.structure({**BODY, **changes}, Message)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_a_missing_required_field_or_a_non_object_names_it() -> None:
    body = dict(BODY)
    del body["sender_id"]
    with pytest.raises(ValidationError) as info:
        converter.structure(body, Message)
    assert str(info.value) == "sender_id: is required"
    with pytest.raises(ValidationError) as info:
        converter.structure(["m-1"], Message)
    assert info.value.field == "Message"


def test_the_strict_rule_holds_for_answers_too() -> None:
    answer = {"id": "e2", "name": "Chat", "provider_channel_id": "p-1"}
    assert converter.structure({**answer, "pd_company_id": 7}, Channel).pd_company_id == 7
    wrong = [({"id": None}, "id"), ({"pd_company_id": "7"}, "pd_company_id"),
             ({"pd_company_id": True}, "pd_company_id"), ({"template_support": "no"}, "template_support")]
    for changes, field in wrong:
        with pytest.raises(ValidationError) as info:
            converter.structure({**answer, **changes}, Channel)
        assert info.value.field == field


def test_valid_bodies_still_structure() -> None:
    message = converter.structure({**BODY, "attachments": [{**ATTACHMENT, "size": 600, "name": None}]}, Message)
    assert message.attachments == (Attachment("a-1", "image/png", "https://h.example/a.png", size=600),)


@pytest.mark.parametrize(
    "created_at",
    ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:00-05:00", "99999-01-01 00:00", "2022-13-01 00:00", 1646121480,
     None, {"t": 1}],
)
def test_a_created_at_without_a_utc_form_or_of_the_wrong_type_names_the_field(created_at: Any) -> None:
    with pytest.raises(ValidationError) as info:
        converter.structure({**BODY, "created_at": created_at}, Message)
    assert info.value.field == "created_at"


def test_parse_datetime_refuses_a_time_without_a_utc_form() -> None:
    with pytest.raises(ValueError, match="out of range"):
        parse_datetime("0001-01-01T00:00:00+05:00")
    assert parse_datetime("0001-01-01T00:00:00+00:00") == datetime(1, 1, 1, tzinfo=timezone.utc)


def test_a_constructed_message_without_a_utc_form_is_refused() -> None:
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))
    with pytest.raises(ValidationError) as info:
        Message(**{**BODY, "created_at": early})
    assert info.value.field == "created_at"


def test_read_jsonl_turns_wrong_types_into_bad_input_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    lines = [BODY, {**BODY, "id": {"x": 1}}, {**BODY, "sender_id": None, "message": None},
             {**BODY, "created_at": "0001-01-01T00:00:00+05:00"}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    first, *bad = read_jsonl(path)
    assert isinstance(first, Message)
    assert [item.line for item in bad if isinstance(item, BadInput)] == [2, 3, 4]
    assert [item.reason.split(":")[0] for item in bad if isinstance(item, BadInput)] == ["id", "sender_id",
                                                                                          "created_at"]


@pytest.mark.parametrize("value", ["a\x85b", "a\x9bb", "a\x00b", "a\r\nb"])
def test_c1_controls_are_control_characters_in_identifiers(value: str) -> None:
    with pytest.raises(ValidationError, match="control characters"):
        require_identifier("id", value)
    assert require_identifier("id", "caf\u00e9 \u00a0x") == "caf\u00e9 \u00a0x"  # printable or a space: fine
