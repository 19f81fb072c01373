"""The persons the fake holds (Pipedrive's v2 ``/persons``): their checks, storage, and search.

Search, as the fake answers ``GET /api/v2/persons/search``:

- ``term`` is required: at least 2 characters, or 1 with ``exact_match`` (the spec's minimum), spaces at its ends
  not counted.
- ``fields`` is a comma list of ``name``, ``email``, ``phone``, ``notes`` (the contents of the person's notes)
  and ``custom_fields`` (the fake holds none: it never matches); by default all of them.
- ``exact_match=true``: a value matches when it equals the term as a whole; ``false`` (the default): when it
  contains the term. Names, emails and notes compare case-insensitively. Phones compare as given with every
  space removed from both sides (``+372 5555 5555`` matches ``+37255555555``), and nothing else normalised
  (``(555)`` is not ``555``).
- Results come oldest person first (``add_time``, then ``id``), ``limit`` (1 to 500, default 100) per page; the
  opaque ``additional_data.next_cursor`` names the last person of the page (so a person added or deleted between
  pages moves no other one), ``null`` on the last page.

``PATCH /api/v2/persons/{id}`` changes ``name``, ``emails`` or ``phones`` under the create checks. Each person
written is told to the webhooks (entity ``person``: create, change with the old values of the fields that changed,
``update_time`` aside, or delete); a person created through the API is owned by the token's user.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from ._deliveries import Changes, changed_fields
from ._envelopes import JsonDict, Refused
from ._notes import Notes
from ._params import path_id, query_flag, query_int

_SEARCH_FIELDS = ("name", "email", "phone", "notes", "custom_fields")
_ENTRY_KEYS = frozenset({"value", "primary", "label"})
_MAX_ENTRIES = 100  # emails or phones of one person: a bound on hostile input, far above any real person's
_MAX_LIMIT = 500
_VISIBLE_TO = 3  # "owner's visibility group and sub-groups", Pipedrive's default


def _v2_time(moment: datetime) -> str:
    """``2021-01-01T00:00:00Z``, as v2 answers times (UTC; a naive ``moment`` is taken as UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Persons:
    """The stored persons by id, as ``GET /api/v2/persons/{id}`` answers them, their operations, and their notes
    (searched with ``fields=notes``, deleted with their person).

    :param changes: told of each person and note written, and asked who writes it.
    """

    def __init__(self, changes: Changes) -> None:
        self.people: dict[int, JsonDict] = {}
        self.notes = Notes(self.people, changes)  # a note's person must be one of them
        self._changes = changes
        self._last_id = 0

    def add(
        self,
        name: str,
        emails: Iterable[JsonDict] = (),
        phones: Iterable[JsonDict] = (),
        add_time: datetime | None = None,
    ) -> JsonDict:
        """Store a person whose fields passed the checks; its id is the next one (ids only increase)."""
        self._last_id += 1
        created = _v2_time(add_time or datetime.now(timezone.utc))
        first, _, last = name.partition(" ")
        person: JsonDict = {
            "id": self._last_id,
            "name": name,
            "first_name": first,
            "last_name": last,
            "owner_id": self._changes.origin.user_id,
            "org_id": None,
            "add_time": created,
            "update_time": created,
            "emails": [dict(entry) for entry in emails],
            "phones": [dict(entry) for entry in phones],
            "is_deleted": False,
            "visible_to": _VISIBLE_TO,
            "label_ids": [],
            "picture_id": None,
            "custom_fields": {},
        }
        self.people[person["id"]] = person
        self._changes.changed("person", "create", person["id"], dict(person), None)
        return person

    def add_plain(self, name: str, phones: Iterable[str], emails: Iterable[str], add_time: datetime | None) -> int:
        """:meth:`FakePipedrive.add_person`: plain phones and emails (the first of each primary), checked as the
        endpoint checks them (``ValueError`` where it answers 400); the new person's id."""
        listed = {
            field: [{"value": value, "primary": index == 0} for index, value in enumerate(values)]
            for field, values in (("phones", phones), ("emails", emails))
        }
        try:
            if not name.strip():
                raise Refused("name", "is required: a non-empty string")
            checked = {field: _entries(listed, field) for field in listed}
        except Refused as refused:
            raise ValueError(f"the persons endpoint would refuse this person: {refused}") from None
        return int(self.add(name, checked["emails"], checked["phones"], add_time)["id"])

    def remove(self, person_id: int) -> None:
        """Delete a person and its notes.

        :raises KeyError: no such person.
        """
        person = self.people.pop(person_id)
        self.notes.forget(person_id)
        self._changes.changed("person", "delete", person_id, None, person)

    def merge(self, person_id: int, into_id: int) -> None:
        """Merge a person into another as Pipedrive's UI does: its notes, and the emails and phones the other lacks,
        move over, and it is deleted; told as its delete (``merged_to_id``), then the other's change
        (``merged_from_id``). The notes moved tell nothing."""
        gone, into = self.people.get(person_id), self.people.get(into_id)
        if gone is None or into is None:
            raise Refused("id", f"Person not found: no person {into_id if gone else person_id}", 404)
        if person_id == into_id:
            raise Refused("merge_with_id", "must be another person")
        before = dict(into)
        for field in ("emails", "phones"):
            known = {entry["value"] for entry in into[field]}
            into[field] = into[field] + [{**entry, "primary": False} for entry in gone[field]
                                         if entry["value"] not in known]
        self.notes.move(person_id, into_id)
        del self.people[person_id]
        into["update_time"] = _v2_time(datetime.now(timezone.utc))
        self._changes.changed("person", "delete", person_id, None, gone, merged_to_id=str(into_id))
        self._changes.changed("person", "change", into_id, dict(into),
                              changed_fields(before, into, ignore=("update_time",)), merged_from_id=str(person_id))

    # -- the operations ---------------------------------------------------------------------------------------

    def create(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, JsonDict]:
        if not isinstance(body, dict):
            raise Refused("body", "must be a JSON object")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise Refused("name", "is required: a non-empty string")
        emails, phones = _entries(body, "emails"), _entries(body, "phones")
        add_time = _add_time(body.get("add_time"))
        return 200, {"success": True, "data": self.add(name, emails, phones, add_time)}

    def get(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, JsonDict]:
        return 200, {"success": True, "data": self._find(path)}

    def update(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, JsonDict]:
        """``PATCH``: change the fields given (``name``, ``emails``, ``phones``), under the create checks."""
        person = self._find(path)
        if not isinstance(body, dict):
            raise Refused("body", "must be a JSON object")
        changes: JsonDict = {field: _entries(body, field) for field in ("emails", "phones") if field in body}
        if "name" in body:
            name = body["name"]
            if not isinstance(name, str) or not name.strip():
                raise Refused("name", "is required: a non-empty string")
            first, _, last = name.partition(" ")
            changes.update(name=name, first_name=first, last_name=last)
        before = dict(person)
        person.update(changes)
        previous = changed_fields(before, person, ignore=("update_time",))
        if previous:
            person["update_time"] = _v2_time(datetime.now(timezone.utc))
            self._changes.changed("person", "change", person["id"], dict(person), previous)
        return 200, {"success": True, "data": person}

    def delete(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, JsonDict]:
        person = self._find(path)
        self.remove(person["id"])
        return 200, {"success": True, "data": {"id": person["id"]}}

    def search(self, path: str, body: Any, query: Mapping[str, str]) -> tuple[int, JsonDict]:
        exact = query_flag(query, "exact_match")
        term = query.get("term", "").strip()
        if len(term) < (1 if exact else 2):
            raise Refused("term", f"is required: at least {1 if exact else 2} characters")
        fields = _fields(query.get("fields"))
        limit = query_int(query, "limit", 100, 1, _MAX_LIMIT)
        after = _cursor(query.get("cursor"))
        found = []
        for person in sorted(self.people.values(), key=_position):
            if after is not None and _position(person) <= after:
                continue
            score = self._score(person, term, fields, exact)
            if score is not None:
                found.append((person, score))
                if len(found) > limit:
                    break
        page, more = found[:limit], len(found) > limit
        next_cursor = _encode_cursor(_position(page[-1][0])) if more else None
        items = [{"result_score": score, "item": _search_item(person)} for person, score in page]
        return 200, {"success": True, "data": {"items": items}, "additional_data": {"next_cursor": next_cursor}}

    # -- helpers ----------------------------------------------------------------------------------------------

    def _find(self, path: str) -> JsonDict:
        person = self.people.get(path_id(path))
        if person is None:
            raise Refused("id", "Person not found", 404)
        return person

    def _score(self, person: JsonDict, term: str, fields: frozenset[str], exact: bool) -> float | None:
        """The best match of ``term`` among the person's values in ``fields``: 1.0 when equal, else the share of the
        value the term covers; None when nothing matches."""
        best: float | None = None
        for field in fields:
            wanted = _normal(field, term)
            for value in self._values(person, field):
                seen = _normal(field, value)
                if (seen == wanted) if exact else (wanted in seen):
                    best = max(best or 0.0, round(len(wanted) / max(len(seen), 1), 4))
        return best

    def _values(self, person: JsonDict, field: str) -> Iterable[str]:
        if field == "name":
            return (person["name"],)
        if field == "email":
            return (entry["value"] for entry in person["emails"])
        if field == "phone":
            return (entry["value"] for entry in person["phones"])
        if field == "notes":
            return self.notes.contents_of(person["id"])
        return ()  # custom_fields: the fake holds none


def _entries(body: JsonDict, field: str) -> list[JsonDict]:
    """``emails`` or ``phones``: a list of ``{value, primary, label}`` (only ``value`` required); stored with
    ``primary`` False and ``label`` ``"work"`` unless given."""
    given = body.get(field, [])
    if not isinstance(given, list):
        raise Refused(field, "must be a list of {value, primary, label}")
    if len(given) > _MAX_ENTRIES:
        raise Refused(field, f"must hold at most {_MAX_ENTRIES} entries")
    checked = []
    for index, entry in enumerate(given):
        where = f"{field}[{index}]"
        if not isinstance(entry, dict):
            raise Refused(where, "must be an object {value, primary, label}")
        extra = sorted(entry.keys() - _ENTRY_KEYS)
        if extra:
            raise Refused(f"{where}.{extra[0][:40]}", "is not a field of an entry (value, primary, label)")
        value, primary, label = entry.get("value"), entry.get("primary", False), entry.get("label", "work")
        if not isinstance(value, str) or not value.strip():
            raise Refused(f"{where}.value", "is required: a non-empty string")
        if not isinstance(primary, bool):
            raise Refused(f"{where}.primary", "must be a boolean")
        if not isinstance(label, str):
            raise Refused(f"{where}.label", "must be a string")
        checked.append({"value": value, "primary": primary, "label": label})
    return checked


def _add_time(value: object) -> datetime | None:
    """A person's optional ``add_time``: ``YYYY-MM-DDTHH:MM:SSZ`` or ``YYYY-MM-DD HH:MM:SS``, UTC."""
    if value is None:
        return None
    for shape in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M:%S"):
        try:
            if isinstance(value, str):
                return datetime.strptime(value, shape)
        except ValueError:
            continue
    raise Refused("add_time", "must be a UTC time, YYYY-MM-DDTHH:MM:SSZ or YYYY-MM-DD HH:MM:SS")


def _position(person: JsonDict) -> tuple[str, int]:
    return person["add_time"], person["id"]


def _normal(field: str, value: str) -> str:
    return "".join(value.split()) if field == "phone" else value.casefold()


def _fields(value: str | None) -> frozenset[str]:
    if value is None:
        return frozenset(_SEARCH_FIELDS)
    fields = frozenset(part.strip() for part in value.split(","))
    unknown = sorted(fields - set(_SEARCH_FIELDS))
    if unknown:
        raise Refused("fields", f"must be a comma list of {', '.join(_SEARCH_FIELDS)}; got {unknown[0][:40]!r}")
    return fields


def _encode_cursor(position: tuple[str, int]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(position)).encode()).decode().rstrip("=")


def _cursor(value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    try:
        add_time, person_id = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        if isinstance(add_time, str) and type(person_id) is int:
            return add_time, person_id
    except (ValueError, TypeError, RecursionError):  # binascii.Error and bad JSON are ValueErrors
        pass
    raise Refused("cursor", "is not a cursor this search answered")


def _search_item(person: JsonDict) -> JsonDict:
    """A search result's ``item``: phones and emails as plain strings, as the spec shows them."""
    return {
        "id": person["id"],
        "type": "person",
        "name": person["name"],
        "phones": [entry["value"] for entry in person["phones"]],
        "emails": [entry["value"] for entry in person["emails"]],
        "visible_to": person["visible_to"],
        "owner": {"id": person["owner_id"]},
        "organization": None,
        "custom_fields": [],
        "notes": [],
    }
