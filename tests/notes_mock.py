"""A small stateful stand-in for Pipedrive's v2 persons and v1 notes, on aioresponses, for the notes target's unit
tests (the integration tests use ``FakePipedrive``)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from aioresponses import CallbackResult, aioresponses
from yarl import URL

from pipedrive_channels import ChannelsClient, RateBudget, RetryPolicy

BASE = "https://pd.test/v1"


def client() -> ChannelsClient:
    """A client of the mock: no budget waits, no retries."""
    return ChannelsClient("token", base_url=BASE, budget=RateBudget.unlimited(), retry=RetryPolicy.none())


class MockPipedrive:
    """Persons and notes kept in dicts; ``calls`` lists ``(method, path)`` of every request; ``fail`` queues
    ``(method, path prefix, status, body)`` answers given instead of the next matching request."""

    def __init__(self, mock: aioresponses) -> None:
        self.persons: dict[int, dict[str, Any]] = {}
        self.notes: dict[int, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail: list[tuple[str, str, int, Any]] = []
        self.noted = asyncio.Event()
        """Set when a note is created or updated."""
        self._next = 100
        routes = [
            ("GET", r"/api/v2/persons/search", self._search),
            ("POST", r"/api/v2/persons", self._create_person),
            ("POST", r"/v1/notes", self._create_note),
            ("PUT", r"/v1/notes/\d+", self._update_note),
            ("DELETE", r"/v1/notes/\d+", self._delete_note),
            ("GET", r"/v1/notes", self._list_notes),
        ]
        for method, path, handler in routes:
            pattern = re.compile(r"https://pd\.test" + path + r"(\?.*)?$")
            mock.add(pattern, method, callback=self._route(method, handler), repeat=True)

    def add_person(self, name: str, phone: str | None = None, email: str | None = None) -> int:
        self._next += 1
        self.persons[self._next] = {"id": self._next, "name": name, "phones": [phone] if phone else [],
                                    "emails": [email] if email else []}
        return self._next

    def count(self, method: str, path: str) -> int:
        return sum(1 for call in self.calls if call == (method, path) or (call[0] == method and
                                                                          call[1].startswith(path + "/")))

    def notes_of(self, person_id: int) -> list[dict[str, Any]]:
        return [note for note in self.notes.values() if note["person_id"] == person_id]

    def _route(self, method: str, handler: Any) -> Any:
        def callback(url: URL, **kwargs: Any) -> CallbackResult:
            url = URL(str(url))
            self.calls.append((method, url.path))
            for index, (m, prefix, status, body) in enumerate(self.fail):
                if m == method and url.path.startswith(prefix):
                    del self.fail[index]
                    return CallbackResult(status=status, payload=body)
            data = kwargs.get("data")
            body = json.loads(data) if data else None
            query = dict(url.query)
            query.update({key: str(value) for key, value in (kwargs.get("params") or {}).items()})
            result: CallbackResult = handler(url, query, body)
            return result
        return callback

    @staticmethod
    def _ok(data: Any, status: int = 200, additional: Any = None) -> CallbackResult:
        return CallbackResult(status=status, payload={"success": True, "data": data, "additional_data": additional})

    def _search(self, url: URL, query: dict[str, str], body: Any) -> CallbackResult:
        field, term = query["fields"], query["term"]
        assert query["exact_match"] == "true"
        key = {"phone": "phones", "email": "emails", "name": "name"}[field]
        found = [person for person in self.persons.values()
                 if (term == person["name"] if key == "name" else term in person[key])]
        return self._ok({"items": [{"result_score": 1, "item": person} for person in found]})

    def _create_person(self, url: URL, query: dict[str, str], body: Any) -> CallbackResult:
        phones = [entry["value"] for entry in body.get("phones", [])]
        emails = [entry["value"] for entry in body.get("emails", [])]
        person_id = self.add_person(body["name"], *(phones or [None]), *(emails or [None]))
        return self._ok(self.persons[person_id], 201)

    def _create_note(self, url: URL, query: dict[str, str], body: Any) -> CallbackResult:
        if body["person_id"] not in self.persons:
            return CallbackResult(status=404, payload={"success": False, "error": "Person not found"})
        self._next += 1
        self.notes[self._next] = {"id": self._next, **body}
        self.noted.set()
        return self._ok(self.notes[self._next], 201)

    def _update_note(self, url: URL, query: dict[str, str], body: Any) -> CallbackResult:
        note = self.notes.get(int(url.path.rsplit("/", 1)[1]))
        if note is None or note["person_id"] not in self.persons:
            return CallbackResult(status=404, payload={"success": False, "error": "Note not found"})
        note.update(body)
        return self._ok(note)

    def _delete_note(self, url: URL, query: dict[str, str], body: Any) -> CallbackResult:
        self.notes.pop(int(url.path.rsplit("/", 1)[1]), None)
        return self._ok({"id": int(url.path.rsplit("/", 1)[1])})

    def _list_notes(self, url: URL, query: dict[str, str], body: Any) -> CallbackResult:
        found = self.notes_of(int(query["person_id"]))
        return self._ok(found, additional={"pagination": {"more_items_in_collection": False}})

    def delete_person(self, person_id: int) -> None:
        del self.persons[person_id]
        for note_id in [note["id"] for note in self.notes_of(person_id)]:
            del self.notes[note_id]


async def until(condition: Callable[[], bool]) -> None:
    """Return once ``condition()`` holds (the caller bounds the wait): for what has no event to wait for."""
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(0.01)


def mocked() -> Iterator[MockPipedrive]:
    with aioresponses() as mock:
        yield MockPipedrive(mock)
