"""The notes the fake holds (Pipedrive's v1 ``/notes``): their checks, storage and listing.

A note's ``content`` is stored exactly as sent (Pipedrive sanitises HTML; the fake keeps what the client sent, so a
test sees what it wrote): a non-empty string of at most 100,000 characters (Python ``len``, code points). A note
belongs to exactly one of ``person_id``, ``deal_id``, ``org_id``, ``lead_id``, ``project_id``; a ``person_id``
must name a stored person (404 otherwise), the others are taken as given (the fake holds no deals). ``add_time`` is
``YYYY-MM-DD HH:MM:SS`` (UTC), now by default; ``update_time`` is set at each write.

``GET /v1/notes`` lists newest first (``add_time`` then ``id``, both descending), as the spec says Pipedrive shows
notes, unless ``sort`` says otherwise (``id``, ``add_time`` or ``update_time``, each ``ASC`` or ``DESC``, comma
separated); it filters by any of the owner ids and pages by offset (``start``, ``limit`` 1 to 500, default 100).

Each note written is told to the webhooks (entity ``note``): a create, a change (``previous``: the fields whose
value changed, ``update_time`` and ``last_update_user_id`` aside; a write that changes nothing tells nothing) or a
delete. Its ``user_id`` is the user who makes the change (the token's user through the API). The notes deleted
with their person tell nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

from ._deliveries import Changes, changed_fields
from ._envelopes import JsonDict, Refused
from ._params import path_id, query_int

_MAX_CONTENT = 100_000
_OWNERS = ("person_id", "deal_id", "org_id", "lead_id", "project_id")
_SORTABLE = ("id", "add_time", "update_time")
_TIME = "%Y-%m-%d %H:%M:%S"
_TIME_SHAPE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_MAX_LIMIT = 500


def _now() -> str:
    return datetime.now(timezone.utc).strftime(_TIME)


class Notes:
    """The stored notes by id, each as answered but for its ``person`` (added from the person at each answer).

    :param people: the stored persons by id (a note's person must be one of them).
    :param changes: told of each note written, and asked who writes it.
    """

    def __init__(self, people: Mapping[int, JsonDict], changes: Changes) -> None:
        self.notes: dict[int, JsonDict] = {}
        self._people = people
        self._changes = changes
        self._last_id = 0

    def contents_of(self, person_id: int) -> Iterator[str]:
        """The contents of a person's notes."""
        return (note["content"] for note in self.notes.values() if note["person_id"] == person_id)

    def move(self, person_id: int, into_id: int) -> None:
        """Give a person's notes to another (the person is merged into it)."""
        for note in self.notes.values():
            if note["person_id"] == person_id:
                note["person_id"] = into_id

    def forget(self, person_id: int) -> None:
        """Delete a person's notes (the person is deleted)."""
        for note_id in [key for key, note in self.notes.items() if note["person_id"] == person_id]:
            del self.notes[note_id]

    # -- the operations ---------------------------------------------------------------------------------------

    def create(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, JsonDict]:
        body = _object(body)
        content = _content(body.get("content"))
        owners = {key: body[key] for key in _OWNERS if body.get(key) is not None}
        if len(owners) != 1:
            raise Refused("person_id", f"exactly one of {', '.join(_OWNERS)} is required, got {len(owners)}")
        owner = self._owner(owners)
        add_time = _add_time(body.get("add_time")) or _now()
        self._last_id += 1
        user_id = self._changes.origin.user_id
        note: JsonDict = {
            "id": self._last_id,
            "active_flag": True,
            "add_time": add_time,
            "update_time": _now(),
            "content": content,
            **dict.fromkeys(_OWNERS),
            **owner,
            "user_id": user_id,
            "last_update_user_id": user_id,
            **dict.fromkeys(("pinned_to_person_flag", "pinned_to_deal_flag", "pinned_to_organization_flag",
                             "pinned_to_lead_flag", "pinned_to_project_flag"), False),
        }
        self.notes[note["id"]] = note
        answer = self._answer(note)
        self._changes.changed("note", "create", note["id"], answer, None)
        return 200, {"success": True, "data": answer}

    def get(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, JsonDict]:
        return 200, {"success": True, "data": self._answer(self._find(path))}

    def update(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, JsonDict]:
        """``PUT``: change the fields given (``content``, ``add_time``, an owner id), under the create rules."""
        note = self._find(path)
        body = _object(body)
        changes: JsonDict = {}
        if "content" in body:
            changes["content"] = _content(body["content"])
        owners = {key: body[key] for key in _OWNERS if body.get(key) is not None}
        if len(owners) > 1:
            raise Refused("person_id", f"at most one of {', '.join(_OWNERS)} may be given, got {len(owners)}")
        if owners:
            changes.update(dict.fromkeys(_OWNERS), **self._owner(owners))
        if (add_time := _add_time(body.get("add_time"))) is not None:
            changes["add_time"] = add_time
        before = self._answer(note)
        note.update(changes, update_time=_now(), last_update_user_id=self._changes.origin.user_id)
        answer = self._answer(note)
        previous = changed_fields(before, answer, ignore=("update_time", "last_update_user_id"))
        if previous:
            self._changes.changed("note", "change", note["id"], answer, previous)
        return 200, {"success": True, "data": answer}

    def delete(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, JsonDict]:
        note = self.notes.pop(self._find(path)["id"])
        self._changes.changed("note", "delete", note["id"], None, self._answer(note))
        return 200, {"success": True, "data": True}

    def listing(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, JsonDict]:
        wanted = {key: _owner_filter(query, key) for key in _OWNERS if key in query}
        start = query_int(query, "start", 0, 0)
        limit = query_int(query, "limit", 100, 1, _MAX_LIMIT)
        order = _sort(query.get("sort"))
        found = [note for note in self.notes.values() if all(note[key] == value for key, value in wanted.items())]
        for key, descending in reversed(order):  # stable sorts, last key first
            found.sort(key=lambda note: note[key], reverse=descending)
        page, more = found[start : start + limit], start + limit < len(found)
        pagination: JsonDict = {"start": start, "limit": limit, "more_items_in_collection": more}
        if more:
            pagination["next_start"] = start + limit
        data = [self._answer(note) for note in page]
        return 200, {"success": True, "data": data, "additional_data": {"pagination": pagination}}

    # -- helpers ----------------------------------------------------------------------------------------------

    def _find(self, path: str) -> JsonDict:
        note = self.notes.get(path_id(path))
        if note is None:  # deleted, or its person was: a person takes its notes along
            raise Refused("id", "Note not found", 404)
        return note

    def _owner(self, owners: JsonDict) -> JsonDict:
        ((key, value),) = owners.items()
        if key == "lead_id":
            if not isinstance(value, str) or not value.strip():
                raise Refused(key, "must be a lead's uuid")
        elif type(value) is not int or value < 1:
            raise Refused(key, f"must be a positive integer, got {value!r:.40}")
        if key == "person_id" and value not in self._people:
            raise Refused(key, f"Person not found: no person {value}", 404)
        return {key: value}

    def _answer(self, note: JsonDict) -> JsonDict:
        person = self._people.get(note["person_id"]) if note["person_id"] is not None else None
        return {**note, "person": None if person is None else {"name": person["name"]}}


def _object(body: Any) -> JsonDict:
    if not isinstance(body, dict):
        raise Refused("body", "must be a JSON object")
    return body


def _content(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Refused("content", "is required: a non-empty string")
    if len(value) > _MAX_CONTENT:
        raise Refused("content", f"must be at most {_MAX_CONTENT} characters, got {len(value)}")
    return value


def _add_time(value: object) -> str | None:
    if value is None:
        return None
    try:
        if isinstance(value, str) and _TIME_SHAPE.fullmatch(value):
            return datetime.strptime(value, _TIME).strftime(_TIME)
    except ValueError:  # e.g. month 13
        pass
    raise Refused("add_time", f"must be YYYY-MM-DD HH:MM:SS (UTC), got {value!r:.40}")


def _owner_filter(query: Mapping[str, str], key: str) -> object:
    return query[key] if key == "lead_id" else query_int(query, key, 0, 1)


def _sort(value: str | None) -> list[tuple[str, bool]]:
    """``[(field, descending), ...]``; by default newest first, ties by id."""
    if value is None:
        return [("add_time", True), ("id", True)]
    order = []
    for part in value.split(","):
        field, _, direction = part.strip().partition(" ")
        direction = direction.strip().upper() or "ASC"
        if field not in _SORTABLE or direction not in ("ASC", "DESC"):
            raise Refused("sort", f"must be a comma list of 'field ASC|DESC' on {', '.join(_SORTABLE)}")
        order.append((field, direction == "DESC"))
    return order
