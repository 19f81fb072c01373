"""The :class:`Authorizer`: the credentials a transport sends, refreshed one flight at a time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp

from ..errors import AuthenticationError, ValidationError
from ._app import OAuthApp
from ._stores import TokenStore
from ._tokens import ApiToken, OAuthToken, require_api_domain

__all__ = ["REFRESH_MARGIN", "Authorizer"]

_log = logging.getLogger("pipedrive_channels")

REFRESH_MARGIN = 60.0
"""Seconds before expiry at which a token is refreshed proactively (at most half a known lifetime)."""


class Authorizer:
    """The credentials a session sends, kept fresh: one refresh at a time, however many calls wait.

    ``generation`` counts the ends of refreshes (adopted or failed) and adopted stored tokens. A caller notes it
    before sending; after a 401 it asks for a refresh of that generation. If a refresh ended since, it does not
    start another: it retries with the new token, or gets that refresh's failure, which is final for every call
    that waited on it (a later call may try again).

    :param follow_api_domain: requests go to the token's ``api_domain`` (no explicit ``base_url``), so a token
        naming any other host than https ``pipedrive.com`` or a subdomain is refused, from the caller, a token
        answer or the store.
    """

    def __init__(
        self,
        token: OAuthToken | ApiToken | str,
        app: OAuthApp | None = None,
        store: TokenStore | None = None,
        clock: Callable[[], float] = time.time,
        *,
        follow_api_domain: bool = True,
    ) -> None:
        if isinstance(token, str):
            token = OAuthToken(access_token=token)
        if not isinstance(token, OAuthToken | ApiToken):
            raise ValidationError("token", f"must be an OAuthToken, ApiToken or str, got {type(token).__name__}")
        self._app = app
        self._store = store
        self._clock = clock
        self._follow_api_domain = follow_api_domain
        self._flight: asyncio.Future[None] | None = None
        self._failure: tuple[int, Exception] | None = None  # the generation a failed refresh ended, and why
        self.generation = 0
        self._set(token)

    def __repr__(self) -> str:
        return f"Authorizer(kind={type(self.token).__name__}, generation={self.generation})"

    @property
    def can_refresh(self) -> bool:
        """Whether a 401 can be answered by a refresh (an OAuth token with a refresh token and an app)."""
        return self._app is not None and isinstance(self.token, OAuthToken) and bool(self.token.refresh_token)

    @property
    def api_domain(self) -> str | None:
        """The current token's ``api_domain``, if any."""
        return self.token.api_domain if isinstance(self.token, OAuthToken) else None

    def refresh_due(self) -> bool:
        """Whether the token expires within the refresh margin (cheap: called before every request)."""
        return self._refresh_at is not None and self._clock() >= self._refresh_at

    async def load_stored(self) -> None:
        """Adopt the store's token when it expires later than the current one (e.g. after a restart).

        :raises ValidationError: the stored token names an ``api_domain`` requests may not follow.
        """
        if self._store is None or not isinstance(self.token, OAuthToken):
            return
        stored = await self._store.load()
        current = self.token.expires_at
        if stored is not None and stored.expires_at is not None and (current is None or stored.expires_at > current):
            self._set(stored)
            self._failure = None
            self.generation += 1

    async def refresh(self, generation: int, http: aiohttp.ClientSession | None) -> None:
        """Refresh the token unless that happened since ``generation``; concurrent callers share one request.

        :raises PipedriveError: this refresh failed, or the one that ended ``generation`` did.
        """
        if generation != self.generation:
            if self._failure is not None and self._failure[0] == generation:
                raise self._failure[1]
            return
        if not self.can_refresh:
            raise AuthenticationError(401, "the access token is invalid or expired, and it cannot be refreshed")
        if self._flight is None:
            # A task of its own that adopts the new token itself: it goes on, and the token is adopted, even if
            # every caller waiting for it is cancelled.
            self._flight = asyncio.ensure_future(self._refresh(http))
            # Mark the outcome retrieved even if every waiter was cancelled (no "never retrieved" warning).
            self._flight.add_done_callback(lambda flight: flight.cancelled() or flight.exception())
        # shield: a cancelled caller must not cancel the refresh other callers wait on.
        await asyncio.shield(self._flight)

    async def _refresh(self, http: aiohttp.ClientSession | None) -> None:
        assert self._app is not None and isinstance(self.token, OAuthToken)
        try:
            token = await self._app.refresh(self.token, session=http)
            self._check(token)
            if self._store is not None:
                await self._store.save(token)
        except Exception as exc:
            _log.warning("OAuth token refresh failed: %s", exc)
            self._failure = (self.generation, exc)
            raise
        else:
            # Its lifetime from now, when it has just arrived: what expires_in said, less a few microseconds.
            lifetime = token.expires_at.timestamp() - self._clock() if token.expires_at is not None else None
            self._set(token, lifetime)
            self._failure = None
            _log.info("OAuth token refreshed; it expires at %s", token.expires_at)
        finally:
            self.generation += 1
            self._flight = None

    def _check(self, token: OAuthToken | ApiToken) -> None:
        if self._follow_api_domain and isinstance(token, OAuthToken) and token.api_domain is not None:
            require_api_domain(token.api_domain)

    def _set(self, token: OAuthToken | ApiToken, lifetime: float | None = None) -> None:
        """Adopt ``token``; ``lifetime`` is its whole lifetime in seconds, when known (it was just issued)."""
        self._check(token)
        self.token = token
        if isinstance(token, ApiToken):
            self.headers = {"x-api-token": token.value}
        else:
            self.headers = {"Authorization": f"Bearer {token.access_token}"}
        expires_at = token.expires_at if isinstance(token, OAuthToken) else None
        if expires_at is None or not self.can_refresh or (lifetime is not None and lifetime <= 0):
            # A token issued already expired cannot be refreshed ahead of time; a 401 will ask for a new one.
            self._refresh_at = None
        else:
            # At most half its lifetime ahead, so a short-lived token is used before it is refreshed.
            margin = REFRESH_MARGIN if lifetime is None else min(REFRESH_MARGIN, lifetime / 2)
            self._refresh_at = expires_at.timestamp() - margin
