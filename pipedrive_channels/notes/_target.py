"""``NotesTarget``: conversations delivered as transcript notes on the matched Pipedrive person.

Every record's line is journalled first (``deliver`` returns once it is safe) and notes are written later, many
records in one write, since tokens are what bound a back-fill:

- **In a back-fill** (the run calls ``attach``): when the input moves past a day (the highest day seen advanced),
  every dirty group of the earlier days is written, all at that moment, so late status updates to an old day cost
  one update per boundary at most; at ``flush`` (the run's end) every dirty group. With ``group_by="conversation"``
  a conversation's note is written at the end, once.
- **Live** (a service or a bot, ``async with``): a dirty group is written ``linger`` seconds after it became dirty
  by one background task, so a burst in one conversation becomes one write; the trade-off is that a note is
  updated at most once per ``linger``. ``linger=None`` writes at once, in ``deliver``. ``flush`` (and leaving
  ``async with``) writes everything now and stops the background task.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from .._journal import Checkpoint
from .._target import Outcome
from ..budget import Priority
from ..costs import operation_cost
from ..errors import BudgetExhaustedError, ValidationError
from ..models import Message
from ._api import Api
from ._contact import Contact
from ._linger import Group, Linger
from ._people import People, contact_key
from ._state import NotesState
from ._tally import Counts
from ._transcript import MAX_NOTE_CHARS, GroupBy, group_of, header_of, line_of
from ._writer import Writer

if TYPE_CHECKING:
    from ..client import ChannelsClient

__all__ = ["NotesTarget"]

_log = logging.getLogger("pipedrive_channels")

_WRITERS = 8
"""Groups written at once at a day boundary or a flush (the budget paces the calls in any case)."""


class _Unreported:
    """The outcome of a live target: nothing counts records (failures are logged by the writer)."""

    def delivered(self, records: int = 1) -> None:
        pass

    def failed(self, message_id: str | None, reason: str, records: int = 1) -> None:
        pass


class NotesTarget:
    """Delivers conversations as notes (v1 ``/notes``) on the person matched by phone or email (v2 persons).

    For a back-fill: ``await backfill(client, messages, target=NotesTarget(), checkpoint="run.db")``. For a live
    service::

        async with NotesTarget(journal="notes.db") as target:
            await target.deliver(client, message, contact=Contact(phone="+3725550000"))

    A conversation whose notes cannot be written (no contact, one that matches no person without
    ``create_persons``, a 400 with the server's reason, retries exhausted) fails its records in the run's report
    (live: logged); its lines stay pending in the journal, and a re-run (live: the next write) writes them.

    :param create_persons: create the person when no one matches the contact (else its records fail).
    :param group_by: ``"day"``: one note per conversation per UTC day; ``"conversation"``: one per conversation
        (either continues in a new note past 100,000 characters).
    :param journal: outside a back-fill, where the state is kept: a SQLite file's path or an open connection
        (``None``: in memory, lost at exit), held (locked) until :meth:`aclose`. A back-fill keeps it in its
        checkpoint; giving both is a :class:`ValidationError`.
    :param linger: live only: seconds a dirty note waits before it is written (``None``: written at once).
    """

    def __init__(
        self,
        *,
        create_persons: bool = True,
        group_by: GroupBy = "day",
        journal: str | os.PathLike[str] | sqlite3.Connection | None = None,
        linger: float | None = 2.0,
    ) -> None:
        if not isinstance(create_persons, bool):
            raise ValidationError("create_persons", f"must be a bool, got {create_persons!r}")
        if group_by not in ("day", "conversation"):
            raise ValidationError("group_by", f'must be "day" or "conversation", got {group_by!r}')
        if journal is not None and not isinstance(journal, str | os.PathLike | sqlite3.Connection):
            raise ValidationError("journal", f"must be a path, an open sqlite3.Connection or None, got "
                                             f"{type(journal).__name__}")
        if linger is not None and (isinstance(linger, bool) or not isinstance(linger, int | float)
                                   or not 0 <= linger < math.inf):
            raise ValidationError("linger", f"must be a finite number of seconds >= 0 or None, got {linger!r}")
        self.create_persons = create_persons
        self.group_by: GroupBy = group_by
        self.linger = linger
        self._journal_given = journal
        self._journal: Checkpoint | None = None
        self._owns_journal = False
        self._memory: sqlite3.Connection | None = None
        self._state: NotesState | None = None
        self._people: People | None = None
        self._writer: Writer | None = None
        self._counts = Counts()
        self._outcome: Outcome = _Unreported()
        self._priority = Priority.INTERACTIVE
        self._deadline: float | None = None
        self._backfill = False  # attached to a run: writes at day boundaries and flush, linger ignored
        self._client: ChannelsClient | None = None  # the latest deliver's, for the writes that come later
        self._highest = ""  # the latest day seen (group_by="day")
        self._written_below = ""  # every dirty group of a day before this one was written
        self._boundary = asyncio.Lock()
        self._linger = Linger(linger, self._write_later) if linger is not None else None

    def __repr__(self) -> str:
        return f"NotesTarget(create_persons={self.create_persons}, group_by={self.group_by!r})"

    # -- the Target contract -------------------------------------------------------------------------------

    def attach(
        self, journal: Checkpoint | None, outcome: Outcome, *, priority: Priority, deadline: float | None
    ) -> None:
        """Start a back-fill run: its journal (``None``: the target's own), outcome, priority and deadline."""
        if journal is not None and self._journal_given is not None:
            raise ValidationError("journal", "the back-fill keeps the notes' state in its own checkpoint: give "
                                             "NotesTarget a journal only outside a back-fill, or the run none")
        if journal is not None and journal is not self._journal:
            self._close_journal()
            self._open(journal, owned=False)
        state = self._open_state()
        self._outcome, self._priority, self._deadline = outcome, priority, deadline
        self._backfill = True
        self._counts.reset()  # this run's counts
        assert self._writer is not None and self._people is not None
        self._writer.outcome, self._writer.in_backfill = outcome, True
        self._writer.forget_failures()
        self._people.forget_failures()
        self._highest = state.highest_group() if self.group_by == "day" else ""
        self._written_below = ""  # a resumed run first writes what its predecessor left dirty on earlier days

    async def deliver(self, client: ChannelsClient, message: Message, *, contact: Contact | None = None) -> None:
        """Journal a record's line (a status update rewrites its message's line) and return; notes are written at
        a day boundary, a flush or after the linger (see the class docstring).

        :raises ValidationError: ``message`` is not a :class:`Message`, ``contact`` not a :class:`Contact`.
        """
        if not isinstance(message, Message):
            raise ValidationError("message", f"must be a Message, got {type(message).__name__}")
        if contact is not None and not isinstance(contact, Contact):
            raise ValidationError("contact", f"must be a Contact or None, got {type(contact).__name__}")
        state = self._open_state()
        self._client = client
        group = group_of(message, self.group_by)
        if contact is not None:
            state.keep_contact(message.conversation_id, contact)
        changed = state.keep_line(message, group, line_of(message))
        if self._backfill:
            if self.group_by == "day" and group > self._highest:
                self._highest = group
            if self._written_below < self._highest and not self._boundary.locked():
                await self._write_earlier_days(client)
        elif changed and self._linger is not None:
            self._linger.mark((message.conversation_id, group))
        elif changed:
            await self._write_all(client, [(message.conversation_id, group)])

    async def flush(self, client: ChannelsClient | None = None) -> None:
        """Write every dirty group now (the run's end, or a service shutting down), with ``client`` or else the
        latest deliver's; a live target's background task is stopped first (the next deliver starts it again)."""
        if self._linger is not None:
            await self._linger.stop()
        if self._state is None:
            return
        groups = self._state.dirty_groups()
        client = client or self._client
        if groups and client is None:
            _log.warning("%d note groups are pending but no record was delivered in this run, so there is no "
                         "client to write them with: they stay pending (flush(client) writes them)", len(groups))
            return
        if client is not None:
            await self._write_all(client, groups)

    def estimate(self, records: Iterable[tuple[Message, Contact | None]]) -> tuple[int, int]:
        """``(requests, tokens)`` at most: per distinct contact without ``person_id`` a search per phone and email
        and a create; per group its notes' POSTs (status updates counted as lines: an upper bound)."""
        contacts: set[str] = set()
        with_contact: set[str] = set()
        searches = creates = 0
        groups: dict[tuple[str, str], list[int]] = {}  # (total characters, longest line, lines)
        for message, contact in records:
            if contact is not None and message.conversation_id not in with_contact:
                with_contact.add(message.conversation_id)
                if contact.person_id is None and (key := contact_key(contact)) not in contacts:
                    contacts.add(key)
                    searches += (contact.phone is not None) + (contact.email is not None)
                    creates += self.create_persons
            size = len(line_of(message))
            sizes = groups.setdefault((message.conversation_id, group_of(message, self.group_by)), [0, 0, 0])
            sizes[0] += size
            sizes[1] = max(sizes[1], size)
            sizes[2] += 1
        notes = sum(_parts_at_most(conversation, group, *sizes) for (conversation, group), sizes in groups.items())
        tokens = (searches * operation_cost("GET", "/persons/search", version="v2")
                  + creates * operation_cost("POST", "/persons", version="v2")
                  + notes * operation_cost("POST", "/notes"))
        return searches + creates + notes, tokens

    def counts(self) -> Mapping[str, int]:
        """``persons_found``, ``persons_created``, ``persons_failed``, ``notes_created``, ``notes_updated``."""
        return self._counts.as_dict()

    def conversations_of(self, person_id: int) -> list[str]:
        """The conversations whose transcripts go on Pipedrive person ``person_id``, as the journal knows them
        (their contact names or resolved to that person, or their notes are on it), the one with the latest line
        first; empty when none. A bot answering on a person uses it to find where to reply.

        :raises ValidationError: ``person_id`` is not a positive integer.
        """
        if type(person_id) is not int or person_id < 1:
            raise ValidationError("person_id", f"must be a positive integer, got {person_id!r}")
        return self._open_state().conversations_of(person_id)

    # -- live use ------------------------------------------------------------------------------------------

    async def __aenter__(self) -> NotesTarget:
        self._open_state()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Flush, then close the journal the target opened (a back-fill's checkpoint is its run's to close)."""
        try:
            await self.flush()
        finally:
            self._close_journal()

    # -- internals -----------------------------------------------------------------------------------------

    def _open_state(self) -> NotesState:
        if self._state is None:
            given = self._journal_given
            if given is None:
                self._memory = sqlite3.connect(":memory:", isolation_level=None)
                given = self._memory
            self._open(Checkpoint(given), owned=True)
        assert self._state is not None
        return self._state

    def _open(self, journal: Checkpoint, *, owned: bool) -> None:
        try:
            state = NotesState(journal, self.group_by)
        except BaseException:
            if owned:
                journal.close()
            raise
        self._journal, self._owns_journal, self._state = journal, owned, state
        self._people = People(state, self._counts, create_persons=self.create_persons)
        self._writer = Writer(state, self._people, self._counts, self._outcome)

    def _close_journal(self) -> None:
        journal, owned, memory = self._journal, self._owns_journal, self._memory
        self._journal = self._state = self._people = self._writer = self._memory = None
        try:
            if journal is not None and owned:
                journal.close()
        finally:
            if memory is not None:
                memory.close()

    async def _write_earlier_days(self, client: ChannelsClient) -> None:
        async with self._boundary:
            below = self._highest
            assert self._state is not None
            await self._write_all(client, self._state.dirty_groups(before=below))
            self._written_below = max(self._written_below, below)

    async def _write_all(self, client: ChannelsClient, groups: Sequence[Group]) -> None:
        """Write ``groups``, a few at a time; after an error that is not a record's (a spent budget, the deadline),
        the groups being written are finished, no other is started, and the error is raised (the rest stay dirty)."""
        if not groups:
            return
        assert self._writer is not None
        writer, api, todo = self._writer, Api(client, self._priority, self._deadline), iter(groups)

        failed: list[Exception] = []

        async def work() -> None:
            for conversation_id, group in todo:
                if failed:
                    return  # the others finish the group they write, rather than stop mid-call
                try:
                    await writer.write(api, conversation_id, group)
                except Exception as error:
                    failed.append(error)

        await asyncio.gather(*(work() for _ in range(min(_WRITERS, len(groups)))))
        if failed:
            raise failed[0]

    async def _write_later(self, group: Group) -> None:
        """The linger's write of one group: errors after retries are logged and the lines stay pending."""
        if self._client is None:
            return
        try:
            await self._write_all(self._client, [group])
        except BudgetExhaustedError as error:
            wait = min(max(error.retry_after or 60.0, self.linger or 0.0), 3600.0)
            _log.warning("the daily budget is spent: a note write waits %.0f s (its lines stay pending)", wait)
            if self._linger is not None:
                self._linger.mark(group, delay=wait)


def _parts_at_most(conversation_id: str, group: str, total: int, longest: int, lines: int) -> int:
    """How many notes a group's lines take at most: greedy packing closes a note only when the next line does not
    fit, so each closed note holds more than its room less the longest line."""
    room = MAX_NOTE_CHARS - len(header_of(conversation_id, group, lines + 1))
    if total <= room:
        return 1
    filled = room - min(longest, room)  # what a closed note holds at least
    return lines if filled <= 0 else min(lines, total // filled + 1)
