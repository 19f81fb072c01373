"""Who a conversation's notes go on: a :class:`Contact` resolved to a Pipedrive person id.

``person_id`` is used as given. Otherwise the person is searched (v2 ``GET /persons/search``, exact match) by
phone, then by email, and created (v2 ``POST /persons``) when none matches and ``create_persons`` is set. Each
distinct contact is resolved once for the run and across resumes (the journal keeps the person), one task at a
time (others resolving the same contact wait for it). Several exact matches: the oldest person (the lowest id)
is taken, logged once. A crash between a person's POST and journalling it leaves a mark, so the next run finds
that person by search (by name, for a contact with only a name) instead of creating a second one.
"""

from __future__ import annotations

import json
import logging

from ..errors import PipedriveError
from ._api import Api
from ._contact import Contact
from ._keyed import KeyedLock
from ._state import NotesState
from ._tally import Counts

__all__ = ["People", "UnresolvedContactError", "contact_key"]

_log = logging.getLogger("pipedrive_channels")


class UnresolvedContactError(PipedriveError):
    """A conversation's records have no person to go on: none of them carried a contact, or the contact matches
    no person and ``create_persons`` is False."""


def contact_key(contact: Contact) -> str:
    """What identifies a contact's person: the phone and email searched by (the name only when there are none)."""
    name = contact.name if contact.phone is None and contact.email is None else None
    return json.dumps([contact.phone, contact.email, name])


class People:
    """Resolves contacts to person ids through the journal's cache; see the module docstring."""

    def __init__(self, state: NotesState, counts: Counts, *, create_persons: bool) -> None:
        self.state = state
        self.counts = counts
        self.create_persons = create_persons
        self._flights = KeyedLock()
        self._unresolved: dict[str, str] = {}  # this run's contacts that matched no one: not searched again

    def forget_failures(self) -> None:
        """A new run searches again for the contacts that matched no one."""
        self._unresolved.clear()

    async def resolve(self, api: Api, contact: Contact) -> int:
        """The contact's person id: given, cached, found or created.

        :raises UnresolvedContactError: none matches and ``create_persons`` is False.
        """
        if contact.person_id is not None:
            return contact.person_id
        key = contact_key(contact)
        async with self._flights.hold(key):
            if key in self._unresolved:
                raise UnresolvedContactError(self._unresolved[key])
            known, person_id = self.state.person(key)
            if person_id is not None:
                return person_id
            person_id = await self._search(api, contact, by_name=known)
            if person_id is not None:
                self.state.keep_person(key, person_id)
                self.counts.persons_found += 1
                return person_id
            if not self.create_persons:
                reason = (f"no Pipedrive person matches the contact's {_fields(contact)} exactly, and "
                          f"create_persons is False")
                self._unresolved[key] = reason
                self.counts.persons_failed += 1
                raise UnresolvedContactError(reason)
            self.state.creating_person(key)  # the mark: a crash before the id is journalled searches first
            name = contact.name or contact.phone or contact.email or ""
            person_id = await api.create_person(name, contact.phone, contact.email)
            self.state.keep_person(key, person_id)
            self.counts.persons_created += 1
            return person_id

    def forget(self, contact: Contact, person_id: int) -> bool:
        """Drop ``person_id`` as the contact's person (it was deleted meanwhile), unless another write already
        replaced it; False for a given ``person_id`` (nothing to resolve again)."""
        if contact.person_id is not None:
            return False
        key = contact_key(contact)
        if self.state.person(key)[1] == person_id:
            self.state.forget_person(key)
        return True

    async def _search(self, api: Api, contact: Contact, *, by_name: bool) -> int | None:
        """The oldest person matching the contact's phone, else its email (else its name, when a crashed run may
        have created the person of a name-only contact), or None."""
        searches = [("phone", contact.phone), ("email", contact.email)]
        if by_name and contact.phone is None and contact.email is None:
            searches.append(("name", contact.name))
        for field, term in searches:
            if term is None:
                continue
            ids = await api.search_persons(field, term)
            if len(ids) > 1:
                _log.warning("a contact's %s matches %d Pipedrive persons (ids %s); its notes go on the oldest, %d",
                             field, len(ids), ", ".join(map(str, sorted(ids)[:10])), min(ids))
            if ids:
                return min(ids)
        return None


def _fields(contact: Contact) -> str:
    fields = [name for name in ("phone", "email") if getattr(contact, name) is not None]
    return " or ".join(fields) if fields else "name (a contact with only a name is never searched)"
