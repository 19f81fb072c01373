"""The fake's webhook side as a test sees it: its identity, the webhooks registered, their deliveries, and the
knobs that play an agent in Pipedrive's UI.

A mixin of :class:`~pipedrive_channels.testing.FakePipedrive`, so that the class itself stays about its lifecycle
and what it holds; the registry is ``_webhooks``, the deliveries ``_deliveries``.

Who a change is told as made by: a request with a token, the token's user through the API (``change_source``
``"api"``, ``user_id`` :attr:`~WebhookKnobs.user_id`); the ``agent_*`` knobs, an agent in the app (``"app"``,
:attr:`~WebhookKnobs.agent_user_id` unless told otherwise); the fake's other knobs (``add_person``,
``delete_person``, ``add_channel``), the fake's user in the app (``"app"``, ``user_id``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from ._deliveries import Deliveries, Origin, WebhookDelivery
from ._envelopes import JsonDict, Refused
from ._persons import Persons
from ._webhooks import Webhooks


class WebhookKnobs:
    """The webhook knobs of :class:`FakePipedrive`; :meth:`_init_webhooks` sets them up."""

    _persons: Persons

    def _init_webhooks(self, webhook_delay_scale: float) -> None:
        self.company_id = 7001
        """The company's id: ``company_id`` of ``/users/me``, of channels and of every delivery's ``meta``."""
        self.user_id = 1
        """The id of the user every token belongs to: who makes the changes sent through the API."""
        self.agent_user_id = 2
        """The user the ``agent_*`` knobs act as unless told otherwise: an agent in Pipedrive's UI."""
        self.webhook_delay_scale = webhook_delay_scale
        """Multiplies the delivery timeout (10 s), the retry delays (3, 30, 150 s) and the ban (30 min)."""
        self.webhook_timeout: float | None = None
        """Seconds a delivery attempt may take; None: 10 s times :attr:`webhook_delay_scale`."""
        self._webhooks = Webhooks(lambda: (self.company_id, self.user_id), lambda hook: self._deliveries.forget(hook))
        self._deliveries = Deliveries(self, self._webhooks.hooks)

    @property
    def webhooks(self) -> Mapping[int, JsonDict]:
        """The webhooks registered, by id, as ``GET /v1/webhooks`` answers them (no password): a read-only copy."""
        return MappingProxyType({key: self._webhooks.answer(hook) for key, hook in self._webhooks.hooks.items()})

    @property
    def webhook_deliveries(self) -> Sequence[WebhookDelivery]:
        """Every delivery attempt so far, and every event lost (``attempt`` 0), in the order they ended."""
        return tuple(self._deliveries.records)

    def delete_webhook(self, webhook_id: int) -> None:
        """Delete a webhook as Pipedrive does after 3 days of failed deliveries; its pending deliveries stop.

        :raises KeyError: no such webhook.
        """
        if not self._webhooks.remove(webhook_id):
            raise KeyError(webhook_id)

    async def webhooks_idle(self, timeout: float = 30.0) -> None:
        """Wait until no delivery is pending (retries included).

        :raises TimeoutError: some still are after ``timeout`` seconds.
        """
        await self._deliveries.idle(timeout)

    def agent_adds_note(self, person_id: int, content: str, *, user_id: int | None = None) -> int:
        """Add a note on a person as an agent does in Pipedrive's UI (``change_source`` ``"app"``); its id.

        :param user_id: the agent; None means :attr:`agent_user_id`.
        :raises ValueError: the notes endpoint would refuse it (no such person, empty content, ...).
        """
        _, answer = self._as_agent(user_id, "create", "", {"content": content, "person_id": person_id})
        return int(answer["data"]["id"])

    def agent_updates_note(self, note_id: int, content: str, *, user_id: int | None = None) -> None:
        """Change a note's content as an agent does in Pipedrive's UI.

        :raises ValueError: the notes endpoint would refuse it (no such note, empty content, ...).
        """
        self._as_agent(user_id, "update", f"/v1/notes/{note_id}", {"content": content})

    def agent_deletes_note(self, note_id: int, *, user_id: int | None = None) -> None:
        """Delete a note as an agent does in Pipedrive's UI.

        :raises ValueError: no such note.
        """
        self._as_agent(user_id, "delete", f"/v1/notes/{note_id}", None)

    def agent_merges_persons(self, person_id: int, into_id: int, *, user_id: int | None = None) -> None:
        """Merge a person into another as an agent does in Pipedrive's UI: its notes, and the emails and phones the
        other lacks, move over; the webhooks hear its delete (``meta.merged_to_id``), then the other's change
        (``meta.merged_from_id``).

        :raises ValueError: no such person, or the same person twice.
        """
        try:
            with self._deliveries.acting(Origin("app", self.agent_user_id if user_id is None else user_id)):
                self._persons.merge(person_id, into_id)
        except Refused as refused:
            raise ValueError(f"the persons could not be merged: {refused}") from None

    def _as_agent(self, user_id: int | None, operation: str, path: str, body: JsonDict | None) -> tuple[int, JsonDict]:
        notes = self._persons.notes
        run = {"create": notes.create, "update": notes.update, "delete": notes.delete}[operation]
        try:
            with self._deliveries.acting(Origin("app", self.agent_user_id if user_id is None else user_id)):
                return run(path, body, {})
        except Refused as refused:
            raise ValueError(f"the notes endpoint would refuse this: {refused}") from None
