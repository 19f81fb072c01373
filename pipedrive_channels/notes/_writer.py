"""Writing one group's transcript (a conversation's day, or the whole conversation) as notes on its person.

A group's pending lines are rendered into its notes' contents; a part is created (``POST /v1/notes``, with the
``add_time`` of its first line) or updated (``PUT /v1/notes/{id}``) only when its content changed, since tokens
are what bound a back-fill. No note is ever created twice: a part is marked "creating" in the journal before its
POST, and a later write that finds the mark without a note id looks the note up among the person's notes by its
header (:func:`header_of`) before creating one. A 404 (the person deleted meanwhile) forgets the cached person,
resolves the contact again once and writes fresh notes. Any other failure of the conversation (its contact
unresolved, a 400 with the server's reason, retries exhausted) is reported through the run's
:class:`~pipedrive_channels.Outcome` and its lines stay pending in the journal, so a re-run writes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Sequence
from datetime import datetime

from .._target import Outcome
from ..errors import ApiError, NotFoundError, TransportError, ValidationError
from ._api import Api
from ._keyed import KeyedLock
from ._people import People, UnresolvedContactError
from ._state import Line, NotesState, Part
from ._tally import Counts
from ._transcript import add_time_of, contents_of, header_of

__all__ = ["RECORD_ERRORS", "Writer"]

_log = logging.getLogger("pipedrive_channels")

RECORD_ERRORS = (ApiError, TransportError, ValidationError, UnresolvedContactError)
"""What fails a conversation's records (the run goes on); a spent budget, the deadline and the rest propagate."""


def _digest(content: str) -> str:
    return hashlib.blake2b(content.encode(), digest_size=16).hexdigest()


def _starts(contents: Sequence[str], lines: Sequence[Line]) -> list[datetime]:
    """The ``created_at`` of each note's first line. Text is escaped, so ``<p>`` opens only the header and each
    line (a cut line keeps it): a note holds its count minus one lines."""
    starts, index = [], 0
    for content in contents:
        starts.append(lines[min(index, len(lines) - 1)].created_at)
        index += content.count("<p>") - 1
    return starts


class Writer:
    """Writes groups, one task at a time per group; see the module docstring."""

    def __init__(self, state: NotesState, people: People, counts: Counts, outcome: Outcome) -> None:
        self.state = state
        self.people = people
        self.counts = counts
        self.outcome = outcome
        self.in_backfill = False
        """In a back-fill a failed conversation is reported to the run and not tried again in it (its later records
        fail too); live, it is logged and tried again at its next write."""
        self._groups = KeyedLock()
        self._failed: dict[str, str] = {}  # conversation -> why it failed, this run
        self._reported: dict[tuple[str, str], int] = {}  # (conversation, message id) -> records reported failed

    async def write(self, api: Api, conversation_id: str, group: str) -> None:
        """Write a group's pending lines (nothing when none is pending), and report what became of their records."""
        async with self._groups.hold((conversation_id, group)):
            lines = self.state.lines_of(conversation_id, group)
            pending = [(line.message_id, line.pending) for line in lines if line.pending]
            if not pending:
                return
            reason = self._failed.get(conversation_id)
            if reason is None:
                try:
                    await self._write(api, conversation_id, group, lines)
                except RECORD_ERRORS as error:
                    reason = f"conversation {conversation_id!r}: {error}"
                    if self.in_backfill:
                        self._failed[conversation_id] = reason
                    _log.warning("the notes of conversation %r (%s) were not written; its lines stay pending: %s",
                                 conversation_id, group or "all days", error)
                else:
                    self.state.settle(conversation_id, pending)
                    for message_id, _ in pending:
                        self._reported.pop((conversation_id, message_id), None)
                    self.outcome.delivered(sum(records for _, records in pending))
                    return
            self._report_failed(conversation_id, pending, reason)

    def forget_failures(self) -> None:
        """A new run tries every conversation again."""
        self._failed.clear()
        self._reported.clear()

    def _report_failed(self, conversation_id: str, pending: list[tuple[str, int]], reason: str) -> None:
        if not self.in_backfill:
            return  # live: logged above; no run counts records
        for message_id, records in pending:
            key = (conversation_id, message_id)
            new = records - self._reported.get(key, 0)
            if new > 0:
                self._reported[key] = records
                self.outcome.failed(message_id, reason, records=new)

    async def _write(self, api: Api, conversation_id: str, group: str, lines: Sequence[Line]) -> None:
        contact = self.state.contact_of(conversation_id)
        if contact is None:
            raise UnresolvedContactError("none of its records carried a contact, so it has no person to go on")
        person = await self.people.resolve(api, contact)
        contents = contents_of(conversation_id, group, [line.line for line in lines])
        starts = _starts(contents, lines)
        try:
            await self._put(api, conversation_id, group, person, contents, starts)
        except NotFoundError:
            # The person (and so its notes) was deleted meanwhile: find or create it again, once, and write anew.
            if self.people.forget(contact, person):
                person = await self.people.resolve(api, contact)
            self.state.forget_parts(conversation_id, group)
            await self._put(api, conversation_id, group, person, contents, starts)

    async def _put(self, api: Api, conversation_id: str, group: str, person: int, contents: Sequence[str],
                   starts: Sequence[datetime]) -> None:
        """Create or update each part whose content changed; delete parts no longer needed."""
        parts = self.state.parts_of(conversation_id, group)
        listed: dict[int, str] | None = None  # the person's notes, read once if a crashed POST must be looked up
        for number, content in enumerate(contents, start=1):
            digest, add_time = _digest(content), add_time_of(starts[number - 1])
            part = parts.get(number)
            if part is not None and part.person_id != person:
                part = None  # on a person since replaced (deleted meanwhile): written fresh on the new one
            if part is not None and part.note_id is None:  # a POST a crashed run started: did it create the note?
                if listed is None:
                    listed = await api.notes_of(person)
                part = self._adopt(conversation_id, group, number, person, listed, content)
            if part is None or part.note_id is None:
                self.state.keep_part(conversation_id, group, number, person, None, None)  # the "creating" mark
                note_id = await api.create_note(person, content, add_time)
                self.state.keep_part(conversation_id, group, number, person, note_id, digest)
                self.counts.notes_created += 1
            elif part.digest != digest:
                await api.update_note(part.note_id, content, add_time)
                self.state.keep_part(conversation_id, group, number, person, part.note_id, digest)
                self.counts.notes_updated += 1
        for number in sorted(parts):  # a rewritten line got shorter: fewer parts hold the group now
            part = parts[number]
            if number > len(contents) and part.note_id is not None and part.person_id == person:
                with contextlib.suppress(NotFoundError):  # already gone
                    await api.delete_note(part.note_id)
        self.state.forget_parts(conversation_id, group, after=len(contents))

    def _adopt(self, conversation_id: str, group: str, number: int, person: int, listed: dict[int, str],
               content: str) -> Part | None:
        """The note a crashed run created for this part (found by its header), journalled; None if there is none."""
        header = header_of(conversation_id, group, number)
        found = sorted(note_id for note_id, text in listed.items() if text.startswith(header))
        if not found:
            return None
        digest = _digest(content) if listed[found[0]] == content else None  # else updated below
        _log.info("adopted note %d of conversation %r (%s), created by an earlier run", found[0], conversation_id,
                  group or "all days")
        self.state.keep_part(conversation_id, group, number, person, found[0], digest)
        return Part(person, found[0], digest)
