"""``ChannelsClient``: the four Channels endpoints as typed async methods.

A call flows one way: the method validates its input (raising :class:`~pipedrive_channels.errors.ValidationError`
before anything is sent) and builds the body or the percent-encoded path, priced from the cost table into one
call record that every attempt reads; the budget admits and charges each attempt; the transport sends it; the
answer settles the budget (with its rate headers) and becomes a model.
Every ID is the provider's own, as Pipedrive's Channels API expects.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Coroutine, Mapping
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp

from ._call import REPEAT, Call, prepare, send
from ._echo import echoed
from ._pages import walk
from ._transport import DEFAULT_MAX_ANSWER_BYTES, Response, Transport
from ._wire import dumps as _dumps
from .auth import ApiToken, Authorizer, OAuthApp, OAuthToken, TokenStore
from .budget import Budget, Plan, Priority, RateBudget
from .costs import DEFAULT_COST
from .errors import ApiError, ValidationError
from .models import ApiResponse, Channel, Message, NewChannel, ProviderType, converter, require_identifier
from .retry import Repeat, RetryPolicy

__all__ = ["ChannelsClient"]

_T = TypeVar("_T")

_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


def _query(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Query parameters as strings (booleans as Pipedrive writes them), dropping ``None`` values."""
    if not params:
        return None
    return {
        key: ("true" if value else "false") if isinstance(value, bool) else str(value)
        for key, value in params.items()
        if value is not None
    }


def _segment(field: str, value: str) -> str:
    """Percent-encode one path segment: ``"a/b"`` stays one segment, never two."""
    require_identifier(field, value)
    if value in (".", ".."):
        raise ValidationError(field, "must not be '.' or '..' (URL normalisation would change the path)")
    return quote(value, safe="")


def _fill(template: str, values: Mapping[str, object]) -> str:
    """``template`` with each ``{name}`` replaced by its percent-encoded value; every placeholder and every value
    must be used."""
    used: set[str] = set()

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ValidationError(name, f"is a placeholder of {template!r} but no value was given")
        used.add(name)
        return _segment(name, str(values[name]))

    result = _PLACEHOLDER.sub(fill, template)
    if unused := set(values) - used:
        raise ValidationError(sorted(unused)[0], f"is not a placeholder of {template!r}")
    return result


def _decode(cls: type[_T], response: Response) -> _T:
    """Structure the envelope's ``data``; an answer that does not fit is an error, never silently dropped."""
    body = response.body
    try:
        return converter.structure(body["data"], cls)
    except (KeyError, TypeError, ValueError) as exc:  # ValidationError is a ValueError
        raise ApiError(
            response.status, f"unexpected answer for {cls.__name__}: {exc}", body=body, headers=response.headers
        ) from exc


class ChannelsClient:
    """An async client for Pipedrive's Channels API.

    Use it as an async context manager::

        async with ChannelsClient(token, app=app, token_store=JsonFileTokenStore("token.json")) as client:
            await client.add_channel(name="Support", provider_channel_id="wa-123")

    :param token: an :class:`OAuthToken`, a plain access-token string (sent as ``Bearer``), or an
        :class:`ApiToken` (sent as ``x-api-token``).
    :param app: the OAuth app that can refresh ``token``; without it a 401 raises ``AuthenticationError``.
    :param base_url: overrides the API root (e.g. ``http://127.0.0.1:PORT/v1``); default
        ``{token.api_domain}/api/v1``, else ``https://api.pipedrive.com/v1``. Without it, an ``api_domain`` (from
        the token, a refresh or the store) must be https on ``pipedrive.com`` or a subdomain, else
        ``ValidationError``; a fake or proxy on any other host is reached through ``base_url``.
    :param token_store: where refreshed tokens are saved; a newer stored token is adopted on open.
    :param session: an aiohttp session to share (the client does not close it).
    :param timeout: seconds for one HTTP request.
    :param max_answer_bytes: the largest answer read, counted after decompression (default 8 MiB); a larger
        one is an :class:`ApiError` and its connection is closed.
    :param budget: the rate budget every attempt is charged to; share one between clients of one token.
        ``None`` means the safest default, ``RateBudget.for_plan(Plan.LITE, seats=1)`` (with API-token burst
        limits for an :class:`ApiToken`); to turn limiting off, pass ``RateBudget.unlimited()``.
    :param retry: when to send a failed call again (default ``RetryPolicy()``; ``RetryPolicy.none()`` never).
    """

    def __init__(
        self,
        token: OAuthToken | ApiToken | str,
        *,
        app: OAuthApp | None = None,
        base_url: str | None = None,
        token_store: TokenStore | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 30.0,
        budget: Budget | None = None,
        retry: RetryPolicy | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        # Without a base_url, requests follow the token's api_domain, which must then be a Pipedrive host.
        authorizer = Authorizer(token, app, token_store, follow_api_domain=base_url is None)
        self._transport = Transport(
            authorizer, base_url=base_url, session=session, timeout=timeout, max_answer_bytes=max_answer_bytes
        )
        if budget is None:
            auth = "api_token" if isinstance(token, ApiToken) else "oauth"
            budget = RateBudget.for_plan(Plan.LITE, seats=1, auth=auth)
        self._budget = budget
        self._retry = RetryPolicy() if retry is None else retry

    def __repr__(self) -> str:
        return f"ChannelsClient(base_url={self._transport.base_url!r})"

    @property
    def base_url(self) -> str:
        """The API root requests go to now."""
        return self._transport.base_url

    @property
    def token(self) -> OAuthToken | ApiToken:
        """The credentials in use now (the refreshed token after a refresh)."""
        return self._transport.authorizer.token

    @property
    def budget(self) -> Budget:
        """The rate budget calls are charged to (see its ``stats()``)."""
        return self._budget

    async def open(self) -> None:
        """Open the HTTP session (``async with`` does this)."""
        await self._transport.open()

    async def aclose(self) -> None:
        """Close the HTTP session (``async with`` does this); a closed client cannot be reopened."""
        await self._transport.close()

    async def __aenter__(self) -> ChannelsClient:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def add_channel(
        self,
        *,
        name: str,
        provider_channel_id: str,
        avatar_url: str | None = None,
        template_support: bool = False,
        provider_type: ProviderType | str = ProviderType.OTHER,
        priority: Priority = Priority.INTERACTIVE,
        timeout: float | None = None,
    ) -> Channel:
        """Register a messaging channel (``POST /channels``, at its documented cost). Only company admins may.

        Pipedrive then calls the app's ``getConversations`` endpoint for the channel's history.
        ``priority`` and ``timeout`` (the most seconds to wait for the budget) work as in every method.
        """
        new = NewChannel(
            name=name,
            provider_channel_id=provider_channel_id,
            avatar_url=avatar_url,
            template_support=template_support,
            provider_type=provider_type,
        )
        body = _dumps(converter.unstructure(new))
        return _decode(Channel, await self._call(prepare("POST", "/channels", body, priority, timeout)))

    async def receive_message(
        self, message: Message, *, priority: Priority = Priority.INTERACTIVE, timeout: float | None = None
    ) -> Message:
        """Deliver a message to its conversation (``POST /channels/messages/receive``, at its documented cost).

        Sending the same ``id`` again updates the message, which is how status changes are delivered.
        Returns the message as Pipedrive echoes it.
        """
        if not isinstance(message, Message):
            raise ValidationError("message", f"must be a Message, got {type(message).__name__}")
        sent = converter.unstructure(message)
        call = prepare("POST", "/channels/messages/receive", _dumps(sent), priority, timeout, repeat=Repeat.IDEMPOTENT)
        response = await self._call(call)
        data = response.body.get("data") if isinstance(response.body, dict) else None
        # The usual answer echoes the body: built from the sent message, not validated twice (see _echo).
        answer = echoed(message, sent, data)
        return _decode(Message, response) if answer is None else answer

    async def delete_conversation(
        self,
        provider_channel_id: str,
        conversation_id: str,
        *,
        priority: Priority = Priority.INTERACTIVE,
        timeout: float | None = None,
    ) -> None:
        """Delete a conversation and its messages (``DELETE /channels/{channel}/conversations/{id}``, at its
        documented cost)."""
        path = (
            f"/channels/{_segment('provider_channel_id', provider_channel_id)}"
            f"/conversations/{_segment('conversation_id', conversation_id)}"
        )
        template = "/channels/{channel-id}/conversations/{conversation-id}"
        await self._call(prepare("DELETE", path, None, priority, timeout, template=template))

    async def delete_channel(
        self, provider_channel_id: str, *, priority: Priority = Priority.INTERACTIVE, timeout: float | None = None
    ) -> None:
        """Delete a channel with all its conversations and messages (``DELETE /channels/{id}``, at its documented
        cost)."""
        path = f"/channels/{_segment('provider_channel_id', provider_channel_id)}"
        await self._call(prepare("DELETE", path, None, priority, timeout, template="/channels/{id}"))

    @staticmethod
    def path(template: str, **values: object) -> str:
        """Fill a path template's ``{name}`` placeholders with percent-encoded values.

        ``client.path("/deals/{id}", id=42)`` gives ``/deals/42``; a value ``"a/b"`` stays one segment. Names
        that are not identifiers pass as ``**{"channel-id": ...}``.
        """
        return _fill(template, values)

    async def request(
        self,
        method: str,
        path: str,
        *,
        version: str = "v1",
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        cost: int | None = None,
        priority: Priority = Priority.INTERACTIVE,
        timeout: float | None = None,
    ) -> ApiResponse:
        """Call any Pipedrive endpoint through the same budget, retry policy and OAuth session.

        :param path: percent-encoded, e.g. from :meth:`path`; relative to the ``version``'s base URL (v1: the
            client's base URL; v2: ``/api/v2`` beside it).
        :param json: the JSON body, if any.
        :param cost: the tokens to charge; by default the documented ``x-token-cost`` of the matching operation
            (``/deals/123`` finds ``/deals/{id}``), else that version's list cost (20 on v1, 10 on v2), logged.
        :returns: the envelope's ``data`` and ``additional_data``, the status and the headers.

        GET, PUT and DELETE are retried like the other idempotent calls; POST and PATCH like ``add_channel``.
        Search operations also take a slot of their own burst window (10 per 2 s).
        """
        method = method.upper()
        if method not in REPEAT:
            raise ValidationError("method", f"must be one of {', '.join(REPEAT)}, got {method!r}")
        if version not in DEFAULT_COST:
            raise ValidationError("version", f"must be 'v1' or 'v2', got {version!r}")
        if not isinstance(path, str) or not path.startswith("/") or "?" in path or "#" in path:
            raise ValidationError("path", f"must start with '/' and hold no query (use params=), got {path!r}")
        body = None if json is None else _dumps(json)
        call = prepare(method, path, body, priority, timeout, version=version, params=_query(params), cost=cost)
        response = await self._call(call)
        envelope = response.body if isinstance(response.body, dict) else {}
        return ApiResponse(response.status, envelope.get("data"), envelope.get("additional_data"), response.headers)

    def paginate(
        self,
        path: str,
        *,
        version: str = "v1",
        params: Mapping[str, Any] | None = None,
        priority: Priority = Priority.INTERACTIVE,
        timeout: float | None = None,
    ) -> AsyncIterator[Any]:
        """Iterate the items of a list endpoint across its pages, each page a charged ``GET``.

        v1 pages by offset (``additional_data.pagination``: ``more_items_in_collection``, ``next_start``, sent
        back as ``start``); v2 by cursor (``additional_data.next_cursor``, sent back as ``cursor``).
        ``timeout`` bounds each page's call.

        :raises ApiError: a page whose ``data`` is not a list, whose paging fields have an odd shape, or whose
            next offset or cursor does not move on (a server repeating itself would be paged for ever); the
            items of that page are not yielded.
        """
        async def page(query: dict[str, Any]) -> ApiResponse:
            return await self.request("GET", path, version=version, params=query, priority=priority, timeout=timeout)

        return walk(page, version, params)

    def _call(self, call: Call) -> Coroutine[Any, Any, Response]:
        """Send one call, retried as the policy says (see :func:`~pipedrive_channels._call.send`).

        Not a coroutine of its own: the caller awaits ``send``'s, one layer of coroutines fewer on every suspension.
        """
        return send(call, self._transport, self._budget, self._retry)
