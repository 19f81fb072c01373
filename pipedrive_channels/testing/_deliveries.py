"""Webhooks v2 deliveries: each change the fake makes, POSTed to every webhook registered for it.

An event goes to each webhook of version ``2.0`` whose ``event_object`` is the entity or ``*`` and whose
``event_action`` is the action or ``*``, as ``{"meta": {...}, "data": ..., "previous": ...}``: ``data`` is the
object as it is now (``null`` on ``delete``), ``previous`` the old values of the fields that changed (``null`` on
``create``, the last state on ``delete``). In ``meta`` the ids are strings, as Pipedrive sends them (``entity_id``,
``company_id``, ``user_id``, ``webhook_id``, ``webhook_owner_id``, ``permitted_user_ids``); ``id`` is the event's
uuid, the same on every attempt, and ``attempt`` counts them from 1.

Deliveries run in the background, one event at a time per webhook (in order), with the webhook's Basic
credentials, never following a redirect. An attempt fails on a non-2xx answer or after the timeout (10 s); it is
retried after 3, 30 and 150 s, then given up. Every first-attempt failure counts toward a ban: at 10, the webhook
is banned for 30 minutes and events meanwhile are lost (then the counter starts again from zero). All these times
are multiplied by :attr:`FakePipedrive.webhook_delay_scale`. At most 1,000 events wait per webhook; more are lost.
Every attempt, and every lost event (``attempt`` 0), is listed in :attr:`FakePipedrive.webhook_deliveries`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from time import monotonic
from typing import Protocol

import aiohttp

from ._envelopes import JsonDict
from ._webhooks import iso_now

TIMEOUT = 10.0
RETRY_DELAYS = (3.0, 30.0, 150.0)
BAN_AFTER = 10
BAN_SECONDS = 1800.0
MAX_PENDING = 1000
HOST = "fake.pipedrive.com"


@dataclass(frozen=True, slots=True)
class Origin:
    """Who makes a change: through the API with a token (``"api"``), or in Pipedrive's UI (``"app"``)."""

    change_source: str
    user_id: int


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One delivery attempt (or one event lost), as listed in :attr:`FakePipedrive.webhook_deliveries`."""

    webhook_id: int
    event_id: str
    """The event's ``meta.id``."""
    entity: str
    action: str
    attempt: int
    """1 for the first attempt, 2 to 4 for the retries; 0 for an event lost (the webhook banned, or its queue full)."""
    status: int | None
    """The HTTP status answered; None when there was no answer (see ``error``)."""
    error: str | None = None
    """Why there was no status: ``"timeout"``, the connection error, ``"banned"`` or ``"queue full"``."""


class Changes(Protocol):
    """What the fake's operations tell of each change they make, and ask of who makes it."""

    @property
    def origin(self) -> Origin: ...

    def changed(
        self, entity: str, action: str, entity_id: object, data: JsonDict | None, previous: JsonDict | None,
        **merge: str,
    ) -> None: ...


class Knobs(Protocol):
    """The fake's knobs the deliveries read at each event and attempt."""

    company_id: int
    user_id: int
    webhook_delay_scale: float
    webhook_timeout: float | None


@dataclass(slots=True)
class _Lane:
    """One webhook's events waiting, the task delivering them, and its ban counter."""

    pending: deque[JsonDict] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    failures: int = 0
    banned_until: float = -math.inf


class Deliveries:
    """The events told by the fake's operations, delivered to the matching webhooks of ``hooks``; the fake's
    :class:`Changes`.

    :param hooks: the stored webhooks by id (with their passwords).
    """

    def __init__(self, knobs: Knobs, hooks: Mapping[int, JsonDict]) -> None:
        self.records: list[WebhookDelivery] = []
        self._acting: Origin | None = None
        self._knobs = knobs
        self._hooks = hooks
        self._lanes: dict[int, _Lane] = {}
        self._http: aiohttp.ClientSession | None = None

    @property
    def origin(self) -> Origin:
        """Who makes the changes now: by default the fake's user in the app (a knob such as ``add_person``)."""
        return self._acting or Origin("app", self._knobs.user_id)

    @contextlib.contextmanager
    def acting(self, origin: Origin) -> Iterator[None]:
        """Make the changes inside the block on behalf of ``origin`` (the operations are synchronous)."""
        before, self._acting = self._acting, origin
        try:
            yield
        finally:
            self._acting = before

    def changed(
        self, entity: str, action: str, entity_id: object, data: JsonDict | None, previous: JsonDict | None,
        **merge: str,
    ) -> None:
        """Tell every matching webhook that ``entity`` ``entity_id`` was created, changed or deleted.

        :param merge: ``merged_to_id`` (on the delete) or ``merged_from_id`` (on the change) of a merge.
        """
        hooks = [hook for hook in self._hooks.values() if _matches(hook, entity, action)]
        if not hooks:
            return
        origin = self.origin
        meta = {
            "action": action, "entity": entity, "entity_id": str(entity_id), "id": str(uuid.uuid4()),
            "company_id": str(self._knobs.company_id), "user_id": str(origin.user_id),
            "correlation_id": str(uuid.uuid4()), "is_bulk_edit": False, "timestamp": iso_now(), "type": "general",
            "version": "2.0", "change_source": origin.change_source, "host": HOST, **merge,
        }
        for hook in hooks:
            lane = self._lanes.setdefault(hook["id"], _Lane())
            event = {"meta": {**meta, "webhook_id": str(hook["id"]), "webhook_owner_id": str(hook["owner_id"]),
                              "permitted_user_ids": [str(hook["user_id"])]}, "data": data, "previous": previous}
            if monotonic() < lane.banned_until:
                self._record(event, 0, None, "banned")
            elif len(lane.pending) >= MAX_PENDING:
                self._record(event, 0, None, "queue full")
            else:
                lane.pending.append(event)
                self._kick(hook["id"], lane)

    def forget(self, webhook_id: int) -> None:
        """Drop a deleted webhook's pending events, and stop its delivery in progress."""
        lane = self._lanes.pop(webhook_id, None)
        if lane is not None and lane.task is not None:
            lane.task.cancel()

    async def idle(self, timeout: float) -> None:
        """Wait until no event is pending at any webhook (retries included); ``TimeoutError`` after ``timeout``."""
        deadline = monotonic() + timeout
        for webhook_id, lane in list(self._lanes.items()):
            self._kick(webhook_id, lane)  # events told outside a running loop
        while tasks := [lane.task for lane in self._lanes.values() if lane.task is not None]:
            remaining = deadline - monotonic()
            if remaining <= 0:
                raise TimeoutError(f"webhook deliveries still pending after {timeout} s")
            await asyncio.wait(tasks, timeout=remaining)

    async def close(self) -> None:
        """Stop every delivery (events pending are dropped) and close the HTTP session."""
        lanes, self._lanes = self._lanes, {}
        tasks = [lane.task for lane in lanes.values() if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    # -- delivering -------------------------------------------------------------------------------------------

    def _kick(self, webhook_id: int, lane: _Lane) -> None:
        if lane.task is None and lane.pending:
            # Without a running loop (a knob called from sync code), webhooks_idle() starts it.
            with contextlib.suppress(RuntimeError):
                lane.task = asyncio.get_running_loop().create_task(self._drain(webhook_id, lane))

    async def _drain(self, webhook_id: int, lane: _Lane) -> None:
        try:
            while lane.pending:
                await self._deliver(webhook_id, lane, lane.pending[0])
                if lane.pending:  # a ban may have emptied it
                    lane.pending.popleft()
        finally:
            lane.task = None

    async def _deliver(self, webhook_id: int, lane: _Lane, event: JsonDict) -> None:
        """Every attempt of one event, until one succeeds, the retries run out, or the webhook is banned."""
        scale = self._knobs.webhook_delay_scale
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS), start=1):
            if delay:
                await asyncio.sleep(delay * scale)
            hook = self._hooks.get(webhook_id)
            if hook is None:
                return
            sent = {**event, "meta": {**event["meta"], "attempt": attempt}}
            status, error = await self._post(hook, sent)
            self._record(sent, attempt, status, error)
            hook.update(last_delivery_time=iso_now(), last_http_status=status)
            if status is not None and 200 <= status < 300:
                return
            if attempt == 1:
                lane.failures += 1
                if lane.failures >= BAN_AFTER:
                    lane.failures, lane.banned_until = 0, monotonic() + BAN_SECONDS * scale
                    for lost in list(lane.pending)[1:]:
                        self._record(lost, 0, None, "banned")
                    lane.pending.clear()
                    return

    async def _post(self, hook: JsonDict, payload: JsonDict) -> tuple[int | None, str | None]:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        user, headers = hook["http_auth_user"], {}
        if user is not None:
            credentials = f"{user}:{hook['http_auth_password'] or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
        timeout = self._knobs.webhook_timeout
        seconds = TIMEOUT * self._knobs.webhook_delay_scale if timeout is None else timeout
        try:
            async with self._http.post(hook["subscription_url"], json=payload, headers=headers, allow_redirects=False,
                                       timeout=aiohttp.ClientTimeout(total=seconds)) as response:
                return response.status, None  # the body is never read: its size is the receiver's business
        except asyncio.TimeoutError:
            return None, "timeout"
        except (aiohttp.ClientError, OSError, ValueError) as exc:  # ValueError: a URL aiohttp cannot send to
            return None, f"{type(exc).__name__}: {exc}"

    def _record(self, event: JsonDict, attempt: int, status: int | None, error: str | None) -> None:
        meta = event["meta"]
        self.records.append(WebhookDelivery(int(meta["webhook_id"]), meta["id"], meta["entity"], meta["action"],
                                            attempt, status, error))


def changed_fields(old: JsonDict, new: JsonDict, ignore: tuple[str, ...] = ()) -> JsonDict:
    """``previous`` of a change: the old value of each field whose value changed (``ignore`` aside)."""
    return {key: value for key, value in old.items() if key not in ignore and new.get(key) != value}


def _matches(hook: JsonDict, entity: str, action: str) -> bool:
    return hook["version"] == "2.0" and hook["event_object"] in (entity, "*") and hook["event_action"] in (action, "*")
