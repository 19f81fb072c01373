"""The echoed answer of receive_message: reused only when it is exactly what was sent, else checked in full."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import attrs
import pytest

from pipedrive_channels import Attachment, Message, MessageStatus
from pipedrive_channels._echo import echoed
from pipedrive_channels.models import converter

_PLUS_TWO = timezone(timedelta(hours=2))


def _message(**changes: object) -> Message:
    fields: dict[str, object] = {
        "id": "m-1", "channel_id": "ch", "sender_id": "s", "conversation_id": "c", "message": "hi",
        "status": MessageStatus.SENT, "created_at": datetime(2026, 3, 1, 12, 30, 45, 7, tzinfo=_PLUS_TWO),
        "reply_by": datetime(2026, 3, 2, 9, 15, 59, tzinfo=timezone.utc),
    }
    return Message(**{**fields, **changes})  # type: ignore[arg-type]


def test_an_exact_echo_gives_what_structuring_the_answer_gives() -> None:
    message = _message(attachments=(Attachment(id="a", type="image/png", url="https://x.test/a", size=3),))
    sent = converter.unstructure(message)
    answer = echoed(message, sent, converter.unstructure(message))
    assert answer == converter.structure(sent, Message)
    assert answer is not None and answer.created_at.tzinfo is timezone.utc
    assert answer.created_at == datetime(2026, 3, 1, 10, 30, tzinfo=timezone.utc)  # the wire's minute, in UTC


def test_an_answer_that_differs_in_value_type_or_fields_is_not_reused() -> None:
    message = _message(attachments=(Attachment(id="a", type="image/png", url="https://x.test/a", size=1),))
    sent = converter.unstructure(message)
    changed = {**sent, "status": "read"}
    extra = {**sent, "unknown": 1}
    retyped = {**sent, "attachments": [{**sent["attachments"][0], "size": True}]}  # True == 1, but not a number
    answers: list[object] = [changed, extra, retyped, None, []]
    for data in answers:
        assert echoed(message, sent, data) is None


def test_an_echoed_answer_is_a_frozen_message_like_any_other() -> None:
    message = _message()
    sent = converter.unstructure(message)
    answer = echoed(message, sent, converter.unstructure(message))
    assert type(answer) is Message and answer == converter.structure(sent, Message)
    assert hash(answer) == hash(converter.structure(sent, Message))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        answer.message = "changed"  # type: ignore[misc]
