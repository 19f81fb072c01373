"""One call to Pipedrive, described once: what its first attempt and every retry send and are charged.

An endpoint method of :class:`~pipedrive_channels.ChannelsClient` validates its input and builds the body and the
percent-encoded path; :func:`prepare` then looks the operation up in the cost table
(:func:`~pipedrive_channels.costs.find_operation`) for its documented cost, whether it is a search, and whether
Pipedrive deprecated it (warned once per process). Every attempt reads the :class:`Call` it returns and none
changes it, as openai-python builds its request options once per call.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from typing import NamedTuple

from .budget import Priority
from .costs import DEFAULT_COST, find_operation
from .retry import Repeat

__all__ = ["REPEAT", "Call", "prepare"]

REPEAT = {"GET": Repeat.IDEMPOTENT, "PUT": Repeat.IDEMPOTENT, "DELETE": Repeat.DELETE,
          "POST": Repeat.UNSAFE, "PATCH": Repeat.UNSAFE}
"""What sending a call of each method twice does, unless its endpoint knows better."""

_log = logging.getLogger("pipedrive_channels")
_warned: set[tuple[str, ...]] = set()  # deprecated operations and unknown paths already warned about


class Call(NamedTuple):
    """One logical call, built once before its first attempt.

    A named tuple, as the transport's ``Response``, rather than a frozen attrs class: as immutable, and built on the
    hot path, where attrs' frozen ``__init__`` (an ``object.__setattr__`` per field) cost 5% of the SDK's own work.
    """

    method: str
    path: str  # percent-encoded, relative to the version's base URL
    body: bytes | None
    cost: int
    priority: Priority
    version: str
    params: Mapping[str, str] | None
    search: bool  # a search also takes a slot of the search operations' own window
    repeat: Repeat
    started: float  # time.monotonic() when the call began, for the retry policy's max_elapsed
    deadline: float | None  # started + the caller's timeout: no budget wait or retry goes past it; None: no limit


def prepare(
    method: str,
    path: str,
    body: bytes | None,
    priority: Priority,
    timeout: float | None,
    *,
    version: str = "v1",
    template: str | None = None,
    params: Mapping[str, str] | None = None,
    cost: int | None = None,
    repeat: Repeat | None = None,
) -> Call:
    """The call to ``path``, charged ``cost`` or else the documented cost of its operation.

    :param template: the operation's path template (an endpoint method knows its own); else it is found from
        ``path``, and a path the table does not know is charged that version's list cost, logged once.
    :param repeat: what sending it twice does; else as :data:`REPEAT` says for ``method``.
    """
    operation = find_operation(version, method, path if template is None else template)
    if operation is None:
        search = False
        if cost is None:
            cost = _unknown_cost(version, method, path)
    else:
        search = operation.search
        if cost is None:
            cost = operation.cost
        # Checked inline, as every call of a deprecated operation passes here; warned once per process.
        if operation.deprecated and (key := (version, method, operation.template)) not in _warned:
            _warn_deprecated(key)
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    repeat = REPEAT[method] if repeat is None else repeat
    return Call(method, path, body, cost, priority, version, params, search, repeat, started, deadline)


def _warn_deprecated(key: tuple[str, str, str]) -> None:
    _warned.add(key)
    version, method, template = key
    message = f"{method} {template} ({version}) is deprecated by Pipedrive and may stop answering (404 or 410)"
    # Level 4: past this function, prepare() and the client's method, at the line that called the method.
    warnings.warn(message, DeprecationWarning, stacklevel=4)


def _unknown_cost(version: str, method: str, path: str) -> int:
    shape = "/".join("{}" if any(char.isdigit() for char in part) else part for part in path.split("/"))
    if (version, f"{method} {shape}") not in _warned:
        _warned.add((version, f"{method} {shape}"))
        _log.warning("%s %s (%s) is not in the cost table: charging %d tokens", method, path, version,
                     DEFAULT_COST[version])
    return DEFAULT_COST[version]
