"""An agent in Pipedrive's UI: the changes it makes on notes and persons, told to the webhooks as made in the app.

Who a change is told as made by: a request with a token, the token's user through the API (``change_source``
``"api"``, ``user_id`` :attr:`~FakePipedrive.user_id`); the ``agent_*`` knobs, an agent in the app (``"app"``,
:attr:`~FakePipedrive.agent_user_id` unless told otherwise); the fake's other knobs (``add_person``,
``delete_person``, ``add_channel``), the fake's user in the app (``"app"``, ``user_id``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ._deliveries import Deliveries, Origin
from ._envelopes import Refused
from ._persons import Persons


class Agent:
    """The ``agent_*`` knobs of :class:`FakePipedrive`: the notes' and persons' operations, on an agent's behalf.

    :param agent_user_id: ``() ->`` the agent acting unless told otherwise (the fake's knob, read at each change).
    """

    def __init__(self, persons: Persons, deliveries: Deliveries, agent_user_id: Callable[[], int]) -> None:
        self._persons = persons
        self._deliveries = deliveries
        self._agent_user_id = agent_user_id

    def adds_note(self, person_id: int, content: str, user_id: int | None) -> int:
        """Add a note on a person; its id. ``ValueError`` when the notes endpoint would refuse it."""
        with self._acting(user_id, "the notes endpoint would refuse this"):
            _, answer = self._persons.notes.create("", {"content": content, "person_id": person_id}, {})
        return int(answer["data"]["id"])

    def updates_note(self, note_id: int, content: str, user_id: int | None) -> None:
        """Change a note's content. ``ValueError`` when the notes endpoint would refuse it."""
        with self._acting(user_id, "the notes endpoint would refuse this"):
            self._persons.notes.update(f"/v1/notes/{note_id}", {"content": content}, {})

    def deletes_note(self, note_id: int, user_id: int | None) -> None:
        """Delete a note. ``ValueError`` when there is no such note."""
        with self._acting(user_id, "the notes endpoint would refuse this"):
            self._persons.notes.delete(f"/v1/notes/{note_id}", None, {})

    def merges_persons(self, person_id: int, into_id: int, user_id: int | None) -> None:
        """Merge a person into another (see :meth:`Persons.merge`). ``ValueError``: no such person, or the same."""
        with self._acting(user_id, "the persons could not be merged"):
            self._persons.merge(person_id, into_id)

    @contextmanager
    def _acting(self, user_id: int | None, refusal: str) -> Iterator[None]:
        """Tell the changes inside as the agent's in the app; a refusal becomes a ``ValueError`` saying ``refusal``."""
        try:
            with self._deliveries.acting(Origin("app", self._agent_user_id() if user_id is None else user_id)):
                yield
        except Refused as refused:
            raise ValueError(f"{refusal}: {refused}") from None
