"""The fake's HTTP server: its lifecycle, knobs, what it holds, and the faults it injects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from time import monotonic
from types import MappingProxyType, TracebackType

from aiohttp import web

from ._agent import Agent
from ._deliveries import Deliveries, WebhookDelivery
from ._envelopes import JsonDict
from ._faults import Fault, FaultPlan
from ._oauth import Authority
from ._persons import Persons
from ._rate import RateWindows
from ._routes import RecordedRequest, Routes, listen
from ._store import Store
from ._webhooks import Webhooks

__all__ = ["FakePipedrive", "RecordedRequest"]


class FakePipedrive:
    """A fake Pipedrive serving the Channels API, v2 persons, v1 notes, v1 webhooks and OAuth on ``127.0.0.1``;
    it delivers webhooks v2 for the changes it makes (see ``_deliveries``, and ``_agent`` for who makes them).
    Use it as an async context manager (or call :meth:`start` and :meth:`close`). Each parameter is also an
    attribute of the same name: a knob, as the others below, to assign at any time.

    :param client_id: the OAuth client id the token endpoint accepts (also ``marketplace_client_id``).
    :param client_secret: the OAuth client secret the token endpoint accepts.
    :param access_token_ttl: lifetime in seconds of the access tokens issued from now on, sent as ``expires_in``.
    :param rate_limit: requests per token per rolling 2-second window, sent as ``x-ratelimit-limit``.
    :param enforce_rate_limit: answer 429 beyond ``rate_limit`` in the window, and to searches beyond 10 in their
        own (``x-ratelimit-reset`` then says when the search window frees a slot); False: only send the headers.
    :param api_domain: ``api_domain`` sent in later token responses; None means :attr:`root_url`. The SDK follows
        only an https Pipedrive ``api_domain``, so a client of the fake passes ``base_url=fake.base_url``.
    :param webhook_delay_scale: multiplies the webhooks' delivery timeout (10 s), retry delays and ban, e.g. 0.01.
    :ivar latency: seconds every API endpoint (all but OAuth's) sleeps before answering; 0.
    :ivar token_latency: seconds the token endpoint sleeps before answering; 0.
    :ivar refresh_failures: the next this-many ``refresh_token`` grants answer 400 ``invalid_grant``; 0.
    :ivar company_id: ``company_id`` of ``/users/me``, of channels and of every delivery's ``meta``; 7001.
    :ivar user_id: the user every token belongs to, who makes the changes sent through the API; 1.
    :ivar agent_user_id: the user the ``agent_*`` knobs act as unless told otherwise (an agent in the UI); 2.
    :ivar webhook_timeout: seconds a delivery attempt may take; None: 10 s times ``webhook_delay_scale``.
    :ivar requests: every request to the API, token and authorize endpoints, in arrival order.
    :ivar token_requests: the number of requests that reached the token endpoint.
    :ivar tokens_spent: the documented ``x-token-cost`` of each request a route answered itself (any status), added
        up; 401s, 429s, injected faults and dropped connections add nothing. Assign 0 to start measuring afresh.
    """

    def __init__(self, *, client_id: str = "fake-client-id", client_secret: str = "fake-client-secret",
                 access_token_ttl: float = 3600, rate_limit: int = 80, enforce_rate_limit: bool = False,
                 api_domain: str | None = None, webhook_delay_scale: float = 1.0) -> None:
        self.client_id, self.client_secret, self.access_token_ttl = client_id, client_secret, access_token_ttl
        self.rate_limit, self.enforce_rate_limit, self.api_domain = rate_limit, enforce_rate_limit, api_domain
        self.webhook_delay_scale, self.latency, self.token_latency = webhook_delay_scale, 0.0, 0.0
        self.refresh_failures = self.token_requests = self.tokens_spent = 0
        self.company_id, self.user_id, self.agent_user_id = 7001, 1, 2
        self.webhook_timeout: float | None = None
        self.requests: list[RecordedRequest] = []
        self._webhooks = Webhooks(lambda: (self.company_id, self.user_id), lambda hook: self._deliveries.forget(hook))
        self._deliveries = Deliveries(self, self._webhooks.hooks)
        self._oauth, self._store = Authority(self), Store(self, self._deliveries)
        self._persons = Persons(self._deliveries)
        self._agent = Agent(self._persons, self._deliveries, lambda: self.agent_user_id)
        self._faults, self._windows = FaultPlan(), RateWindows()  # the windows are kept across restarts, as tokens are
        self._runner: web.AppRunner | None = None
        self._root_url: str | None = None

    # -- lifecycle and URLs -------------------------------------------------------------------------------

    async def start(self, port: int = 0) -> None:
        """Start listening on ``127.0.0.1:port`` (0 picks a free port)."""
        if self._runner is not None:
            raise RuntimeError("FakePipedrive is already started")
        routes = Routes(self, oauth=self._oauth, store=self._store, persons=self._persons, webhooks=self._webhooks,
                        deliveries=self._deliveries, faults=self._faults, windows=self._windows,
                        clock=monotonic)  # the clock tests replace, in this module
        self._runner = await listen(routes.app(), port)
        self._root_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def close(self) -> None:
        """Stop the server, its webhook deliveries (those pending are dropped) and connections; safe twice."""
        await self._deliveries.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakePipedrive:
        """Start the server."""
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        """Stop the server."""
        await self.close()

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT``; only available once started."""
        if self._root_url is None:
            raise RuntimeError("FakePipedrive is not started")
        return self._root_url

    @property
    def base_url(self) -> str:
        """Base URL of the Channels API: ``root_url + "/v1"`` (``/api/v1`` is served too)."""
        return self.root_url + "/v1"

    @property
    def token_url(self) -> str:
        """URL of the OAuth token endpoint."""
        return self.root_url + "/oauth/token"

    @property
    def authorize_url(self) -> str:
        """URL of the OAuth authorize endpoint (it only echoes its query)."""
        return self.root_url + "/oauth/authorize"

    # -- credentials --------------------------------------------------------------------------------------

    def issue_code(self, redirect_uri: str | None = None) -> str:
        """An authorization code the token endpoint accepts once (with the same ``redirect_uri``, when given)."""
        return self._oauth.issue_code(redirect_uri)

    def issue_token(self) -> JsonDict:
        """Mint a token pair without an HTTP round trip; returns the token endpoint's JSON answer."""
        return self._oauth.issue_token()

    def add_access_token(self, value: str, ttl: float | None = None) -> None:
        """Accept ``Authorization: Bearer <value>`` for ``ttl`` seconds (None: until expired by hand)."""
        self._oauth.add_access_token(value, ttl)

    def add_api_token(self, value: str) -> None:
        """Accept ``x-api-token: <value>``."""
        self._oauth.add_api_token(value)

    def expire_access_tokens(self) -> None:
        """Make every access token known so far answer 401 (refresh tokens stay valid)."""
        self._oauth.expire_access_tokens()

    # -- what it holds ------------------------------------------------------------------------------------

    @property
    def channels(self) -> dict[str, JsonDict]:
        """Stored channels by ``provider_channel_id``, as answered by the add-channel endpoint."""
        return self._store.channels

    @property
    def messages(self) -> dict[tuple[str, str], dict[str, JsonDict]]:
        """Stored message bodies by ``(provider_channel_id, conversation_id)``, then by message id."""
        return self._store.messages

    @property
    def collections(self) -> dict[tuple[str, str], list[JsonDict]]:
        """Generic collections by ``(version, path)``, see :meth:`add_collection`."""
        return self._store.collections

    def add_channel(self, provider_channel_id: str, name: str | None = None, *, avatar_url: str | None = None,
                    provider_type: str = "other", template_support: bool = False) -> JsonDict:
        """Store a channel as the add-channel endpoint would, without a request; return it as answered. Adding an
        id again renames it and keeps its ``id`` and ``created_at``, as the endpoint does.

        :param name: the channel's name; None means ``provider_channel_id``.
        :param provider_type: ``"facebook"``, ``"whatsapp"`` or ``"other"``.
        :raises ValueError: the endpoint would refuse this channel (an empty id or name, an unknown type)."""
        return self._store.put_checked_channel(provider_channel_id, name, avatar_url, provider_type, template_support)

    @property
    def persons(self) -> Mapping[int, JsonDict]:
        """Stored persons by id, as ``GET /api/v2/persons/{id}`` answers them (read-only)."""
        return MappingProxyType(self._persons.people)

    @property
    def notes(self) -> Mapping[int, JsonDict]:
        """Stored notes by id (read-only): ``content`` exactly as sent, ``person_id``, ``add_time``, ..."""
        return MappingProxyType(self._persons.notes.notes)

    @property
    def search_window_peak(self) -> int:
        """The most searches one token sent in any rolling 2 s so far, refused ones too (10 at most: kept to)."""
        return self._windows.search_peak

    def add_person(self, name: str, *, phones: Iterable[str] = (), emails: Iterable[str] = (),
                   add_time: datetime | None = None) -> int:
        """Store a person as ``POST /api/v2/persons`` would, without a request; return its id.

        :param phones: its phone numbers, the first one primary (and so with ``emails``).
        :param add_time: when it was created (UTC when naive); search answers the oldest first. None: now.
        :raises ValueError: the endpoint would refuse this person (an empty name, phone or email)."""
        return self._persons.add_plain(name, phones, emails, add_time)

    def delete_person(self, person_id: int) -> None:
        """Delete a person and its notes, as ``DELETE /api/v2/persons/{id}`` does (later requests for it: 404);
        ``KeyError``: no such person."""
        self._persons.remove(person_id)

    def add_collection(self, path: str, items: Sequence[JsonDict] = (), *, version: str = "v1") -> None:
        """Serve a small in-memory collection at ``path`` (e.g. ``"/deals"``) of API ``version``: ``GET path`` lists
        it a page at a time in insertion order (v1: ``start``/``limit`` and ``additional_data.pagination``; v2:
        ``cursor``/``limit`` and ``additional_data.next_cursor``; ``limit`` 100 by default), ``GET path/{id}``
        answers one item, ``POST path`` appends the JSON body with a new ``id``. The fake's own routes come first."""
        self._store.collections[(version, path)] = [dict(item) for item in items]

    # -- webhooks: the registry, the deliveries, and an agent in the app (see ``_agent``) --------------

    @property
    def webhooks(self) -> Mapping[int, JsonDict]:
        """The webhooks registered, by id, as ``GET /v1/webhooks`` answers them (no password): a read-only copy."""
        return self._webhooks.answers()

    @property
    def webhook_deliveries(self) -> Sequence[WebhookDelivery]:
        """Every delivery attempt so far, and every event lost (``attempt`` 0), in the order they ended."""
        return tuple(self._deliveries.records)

    def delete_webhook(self, webhook_id: int) -> None:
        """Delete a webhook as Pipedrive does after 3 days of failed deliveries; its pending deliveries stop.
        ``KeyError``: no such webhook."""
        self._webhooks.remove(webhook_id)

    async def webhooks_idle(self, timeout: float = 30.0) -> None:
        """Wait until no delivery is pending, retries too; ``TimeoutError``: some still are after ``timeout`` s."""
        await self._deliveries.idle(timeout)

    def agent_adds_note(self, person_id: int, content: str, *, user_id: int | None = None) -> int:
        """Add a note on a person as an agent does in Pipedrive's UI (``change_source`` ``"app"``, by ``user_id``,
        None: :attr:`agent_user_id`); its id. ``ValueError``: the notes endpoint would refuse it."""
        return self._agent.adds_note(person_id, content, user_id)

    def agent_updates_note(self, note_id: int, content: str, *, user_id: int | None = None) -> None:
        """Change a note's content as an agent does in Pipedrive's UI. ``ValueError``: no such note, empty content."""
        self._agent.updates_note(note_id, content, user_id)

    def agent_deletes_note(self, note_id: int, *, user_id: int | None = None) -> None:
        """Delete a note as an agent does in Pipedrive's UI. ``ValueError``: no such note."""
        self._agent.deletes_note(note_id, user_id)

    def agent_merges_persons(self, person_id: int, into_id: int, *, user_id: int | None = None) -> None:
        """Merge a person into another as an agent does in Pipedrive's UI: its notes, and the emails and phones the
        other lacks, move over; the webhooks hear its delete (``meta.merged_to_id``), then the other's change
        (``meta.merged_from_id``). ``ValueError``: no such person, or the same person twice."""
        self._agent.merges_persons(person_id, into_id, user_id)

    # -- fault injection ----------------------------------------------------------------------------------

    def fail_next(self, n: int, status: int, *, headers: Mapping[str, str] | None = None, body: object = None,
                  path: str | None = None, method: str | None = None) -> None:
        """Answer the next ``n`` API requests (any route but OAuth's) with ``status``, before their credentials:
        ``fail_next(1, 400, body={"success": False, "error": "why"}, path="/notes", method="POST")``, a note refused.

        :param headers: extra headers; they override the ``x-ratelimit-*`` headers sent anyway.
        :param body: a JSON value, or ``str``/``bytes`` sent raw as ``text/html``; None: Pipedrive's error envelope.
        :param path: only count requests whose raw path ends with this, e.g. ``"/messages/receive"``.
        :param method: only count requests of this method, e.g. ``"POST"``."""
        self._faults.schedule(Fault(n, path, status, dict(headers or {}), body, method and method.upper()))

    def drop_next(self, n: int, *, path: str | None = None, method: str | None = None) -> None:
        """Read the next ``n`` API requests fully, then close the connection without answering; ``path`` and
        ``method`` as in :meth:`fail_next`."""
        self._faults.schedule(Fault(n, path, None, {}, None, method and method.upper()))

    def fail_randomly(self, probability: float, status: int | None, *, headers: Mapping[str, str] | None = None
                      ) -> None:
        """From now on, answer each API request with ``status`` (None: drop it) with ``probability``. Several calls
        add independent faults, checked in order, after the scheduled ones (:meth:`fail_next`, :meth:`drop_next`);
        :meth:`clear_random_faults` removes them all."""
        self._faults.add_random(probability, Fault(1, None, status, dict(headers or {}), None))

    def clear_random_faults(self) -> None:
        """Stop the faults added by :meth:`fail_randomly`."""
        self._faults.clear_random()
