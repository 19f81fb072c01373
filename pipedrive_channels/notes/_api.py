"""The Pipedrive calls the notes target makes (v2 persons, v1 notes), and the checks of their answers.

Every call goes through ``client.request``: the client's budget, retry policy and OAuth session, at the run's
priority, with the time left before its deadline as the call's ``timeout``. An answer of an odd shape is an
:class:`~pipedrive_channels.errors.ApiError` naming the field, never a ``KeyError``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..budget import Priority
from ..errors import ApiError
from ..models import ApiResponse

if TYPE_CHECKING:
    from ..client import ChannelsClient

__all__ = ["MAX_LISTED_NOTES", "SEARCH_LIMIT", "Api"]

SEARCH_LIMIT = 100
"""Persons read from a search's first page (its default page size): the oldest of them is taken."""

MAX_LISTED_NOTES = 10_000
"""The most notes of one person read when looking for a note a crashed run may have created (20 pages)."""

_NOTES_PAGE = 500


async def aclosing_of(iterator: Any) -> None:
    """Close an async generator left early (the pages not read are never fetched)."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


def _odd(answer: ApiResponse, what: str, field: str, value: Any) -> ApiError:
    return ApiError(answer.status, f"unexpected answer to {what}: {field} is {str(value)[:80]!r}",
                    body={"data": answer.data}, headers=answer.headers)


def _id_of(answer: ApiResponse, what: str, value: Any, field: str = "data.id") -> int:
    if type(value) is not int or value <= 0:
        raise _odd(answer, what, field, value)
    return value


class Api:
    """One client's calls at one priority, each bounded by the run's deadline."""

    def __init__(self, client: ChannelsClient, priority: Priority, deadline: float | None) -> None:
        self.client = client
        self.priority = priority
        self.deadline = deadline

    async def _request(self, method: str, path: str, *, version: str = "v1", params: Mapping[str, Any] | None = None,
                       json: Any = None) -> ApiResponse:
        timeout = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        return await self.client.request(method, path, version=version, params=params, json=json,
                                         priority=self.priority, timeout=timeout)

    async def search_persons(self, field: str, term: str) -> list[int]:
        """The ids of the persons whose ``field`` (phone, email or name) is exactly ``term``, first page only."""
        what = "GET /persons/search"
        answer = await self._request("GET", "/persons/search", version="v2", params={
            "term": term, "fields": field, "exact_match": True, "limit": SEARCH_LIMIT})
        data = answer.data
        if data is None:
            return []
        if not isinstance(data, dict):
            raise _odd(answer, what, "data", data)
        items = data.get("items")
        if items is None:
            return []
        if not isinstance(items, list):
            raise _odd(answer, what, "data.items", items)
        ids = []
        for index, entry in enumerate(items[:SEARCH_LIMIT]):
            item = entry.get("item") if isinstance(entry, dict) else None
            if not isinstance(item, dict):
                raise _odd(answer, what, f"data.items[{index}].item", item)
            ids.append(_id_of(answer, what, item.get("id"), f"data.items[{index}].item.id"))
        return ids

    async def create_person(self, name: str, phone: str | None, email: str | None) -> int:
        """``POST /persons`` (v2): the new person's id."""
        body: dict[str, Any] = {"name": name}
        if phone is not None:
            body["phones"] = [{"value": phone, "primary": True, "label": "mobile"}]
        if email is not None:
            body["emails"] = [{"value": email, "primary": True, "label": "work"}]
        answer = await self._request("POST", "/persons", version="v2", json=body)
        return self._new_id(answer, "POST /persons")

    async def create_note(self, person_id: int, content: str, add_time: str) -> int:
        """``POST /notes`` (v1) on the person: the new note's id."""
        answer = await self._request("POST", "/notes", json={
            "content": content, "person_id": person_id, "add_time": add_time})
        return self._new_id(answer, "POST /notes")

    async def update_note(self, note_id: int, content: str, add_time: str) -> None:
        """``PUT /notes/{id}`` (v1): its content and its ``add_time`` (an earlier line may have come late)."""
        await self._request("PUT", self.client.path("/notes/{id}", id=note_id),
                            json={"content": content, "add_time": add_time})

    async def delete_note(self, note_id: int) -> None:
        await self._request("DELETE", self.client.path("/notes/{id}", id=note_id))

    async def notes_of(self, person_id: int) -> dict[int, str]:
        """``{note id: content}`` of the person's notes, at most :data:`MAX_LISTED_NOTES` of them."""
        what = "GET /notes"
        timeout = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        notes: dict[int, str] = {}
        pages = self.client.paginate("/notes", params={"person_id": person_id, "limit": _NOTES_PAGE},
                                     priority=self.priority, timeout=timeout)
        try:
            async for note in pages:
                if not isinstance(note, dict):
                    raise ApiError(200, f"unexpected answer to {what}: data[] holds a {type(note).__name__}")
                note_id, content = note.get("id"), note.get("content")
                if type(note_id) is not int or not isinstance(content, str):
                    raise ApiError(200, f"unexpected answer to {what}: data[].id or data[].content is missing "
                                        f"or not an integer and a string")
                notes[note_id] = content
                if len(notes) >= MAX_LISTED_NOTES:
                    break
        finally:
            await aclosing_of(pages)
        return notes

    @staticmethod
    def _new_id(answer: ApiResponse, what: str) -> int:
        data = answer.data
        if not isinstance(data, dict):
            raise _odd(answer, what, "data", data)
        return _id_of(answer, what, data.get("id"))
