"""What the client sends for a receive, shared with the back-fill: the JSON body encoder and the operation.

The back-fill keys its journal by a digest of the very bytes the client sends, and estimates what the client is
charged; an encoder or a cost written twice could drift apart, and a drifted key silently re-sends (or skips)
what a checkpoint holds.
"""

from __future__ import annotations

import json
from typing import Any

from .costs import Operation, find_operation

RECEIVE_MESSAGE_PATH = "/channels/messages/receive"

_encode = json.JSONEncoder(separators=(",", ":")).encode  # built once: json.dumps(separators=) builds one per call


def dumps(value: Any) -> bytes:
    """A request body: compact JSON, keys in the order given (cattrs writes a model's fields in one fixed order)."""
    return _encode(value).encode()


def _receive_message() -> Operation:
    operation = find_operation("v1", "POST", RECEIVE_MESSAGE_PATH)
    if operation is None:  # only a cost table regenerated from a spec without it; fail at import, not mid-run
        raise LookupError(f"the cost table lists no POST {RECEIVE_MESSAGE_PATH}")
    return operation


RECEIVE_MESSAGE = _receive_message()
"""``POST /channels/messages/receive`` as the cost table documents it: its cost and whether it is deprecated."""
