"""The extension's endpoints, and the manifest that lists them for Pipedrive's Developer Hub."""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from ..errors import ValidationError
from .provider import ChannelProvider, implemented

__all__ = ["ENDPOINTS", "MANIFEST_VERSION", "UNINSTALL_PATH", "Endpoint", "manifest", "normalize_prefix", "served"]

MANIFEST_VERSION = "v202101"
"""The only manifest version Pipedrive documents."""

UNINSTALL_PATH = "/callback"
"""Where (under the prefix) the OAuth uninstall callback is served: set the app's Callback URL to it."""


class Endpoint(NamedTuple):
    """One manifest endpoint: its manifest key, HTTP method, path template and the provider method serving it.

    ``path`` uses ``{name}`` placeholders (aiohttp's form); the manifest writes them as ``:name``.
    """

    key: str
    method: str
    path: str
    provider_method: str


ENDPOINTS = (
    Endpoint("getConversations", "GET", "/channels/{providerChannelId}/conversations", "get_conversations"),
    Endpoint(
        "getConversationById",
        "GET",
        "/channels/{providerChannelId}/conversations/{sourceConversationId}",
        "get_conversation",
    ),
    Endpoint("postMessage", "POST", "/channels/{providerChannelId}/messages", "post_message"),
    Endpoint(
        "getMessageById",
        "GET",
        "/channels/{providerChannelId}/conversations/{sourceConversationId}/messages/{sourceMessageId}",
        "get_message",
    ),
    Endpoint("getSenderById", "GET", "/channels/{providerChannelId}/senders/{senderId}", "get_sender"),
    Endpoint("getTemplates", "GET", "/channels/{providerChannelId}/templates", "get_templates"),
    Endpoint("deleteChannelById", "DELETE", "/channels/{providerChannelId}", "delete_channel"),
)
"""Every endpoint the manifest can list, in the docs' order."""

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def normalize_prefix(prefix: str) -> str:
    """``prefix`` as a path that starts with ``/`` and has no trailing ``/`` (``""`` for the root)."""
    prefix = prefix.strip().rstrip("/")
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    if any(char in prefix for char in "?#{}: ") or not prefix.isprintable():
        raise ValidationError("prefix", f"must be a plain URL path, got {prefix!r}")
    return prefix


def served(provider: ChannelProvider | type[ChannelProvider]) -> tuple[Endpoint, ...]:
    """The endpoints ``provider`` implements (the required ones always).

    Raises :class:`~pipedrive_channels.errors.ValidationError` unless ``provider`` is a :class:`ChannelProvider`
    (subclass or instance): any other object would "implement" every optional endpoint.
    """
    if not isinstance(provider, ChannelProvider) and not (
        isinstance(provider, type) and issubclass(provider, ChannelProvider)
    ):
        raise ValidationError("provider", f"must be a ChannelProvider subclass or instance, got {provider!r:.80}")
    return tuple(e for e in ENDPOINTS if e.provider_method not in _OPTIONAL or implemented(provider, e.provider_method))


_OPTIONAL = frozenset({"get_message", "get_sender", "get_templates", "delete_channel"})


def manifest(
    base_url: str, provider: ChannelProvider | type[ChannelProvider], prefix: str = "/pipedrive"
) -> dict[str, Any]:
    """The manifest JSON for ``provider`` served by :func:`~.create_app` at ``base_url`` + ``prefix``.

    Lists exactly the endpoints the provider implements, as URL templates with ``:providerChannelId`` etc.::

        manifest("https://bot.example.com", MyProvider)
        # {"version": "v202101", "endpoints": {"getConversations":
        #   "https://bot.example.com/pipedrive/channels/:providerChannelId/conversations", ...}}
    """
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")) or len(base_url) < 10:
        raise ValidationError("base_url", f"must be an http(s) URL, got {base_url!r}")
    root = base_url.rstrip("/") + normalize_prefix(prefix)
    endpoints = {e.key: root + _PLACEHOLDER.sub(r":\1", e.path) for e in served(provider)}
    return {"version": MANIFEST_VERSION, "endpoints": endpoints}
