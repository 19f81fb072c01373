"""``Router``: one handler per (entity, action), chosen for each event, most specific first."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..errors import ValidationError
from ._events import WebhookEvent

__all__ = ["ANY", "Handler", "Router"]

Handler = Callable[[WebhookEvent], Awaitable[None]]
"""What handles an event: an async callable taking a :class:`WebhookEvent` (a :class:`Router` is one)."""

ANY = "*"
"""The entity or action a route gives to match every one."""


class Router:
    """Register handlers by entity and action; the router is itself a :data:`Handler`::

        router = Router()

        @router.on("note", "create")
        async def note_added(event: WebhookEvent) -> None: ...

        @router.on("person")          # any action on a person
        async def person_changed(event: WebhookEvent) -> None: ...

        @router.fallback
        async def anything_else(event: WebhookEvent) -> None: ...

        app = create_webhook_app(router, username=..., password=...)

    For each event the most specific route runs: entity and action, then entity and ``"*"``, then ``"*"`` and
    action, then ``"*"`` and ``"*"``; else the fallback; else nothing (the event counts as handled).
    """

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], Handler] = {}
        self._fallback: Handler | None = None

    def __repr__(self) -> str:
        routes = ", ".join(f"{entity}.{action}" for entity, action in self._routes)
        return f"Router([{routes}])"

    def on(self, entity: str = ANY, action: str = ANY) -> Callable[[Handler], Handler]:
        """A decorator registering a handler for ``entity`` and ``action`` (``"*"``: any); returns it unchanged.

        :raises ValidationError: ``entity`` or ``action`` is not a non-empty string, or the route has a handler.
        """
        for name, value in (("entity", entity), ("action", action)):
            if not isinstance(value, str) or not value:
                raise ValidationError(name, f"must be a non-empty string, got {value!r}")
        if (entity, action) in self._routes:
            raise ValidationError("route", f"{entity}.{action} already has a handler")

        def register(handler: Handler) -> Handler:
            if not callable(handler):
                raise ValidationError("handler", f"must be an async callable, got {type(handler).__name__}")
            if (entity, action) in self._routes:
                raise ValidationError("route", f"{entity}.{action} already has a handler")
            self._routes[entity, action] = handler
            return handler

        return register

    def fallback(self, handler: Handler) -> Handler:
        """A decorator registering the handler of the events no route matches; returns it unchanged.

        :raises ValidationError: a fallback is registered already.
        """
        if self._fallback is not None:
            raise ValidationError("fallback", "is registered already")
        self._fallback = handler
        return handler

    def route(self, event: WebhookEvent) -> Handler | None:
        """The handler that :meth:`__call__` runs for ``event``, or None."""
        entity, action = event.meta.entity, event.meta.action
        for key in ((entity, action), (entity, ANY), (ANY, action), (ANY, ANY)):
            handler = self._routes.get(key)
            if handler is not None:
                return handler
        return self._fallback

    async def __call__(self, event: WebhookEvent) -> None:
        """Run the handler :meth:`route` picks for ``event`` (nothing when none does)."""
        handler = self.route(event)
        if handler is not None:
            await handler(event)
