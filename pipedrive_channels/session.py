"""Deprecated: the transport is private now (``pipedrive_channels._transport``); this re-export is kept for one release.

``Session`` was renamed ``Transport``: the old name read as the ``session=`` argument, an ``aiohttp.ClientSession``.
"""

from __future__ import annotations

import warnings

from ._transport import DEFAULT_BASE_URL, DEFAULT_MAX_ANSWER_BYTES, Response, Transport

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_MAX_ANSWER_BYTES", "Response", "Session"]

Session = Transport

warnings.warn(
    "pipedrive_channels.session is deprecated: the transport is private now, use ChannelsClient",
    DeprecationWarning,
    stacklevel=2,
)
