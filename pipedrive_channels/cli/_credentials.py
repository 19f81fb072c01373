"""Where a command's credentials come from: never the command line (it shows in ``ps``), always the environment.

``--token-file PATH`` (a JSON token store, refreshed and saved back when ``$PIPEDRIVE_CLIENT_ID`` and
``$PIPEDRIVE_CLIENT_SECRET`` are set), else ``$PIPEDRIVE_ACCESS_TOKEN`` (a bearer token), else
``$PIPEDRIVE_API_TOKEN`` (a company API token). The API root is ``--base-url``, else ``$PIPEDRIVE_BASE_URL``, else
the client's default.
"""

from __future__ import annotations

import argparse
import os
from datetime import datetime, timezone
from typing import Any

import attrs

from ..auth import ApiToken, JsonFileTokenStore, OAuthApp, OAuthToken
from ..budget import RateBudget
from ..client import ChannelsClient
from ..errors import ValidationError
from ._common import PROG, UsageError, to_stderr

ENV_ACCESS_TOKEN = "PIPEDRIVE_ACCESS_TOKEN"
ENV_API_TOKEN = "PIPEDRIVE_API_TOKEN"
ENV_CLIENT_ID = "PIPEDRIVE_CLIENT_ID"
ENV_CLIENT_SECRET = "PIPEDRIVE_CLIENT_SECRET"
ENV_BASE_URL = "PIPEDRIVE_BASE_URL"


@attrs.frozen
class Credentials:
    """The token a command uses, the app that may refresh it, and the store it is saved back to."""

    token: OAuthToken | ApiToken | str = attrs.field(repr=False)  # a plain string is the secret itself
    app: OAuthApp | None
    store: JsonFileTokenStore | None


def oauth_app(
    token_url: str | None, *, redirect_uri: str | None = None, authorize_url: str | None = None, required: bool
) -> OAuthApp | None:
    """The app from ``$PIPEDRIVE_CLIENT_ID`` and ``$PIPEDRIVE_CLIENT_SECRET``; None (or a usage error) without."""
    client_id, client_secret = os.environ.get(ENV_CLIENT_ID), os.environ.get(ENV_CLIENT_SECRET)
    if not client_id and not client_secret and not required:
        return None
    if not client_id or not client_secret:
        raise UsageError(f"set both ${ENV_CLIENT_ID} and ${ENV_CLIENT_SECRET} (the app's OAuth credentials)")
    urls: dict[str, Any] = {"token_url": token_url, "authorize_url": authorize_url}
    try:
        return OAuthApp(
            client_id, client_secret, redirect_uri=redirect_uri, **{k: v for k, v in urls.items() if v is not None}
        )
    except ValidationError as invalid:
        raise UsageError(str(invalid)) from None


async def credentials(args: argparse.Namespace) -> Credentials:
    """The token to use: ``--token-file``, else ``$PIPEDRIVE_ACCESS_TOKEN``, else ``$PIPEDRIVE_API_TOKEN``."""
    if args.token_file is not None:
        store = JsonFileTokenStore(args.token_file)
        try:
            token = await store.load()
        except (OSError, ValueError, TypeError) as unreadable:  # messages name the field or position, never a value
            raise UsageError(f"cannot read the token file {args.token_file}: {type(unreadable).__name__}") from None
        if token is None:
            raise UsageError(f"token file {args.token_file} not found (create it with `{PROG} auth login`)")
        app = oauth_app(args.token_url, required=False)
        if app is None and token.expires_at is not None and token.expires_at <= datetime.now(timezone.utc):
            to_stderr(
                f"warning: the token in {args.token_file} expired at {token.expires_at:%Y-%m-%d %H:%M %Z}; set "
                f"${ENV_CLIENT_ID} and ${ENV_CLIENT_SECRET} to refresh it"
            )
        return Credentials(token, app, store)
    if access_token := os.environ.get(ENV_ACCESS_TOKEN):
        return Credentials(access_token, None, None)
    if api_token := os.environ.get(ENV_API_TOKEN):
        return Credentials(ApiToken(api_token), None, None)
    raise UsageError(f"no credentials: pass --token-file PATH, or set ${ENV_ACCESS_TOKEN} or ${ENV_API_TOKEN}")


def auth_kind(args: argparse.Namespace) -> str:
    """Which burst limits apply ("api_token" or "oauth"), from where the credentials would come; reads nothing."""
    environ = os.environ
    if args.token_file is None and not environ.get(ENV_ACCESS_TOKEN) and environ.get(ENV_API_TOKEN):
        return "api_token"
    return "oauth"


def make_client(args: argparse.Namespace, found: Credentials, budget: RateBudget | None) -> ChannelsClient:
    """The client of ``found`` credentials, at ``--base-url`` (else ``$PIPEDRIVE_BASE_URL``, else its default)."""
    base_url = args.base_url or os.environ.get(ENV_BASE_URL) or None
    try:
        return ChannelsClient(found.token, app=found.app, token_store=found.store, base_url=base_url, budget=budget)
    except ValidationError as invalid:  # e.g. a plain-http base URL to a non-loopback host
        raise UsageError(str(invalid)) from None
