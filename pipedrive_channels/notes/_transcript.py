"""A conversation's transcript as note contents: pure functions, no I/O.

A message becomes one HTML line (``<p>...</p>``); a group's lines (a conversation's UTC day, or the whole
conversation) are packed greedily into notes of at most :data:`MAX_NOTE_CHARS` characters, each headed by
:func:`header_of`. A line's length does not depend on the message's status, so a status update rewrites the one
note holding the line and never moves a line to another note.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Literal

from ..errors import ValidationError
from ..models import Message, MessageStatus, format_datetime

__all__ = ["MAX_NOTE_CHARS", "GroupBy", "add_time_of", "contents_of", "group_of", "header_of", "line_of"]

MAX_NOTE_CHARS = 100_000
"""Pipedrive's limit on a note's ``content`` (about 100,000 characters)."""

GroupBy = Literal["day", "conversation"]
"""How a conversation's lines are grouped into notes: one group per UTC day, or one for the whole conversation."""

# A status update must not move a part boundary (which would rewrite every later note): see line_of.
_STATUS_WIDTH = max(len(status.value) for status in MessageStatus)
_CUT = " [... cut: too long for one note]"
# What a cut line may add after the kept prefix: a closing </a> (when cut inside a link), the marker, </p>.
_CUT_ROOM = len("</a>") + len(_CUT) + len("</p>")
_SHORTEST_CUT_LINE = len("<p>") + _CUT_ROOM


def group_of(message: Message, group_by: GroupBy) -> str:
    """The group a message's line belongs to: its ``created_at``'s UTC day (``YYYY-MM-DD``) for ``"day"``, ``""``
    for ``"conversation"``; any other ``group_by`` raises :class:`ValidationError` naming ``group_by``."""
    if group_by == "day":
        return format_datetime(message.created_at)[:10]
    if group_by == "conversation":
        return ""
    raise ValidationError("group_by", f'must be "day" or "conversation", got {group_by!r}')


def line_of(message: Message) -> str:
    """One message's transcript line, HTML: ``<p>YYYY-MM-DD HH:MM sender (status): text links</p>``.

    The time is ``created_at`` in UTC; the status is padded with spaces (HTML shows them as one) to the longest
    status's width, so the line's length does not depend on it; the text, the sender and the attachments' names
    are HTML-escaped (a ``<script>`` arrives as text), newlines in the text become ``<br>``; each attachment is a
    link (``<a href="url">name or url</a>``), after the text.
    """
    text = html.escape(message.message)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\n" in text:
        text = text.replace("\n", "<br>")
    if message.attachments:
        links = ", ".join(
            f'<a href="{html.escape(item.url)}">{html.escape(item.name or item.url)}</a>'
            for item in message.attachments
        )
        text = f"{text} {links}" if text else links
    status = message.status.value
    padding = " " * (_STATUS_WIDTH - len(status))
    return (
        f"<p>{format_datetime(message.created_at)} {html.escape(message.sender_id)} ({status}):{padding} {text}</p>"
    )


def header_of(conversation_id: str, group: str, part: int) -> str:
    """A note's first line: ``<p><b>Conversation {id}</b>, {group} (continued, part {part})</p>``.

    The group (the day) is left out when empty, the ``continued`` clause when ``part`` is 1. The escaped id cannot
    hold ``</b>``, so the header of one conversation is never the header of another: a note is recognised by its
    content starting with its exact header. ``part`` below 1 raises :class:`ValidationError` naming ``part``.
    """
    if type(part) is not int or part < 1:
        raise ValidationError("part", f"must be an integer of at least 1, got {part!r}")
    day = f", {html.escape(group)}" if group else ""
    continued = f" (continued, part {part})" if part > 1 else ""
    return f"<p><b>Conversation {html.escape(conversation_id)}</b>{day}{continued}</p>"


def contents_of(conversation_id: str, group: str, lines: Sequence[str], *, limit: int = MAX_NOTE_CHARS) -> list[str]:
    """The contents of the notes holding one group's ``lines`` (oldest first), each at most ``limit`` characters.

    Each note is its :func:`header_of` followed by as many whole lines as fit; every line appears exactly once, in
    order, and never splits across notes. A line too long to fit in a note alone is cut to fit, ending with a
    visible marker. Packing is greedy, so appending lines changes only the last note (or adds notes after it).
    No lines, no notes. A ``limit`` too small for the header and a cut line raises :class:`ValidationError`.
    """
    contents: list[str] = []
    note: list[str] = []
    used = 0
    for line in lines:
        if len(note) > 1 and used + len(line) > limit:
            contents.append("".join(note))
            note = []
        if not note:
            header = header_of(conversation_id, group, len(contents) + 1)
            if len(header) + _SHORTEST_CUT_LINE > limit:
                raise ValidationError(
                    "limit", f"{limit} characters cannot hold a note's header ({len(header)} characters for this "
                    f"conversation_id) and a line of at least {_SHORTEST_CUT_LINE}"
                )
            note = [header]
            used = len(header)
        if used + len(line) > limit:
            line = _cut(line, limit - used)
        note.append(line)
        used += len(line)
    if note:
        contents.append("".join(note))
    return contents


def add_time_of(created_at: datetime) -> str:
    """A note's ``add_time``: its first message's ``created_at`` in UTC, ``YYYY-MM-DD HH:MM:SS``."""
    if created_at.tzinfo is None or created_at.utcoffset() is None:
        raise ValidationError("created_at", f"must be timezone-aware, got {created_at!r}")
    return created_at.astimezone(timezone.utc).isoformat(" ", "seconds")[:19]


def _cut(line: str, room: int) -> str:
    """``line`` cut to at most ``room`` characters, still well-formed: never inside a tag or an entity, a link
    closed, the marker and ``</p>`` at the end. Text is escaped, so ``<`` and ``&`` only start tags and entities."""
    kept = line[: room - _CUT_ROOM]
    tag = kept.rfind("<")
    if tag > kept.rfind(">"):
        kept = kept[:tag]
    entity = kept.rfind("&")
    if entity > kept.rfind(";"):
        kept = kept[:entity]
    if kept.rfind("<a ") > kept.rfind("</a>"):
        kept += "</a>"
    return kept + _CUT + "</p>"
