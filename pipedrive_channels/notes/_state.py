"""The notes target's state, in tables of its own on the run's journal (so a re-run resumes it).

- ``notes_meta``: how the journal groups lines (``group_by``); a re-run must group them the same way.
- ``notes_contacts``: conversation -> its contact (JSON), from the first of its records that carried one.
- ``notes_persons``: contact key -> the Pipedrive person found or created for it; a row whose ``person_id`` is
  NULL is being created (the mark a crashed run leaves, so that the next one searches before creating).
- ``notes_lines``: one transcript line per (conversation, message id): its group, ``created_at`` (UTC ISO 8601,
  fixed width, so it sorts as text), the input sequence it first came at (ties), the HTML line, and ``pending``:
  the records that changed it since it last reached Pipedrive. A group with a pending line is dirty.
- ``notes_parts``: the notes holding a group, per part (1, 2, ...): the person they are on, the note id and the
  digest of the content last written. A NULL ``note_id`` is the "creating" mark, set before the note's POST: a
  later run looks the note up by its header before creating it again.

Every row read is checked: a corrupt one is a :class:`~pipedrive_channels.CheckpointError` naming the table and
the field, never a ``KeyError`` or a ``TypeError``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, NamedTuple

from .._journal import Checkpoint, CheckpointError
from ..errors import ValidationError
from ..models import Message
from ._contact import Contact

__all__ = ["Line", "NotesState", "Part"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS notes_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS notes_contacts (conversation_id TEXT PRIMARY KEY, contact TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS notes_persons (contact_key TEXT PRIMARY KEY, person_id INTEGER)",
    "CREATE TABLE IF NOT EXISTS notes_lines (conversation_id TEXT NOT NULL, message_id TEXT NOT NULL,"
    " grp TEXT NOT NULL, created_at TEXT NOT NULL, seq INTEGER NOT NULL, line TEXT NOT NULL,"
    " pending INTEGER NOT NULL, PRIMARY KEY (conversation_id, message_id)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS notes_lines_by_group ON notes_lines (conversation_id, grp, created_at, seq)",
    # Only dirty lines are indexed: finding the dirty groups reads what is dirty, not the whole history.
    "CREATE INDEX IF NOT EXISTS notes_lines_pending ON notes_lines (grp, conversation_id) WHERE pending > 0",
    "CREATE TABLE IF NOT EXISTS notes_parts (conversation_id TEXT NOT NULL, grp TEXT NOT NULL,"
    " part INTEGER NOT NULL, person_id INTEGER NOT NULL, note_id INTEGER, digest TEXT,"
    " PRIMARY KEY (conversation_id, grp, part)) WITHOUT ROWID",
)

# A contact without person_id whose contact_key is (?, ?, ?): its phone, email, and name when it has neither.
_HAS_KEY = ("(json_extract(contact, '$.person_id') IS NULL AND json_extract(contact, '$.phone') IS ?"
            " AND json_extract(contact, '$.email') IS ? AND (? IS NULL OR json_extract(contact, '$.name') IS ?))")

MAX_CONTACT_JSON = 4096
"""The longest contact kept (its JSON): names, phones and emails are short."""


class Line(NamedTuple):
    """One transcript line of a group, as journalled."""

    message_id: str
    created_at: datetime
    line: str
    pending: int


class Part(NamedTuple):
    """One note of a group, as journalled; ``note_id`` None: its POST was started but not seen to end."""

    person_id: int
    note_id: int | None
    digest: str | None


def _corrupt(journal: Checkpoint, table: str, field: str, value: Any) -> CheckpointError:
    return CheckpointError(f"checkpoint {journal.path}: {table}.{field} is corrupt: {str(value)[:80]!r}")


def _text(journal: Checkpoint, table: str, field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _corrupt(journal, table, field, value)
    return value


def _count(journal: Checkpoint, table: str, field: str, value: Any, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if type(value) is not int or value < 0:
        raise _corrupt(journal, table, field, value)
    return value


def _utc(created_at: datetime) -> str:
    return created_at.astimezone(timezone.utc).isoformat(timespec="microseconds")


class NotesState:
    """The notes target's tables on one journal; every method commits before it returns."""

    def __init__(self, journal: Checkpoint, group_by: str) -> None:
        self.journal = journal
        for statement in _SCHEMA:
            journal.execute(statement)
        journal.execute("INSERT OR IGNORE INTO notes_meta VALUES ('group_by', ?)", (group_by,))
        kept = journal.execute("SELECT value FROM notes_meta WHERE key = 'group_by'").fetchone()[0]
        if kept != group_by:
            raise ValidationError("group_by", f"the journal {journal.path} holds notes grouped by {kept!r}, not "
                                              f"{group_by!r}; use that, or another journal")
        (last,) = journal.execute("SELECT MAX(seq) FROM notes_lines").fetchone()
        self._seq = _count(journal, "notes_lines", "seq", last, optional=True) or 0

    # -- contacts and persons -------------------------------------------------------------------------------

    def keep_contact(self, conversation_id: str, contact: Contact) -> None:
        """Journal a conversation's contact, unless one of its records already gave one (the first one wins)."""
        fields = {"person_id": contact.person_id, "name": contact.name, "phone": contact.phone,
                  "email": contact.email}
        text = json.dumps({key: value for key, value in fields.items() if value is not None})
        if len(text) > MAX_CONTACT_JSON:
            raise ValidationError("contact", f"is {len(text)} characters as JSON, more than {MAX_CONTACT_JSON}")
        self.journal.execute("INSERT OR IGNORE INTO notes_contacts VALUES (?, ?)", (conversation_id, text))

    def contact_of(self, conversation_id: str) -> Contact | None:
        """The conversation's contact, or None if no record of it carried one."""
        query = "SELECT contact FROM notes_contacts WHERE conversation_id = ?"
        row = self.journal.execute(query, (conversation_id,)).fetchone()
        if row is None:
            return None
        text = _text(self.journal, "notes_contacts", "contact", row[0])
        try:
            fields = json.loads(text)
            if not isinstance(fields, dict):
                raise TypeError("not an object")
            return Contact(**fields)
        except (ValueError, TypeError, RecursionError) as error:  # ValidationError is a ValueError
            raise _corrupt(self.journal, "notes_contacts", "contact", text) from error

    def conversations_of(self, person_id: int) -> list[str]:
        """The conversations whose notes go on a person, the one with the latest line first: those whose contact
        names the person, resolves to it (``notes_persons``), or whose notes were written on it."""
        keys = [self._key_fields(key) for (key,) in
                self.journal.execute("SELECT contact_key FROM notes_persons WHERE person_id = ?", (person_id,))]
        resolved = " OR ".join([_HAS_KEY] * len(keys)) or "0"
        rows = self.journal.execute(
            "WITH ours (conversation_id) AS (SELECT conversation_id FROM notes_contacts WHERE"
            f" json_extract(contact, '$.person_id') = ? OR {resolved}"
            " UNION SELECT conversation_id FROM notes_parts WHERE person_id = ?)"
            " SELECT ours.conversation_id FROM ours LEFT JOIN notes_lines USING (conversation_id)"
            " GROUP BY ours.conversation_id ORDER BY MAX(created_at) DESC, MAX(seq) DESC",
            (person_id, *(value for phone, email, name in keys for value in (phone, email, name, name)), person_id),
        ).fetchall()
        return [_text(self.journal, "notes_contacts", "conversation_id", conversation) for (conversation,) in rows]

    def _key_fields(self, key: Any) -> tuple[str | None, str | None, str | None]:
        """A contact key's ``(phone, email, name)`` (see ``contact_key``)."""
        try:
            phone, email, name = json.loads(_text(self.journal, "notes_persons", "contact_key", key))
        except (ValueError, TypeError, RecursionError):
            raise _corrupt(self.journal, "notes_persons", "contact_key", key) from None
        return phone, email, name

    def person(self, key: str) -> tuple[bool, int | None]:
        """``(known, person_id)`` for a contact key: unknown, being created (id None), or found or created."""
        row = self.journal.execute("SELECT person_id FROM notes_persons WHERE contact_key = ?", (key,)).fetchone()
        if row is None:
            return False, None
        person_id = _count(self.journal, "notes_persons", "person_id", row[0], optional=True)
        return True, person_id

    def creating_person(self, key: str) -> None:
        """Mark a contact's person as being created, before its POST."""
        self.journal.execute("INSERT OR REPLACE INTO notes_persons VALUES (?, NULL)", (key,))

    def keep_person(self, key: str, person_id: int) -> None:
        self.journal.execute("INSERT OR REPLACE INTO notes_persons VALUES (?, ?)", (key, person_id))

    def forget_person(self, key: str) -> None:
        self.journal.execute("DELETE FROM notes_persons WHERE contact_key = ?", (key,))

    # -- lines -------------------------------------------------------------------------------------------

    def keep_line(self, message: Message, group: str, line: str) -> bool:
        """Journal a message's line, pending; a record of a message already held rewrites its line.

        :returns: whether anything changed (the same record twice is one record).
        """
        self._seq += 1
        cursor = self.journal.execute(
            "INSERT INTO notes_lines VALUES (?, ?, ?, ?, ?, ?, 1) ON CONFLICT (conversation_id, message_id) DO UPDATE"
            " SET line = excluded.line, created_at = excluded.created_at, pending = pending + 1"
            " WHERE line != excluded.line OR created_at != excluded.created_at",
            (message.conversation_id, message.id, group, _utc(message.created_at), self._seq, line),
        )
        return cursor.rowcount > 0

    def dirty_groups(self, before: str | None = None) -> list[tuple[str, str]]:
        """The ``(conversation_id, group)`` with pending lines (only groups below ``before``, if given)."""
        query = "SELECT DISTINCT grp, conversation_id FROM notes_lines WHERE pending > 0"
        rows = self.journal.execute(query + (" AND grp < ?" if before is not None else ""),
                                    () if before is None else (before,)).fetchall()
        return [(_text(self.journal, "notes_lines", "conversation_id", conversation),
                 _text(self.journal, "notes_lines", "grp", group)) for group, conversation in rows]

    def highest_group(self) -> str:
        """The highest group journalled (the latest day), ``""`` when none."""
        (highest,) = self.journal.execute("SELECT MAX(grp) FROM notes_lines").fetchone()
        return "" if highest is None else _text(self.journal, "notes_lines", "grp", highest)

    def lines_of(self, conversation_id: str, group: str) -> list[Line]:
        """A group's lines, oldest first (input order among equal times)."""
        rows = self.journal.execute(
            "SELECT message_id, created_at, line, pending FROM notes_lines WHERE conversation_id = ? AND grp = ?"
            " ORDER BY created_at, seq", (conversation_id, group)
        ).fetchall()
        lines = []
        for message_id, created_at, line, pending in rows:
            try:
                when = datetime.fromisoformat(_text(self.journal, "notes_lines", "created_at", created_at))
            except ValueError:
                raise _corrupt(self.journal, "notes_lines", "created_at", created_at) from None
            if when.tzinfo is None:
                raise _corrupt(self.journal, "notes_lines", "created_at", created_at)
            lines.append(Line(_text(self.journal, "notes_lines", "message_id", message_id), when,
                              _text(self.journal, "notes_lines", "line", line),
                              _count(self.journal, "notes_lines", "pending", pending)))
        return lines

    def settle(self, conversation_id: str, written: Iterable[tuple[str, int]]) -> None:
        """The lines ``(message_id, records)`` reached Pipedrive: those records are no longer pending (records
        that came while they were being written stay pending)."""
        with self.journal.transaction():
            for message_id, records in written:
                self.journal.execute(
                    "UPDATE notes_lines SET pending = MAX(0, pending - ?) WHERE conversation_id = ? AND message_id = ?",
                    (records, conversation_id, message_id),
                )

    # -- parts -------------------------------------------------------------------------------------------

    def parts_of(self, conversation_id: str, group: str) -> dict[int, Part]:
        rows = self.journal.execute(
            "SELECT part, person_id, note_id, digest FROM notes_parts WHERE conversation_id = ? AND grp = ?",
            (conversation_id, group),
        ).fetchall()
        parts = {}
        for part, person_id, note_id, digest in rows:
            if digest is not None:
                _text(self.journal, "notes_parts", "digest", digest)
            parts[_count(self.journal, "notes_parts", "part", part)] = Part(
                _count(self.journal, "notes_parts", "person_id", person_id),
                _count(self.journal, "notes_parts", "note_id", note_id, optional=True),
                digest,
            )
        return parts

    def keep_part(self, conversation_id: str, group: str, part: int, person_id: int, note_id: int | None,
                  digest: str | None) -> None:
        """Journal a part's note (``note_id`` None: the "creating" mark, set before its POST)."""
        self.journal.execute("INSERT OR REPLACE INTO notes_parts VALUES (?, ?, ?, ?, ?, ?)",
                             (conversation_id, group, part, person_id, note_id, digest))

    def forget_parts(self, conversation_id: str, group: str, *, after: int = 0) -> None:
        """Drop the parts numbered above ``after`` (all of them by default)."""
        self.journal.execute("DELETE FROM notes_parts WHERE conversation_id = ? AND grp = ? AND part > ?",
                             (conversation_id, group, after))
