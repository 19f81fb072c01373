"""The transcript as note contents: the line format, escaping, headers, the 100,000-character split (pure)."""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipedrive_channels import Attachment, Message, MessageStatus, ValidationError
from pipedrive_channels.notes._transcript import (
    MAX_NOTE_CHARS,
    add_time_of,
    contents_of,
    group_of,
    header_of,
    line_of,
)

UTC = timezone.utc
NEW_YORK = timezone(timedelta(hours=-5))  # a fixed offset: the tests do not depend on the machine's zone data
CREATED = datetime(2026, 1, 5, 9, 7, 42, tzinfo=UTC)
CUT = " [... cut: too long for one note]</p>"
_ENTITY = re.compile(r"&(?:amp|lt|gt|quot|#x27);")


def make_message(**changes: object) -> Message:
    fields: dict[str, object] = {
        "id": "m-1", "channel_id": "ch", "sender_id": "customer", "conversation_id": "c-1", "message": "hello",
        "status": MessageStatus.SENT, "created_at": CREATED,
    }
    fields.update(changes)
    return Message(**fields)  # type: ignore[arg-type]


def bodies(conversation_id: str, group: str, contents: list[str]) -> list[str]:
    """The lines of ``contents`` (a ``contents_of`` answer), each note's header checked and taken off."""
    lines = []
    for part, content in enumerate(contents, start=1):
        header = header_of(conversation_id, group, part)
        assert content.startswith(header)
        lines += [line + "</p>" for line in content[len(header):].split("</p>")[:-1]]
    return lines


def well_formed(line: str) -> bool:
    """Every tag closed (no ``<`` cut off), every ``&`` a whole entity, every link closed."""
    return (
        re.fullmatch(r"(?:[^<>]|<[^<>]*>)*", line) is not None
        and "&" not in _ENTITY.sub("", line)
        and line.count("<a ") == line.count("</a>")
        and line.startswith("<p>") and line.endswith("</p>")
    )


# --- line_of ---------------------------------------------------------------------------------------------------


def test_a_line_is_time_sender_status_and_text_in_utc() -> None:
    message = make_message(created_at=datetime(2026, 1, 5, 4, 7, 42, tzinfo=NEW_YORK))

    assert line_of(message) == "<p>2026-01-05 09:07 customer (sent):      hello</p>"


def test_attachments_are_links_named_by_their_name_else_their_url() -> None:
    message = make_message(attachments=[
        Attachment(id="a-1", type="image/png", url="https://h.example/a.png", name="photo.png"),
        Attachment(id="a-2", type="application/pdf", url="https://h.example/b.pdf"),
    ])

    assert line_of(message) == (
        "<p>2026-01-05 09:07 customer (sent):      hello "
        '<a href="https://h.example/a.png">photo.png</a>, <a href="https://h.example/b.pdf">https://h.example/b.pdf</a>'
        "</p>"
    )


def test_a_message_of_attachments_only_is_its_links() -> None:
    attachment = Attachment(id="a-1", type="image/png", url="https://h.example/a.png", name="a.png")

    line = line_of(make_message(message="", attachments=[attachment]))

    assert line == '<p>2026-01-05 09:07 customer (sent):      <a href="https://h.example/a.png">a.png</a></p>'


def test_text_sender_and_attachments_are_escaped() -> None:
    message = make_message(
        sender_id='<b>"boss"</b>', message="<script>alert('x')</script> & \"quotes\"",
        attachments=[Attachment(id="a", type="text/html", url='https://h.example/?a=1&b="><script>',
                                name="<img src=x onerror=alert(1)>")],
    )

    line = line_of(message)

    assert "<script>" not in line and "<b>" not in line and "<img" not in line
    assert "&lt;b&gt;&quot;boss&quot;&lt;/b&gt; (sent)" in line
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;" in line
    assert '<a href="https://h.example/?a=1&amp;b=&quot;&gt;&lt;script&gt;">' in line
    assert ">&lt;img src=x onerror=alert(1)&gt;</a>" in line
    assert well_formed(line)


@pytest.mark.parametrize("text", ["one\ntwo\nthree", "one\r\ntwo\r\nthree", "one\rtwo\rthree"])
def test_newlines_in_the_text_are_line_breaks(text: str) -> None:
    assert line_of(make_message(message=text)).endswith(" one<br>two<br>three</p>")


@pytest.mark.parametrize("old", list(MessageStatus))
@pytest.mark.parametrize("new", list(MessageStatus))
def test_a_status_update_changes_only_the_status_and_not_the_length(old: MessageStatus, new: MessageStatus) -> None:
    before, after = line_of(make_message(status=old)), line_of(make_message(status=new))

    before_head, before_tail = before.split(f" ({old.value}):")
    after_head, after_tail = after.split(f" ({new.value}):")
    assert before_head == after_head and before_tail.lstrip(" ") == after_tail.lstrip(" ")
    assert len(before) == len(after)  # so a status rewrite never moves a line to another note


def test_a_status_rewrite_in_a_middle_note_changes_that_note_only() -> None:
    lines = [line_of(make_message(message="x" * (1 + i % 7 * 9))) for i in range(60)]
    before = contents_of("c-1", "", lines, limit=600)
    lines[25] = line_of(make_message(message="x" * (1 + 25 % 7 * 9), status=MessageStatus.DELIVERED))

    after = contents_of("c-1", "", lines, limit=600)

    assert len(before) == len(after) > 3
    changed = [part for part, (old, new) in enumerate(zip(before, after, strict=True)) if old != new]
    assert len(changed) == 1 and 0 < changed[0] < len(after) - 1


# --- group_of, header_of, add_time_of --------------------------------------------------------------------------


def test_the_day_is_the_utc_day_across_midnight() -> None:
    late_in_new_york = make_message(created_at=datetime(2026, 1, 1, 23, 30, tzinfo=NEW_YORK))
    early_in_berlin = make_message(created_at=datetime(2026, 1, 2, 0, 30, tzinfo=timezone(timedelta(hours=1))))

    assert group_of(late_in_new_york, "day") == "2026-01-02"
    assert group_of(early_in_berlin, "day") == "2026-01-01"
    assert group_of(late_in_new_york, "conversation") == group_of(early_in_berlin, "conversation") == ""


def test_an_unknown_grouping_is_refused_naming_group_by() -> None:
    with pytest.raises(ValidationError) as raised:
        group_of(make_message(), "week")  # type: ignore[arg-type]
    assert raised.value.field == "group_by"


def test_the_header_names_the_conversation_the_day_and_the_part() -> None:
    assert header_of("c-1", "2026-01-05", 1) == "<p><b>Conversation c-1</b>, 2026-01-05</p>"
    assert header_of("c-1", "2026-01-05", 2) == "<p><b>Conversation c-1</b>, 2026-01-05 (continued, part 2)</p>"
    assert header_of("c-1", "", 1) == "<p><b>Conversation c-1</b></p>"
    assert header_of("c-1", "", 3) == "<p><b>Conversation c-1</b> (continued, part 3)</p>"
    assert header_of('<i>"c"&</i>', "", 1) == "<p><b>Conversation &lt;i&gt;&quot;c&quot;&amp;&lt;/i&gt;</b></p>"


def test_no_header_starts_another_conversations_note() -> None:
    headers = [header_of(conversation, group, part) for conversation in ("c-1", "c-10", "c-1, 2026-01-05")
               for group in ("", "2026-01-05") for part in (1, 2, 12)]
    notes = [header + "<p>2026-01-05 09:07 customer (sent):      x</p>" for header in headers]

    assert [sum(note.startswith(header) for note in notes) for header in headers] == [1] * len(headers)


@pytest.mark.parametrize("part", [0, -1, True, 1.0])
def test_a_part_below_one_is_refused_naming_part(part: object) -> None:
    with pytest.raises(ValidationError) as raised:
        header_of("c-1", "", part)  # type: ignore[arg-type]
    assert raised.value.field == "part"


def test_add_time_is_the_utc_time_to_the_second() -> None:
    assert add_time_of(datetime(2026, 1, 1, 23, 30, 15, tzinfo=NEW_YORK)) == "2026-01-02 04:30:15"
    assert add_time_of(datetime(2026, 1, 2, 4, 30, 15, 999_999, tzinfo=UTC)) == "2026-01-02 04:30:15"


def test_add_time_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValidationError) as raised:
        add_time_of(datetime(2026, 1, 1))
    assert raised.value.field == "created_at"


# --- contents_of -----------------------------------------------------------------------------------------------

_TEXT = st.text(alphabet=st.sampled_from("ab <>&\"'\n;é"), max_size=300)
_ATTACHMENTS = st.lists(st.builds(
    Attachment, id=st.just("a"), type=st.just("image/png"),
    url=st.sampled_from(["https://h.example/a.png", 'https://h.example/?q=<&>"']),
    name=st.none() | st.text(alphabet="x<&", min_size=1, max_size=80),
), max_size=3)


@st.composite
def transcripts(draw: st.DrawFn) -> list[str]:
    """Lines of random messages, some longer than a note of 200 characters holds."""
    parts = draw(st.lists(st.tuples(_TEXT, _ATTACHMENTS).filter(any), max_size=30))
    return [line_of(make_message(message=text, attachments=attachments)) for text, attachments in parts]


def check_contents(lines: list[str], limit: int, group: str = "2026-01-05") -> list[str]:
    contents = contents_of("c-1", group, lines, limit=limit)

    assert all(len(content) <= limit for content in contents)
    recovered = bodies("c-1", group, contents)
    assert len(recovered) == len(lines)
    for line, got in zip(lines, recovered, strict=True):
        assert well_formed(got)
        if got != line:  # cut: only a line too long for a note of its own, and only its tail
            assert len(header_of("c-1", group, 100)) + len(line) > limit and got.endswith(CUT)
            assert line.startswith(got[: -len(CUT)].removesuffix("</a>"))
    return contents


@given(transcripts(), st.sampled_from(["", "2026-01-05"]))
def test_every_note_fits_and_holds_every_line_once_in_order(lines: list[str], group: str) -> None:
    check_contents(lines, 200, group)


@given(transcripts(), st.sampled_from(["a", "&" * 40, "<p>" * 30, "x" * 500]))
def test_appending_a_line_changes_only_the_last_note(lines: list[str], extra: str) -> None:
    line = line_of(make_message(message=extra))
    before = contents_of("c-1", "", lines, limit=200)

    after = contents_of("c-1", "", [*lines, line], limit=200)

    assert after[: len(before) - 1] == before[:-1]
    assert not before or after[len(before) - 1].startswith(before[-1])


def test_no_lines_no_notes() -> None:
    assert contents_of("c-1", "2026-01-05", []) == []


def test_a_day_of_3000_messages_continues_over_several_notes() -> None:
    rng = random.Random(13)
    words = ["hello", "order", "delivery", "thanks", "tomorrow", "invoice", "<ok>", "&", "price", "when?"]
    lines = [line_of(make_message(id=f"m-{i}", sender_id=rng.choice(["customer", "agent-7"]),
                                  message=" ".join(rng.choices(words, k=rng.randint(3, 40))),
                                  created_at=CREATED + timedelta(seconds=20 * i)))
             for i in range(3000)]

    contents = check_contents(lines, MAX_NOTE_CHARS)

    assert len(contents) >= 2
    assert bodies("c-1", "2026-01-05", contents) == lines
    assert contents[1].startswith("<p><b>Conversation c-1</b>, 2026-01-05 (continued, part 2)</p>")


def test_a_message_longer_than_a_note_is_cut_visibly_to_fit() -> None:
    line = line_of(make_message(message="<&>" * 50_000))

    [content] = contents_of("c-1", "", [line])

    assert len(content) <= MAX_NOTE_CHARS
    assert content.endswith(CUT)
    assert well_formed(content[len(header_of("c-1", "", 1)):])


def test_a_limit_too_small_for_the_header_is_refused_naming_limit() -> None:
    with pytest.raises(ValidationError) as raised:
        contents_of("c" * 200, "", ["<p>x</p>"], limit=200)
    assert raised.value.field == "limit"
