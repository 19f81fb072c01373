"""One call to Pipedrive, described once: what its first attempt and every retry send and are charged.

An endpoint method of :class:`~pipedrive_channels.ChannelsClient` validates its input and builds the body and the
percent-encoded path; :func:`prepare` then looks the operation up in the cost table
(:func:`~pipedrive_channels.costs.find_operation`) for its documented cost, whether it is a search, and whether
Pipedrive deprecated it (warned once per process). Every attempt reads the :class:`Call` it returns and none
changes it, as openai-python builds its request options once per call; :func:`send` makes its first attempt and
hands a failure over to the retry policy.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Mapping
from typing import NamedTuple

from ._transport import Response, Transport
from .budget import Budget, Priority
from .costs import DEFAULT_COST, find_operation
from .errors import ApiError, PipedriveError, TransportError
from .retry import Repeat, RetryPolicy

__all__ = ["REPEAT", "Call", "prepare", "send"]

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


async def send(call: Call, transport: Transport, budget: Budget, retry: RetryPolicy | None = None) -> Response:
    """Charge, send and settle one attempt; after a 401, refresh the token once and send once more. After a failure
    worth it, hand over to ``retry`` (never before: a call that succeeds pays nothing for retrying).

    A charge is refunded when nothing was sent: the proactive refresh failed, or the connection was refused.
    The retry policy's attempts are this function without ``retry``; one coroutine, not one within another, as
    every layer of coroutines costs on each of a call's suspensions.
    """
    priority = call.priority
    refreshed = False
    try:
        while True:
            # Every request is charged before it is sent: the server counts every request it receives.
            wait = None if call.deadline is None else max(0.0, call.deadline - time.monotonic())
            # A search takes its slot of the search operations' own window (10 per 2 s) in the same admission.
            reservation = await budget.acquire(call.cost, priority=priority, timeout=wait, search=call.search)
            if transport.refresh_due():
                try:
                    # Here, not in the request: a failed refresh then sends nothing, costs nothing, and is not
                    # taken for the API's 401 below (which would ask the token endpoint a second time).
                    await transport.refresh(transport.generation)
                except BaseException:
                    reservation.refund()
                    raise
            generation = transport.generation
            try:
                response = await transport.request(
                    call.method, call.path, call.body, version=call.version, params=call.params
                )
            except ApiError as error:
                reservation.settle(error.headers)
                if error.status != 401 or refreshed or not transport.can_refresh:
                    raise
            except BaseException as error:
                if isinstance(error, TransportError) and not error.request_sent:
                    reservation.refund()  # it never left, so the server counted nothing
                else:
                    reservation.settle()
                raise
            else:
                reservation.settle(response.headers)
                return response
            refreshed = True
            await transport.refresh(generation)
    except PipedriveError as error:
        if retry is None:
            raise
        # Every retry reads the same record: it sends exactly what the first attempt sent.
        attempt = functools.partial(send, call, transport, budget)
        return await retry.retry(
            error, attempt, repeat=call.repeat, budget=budget, started=call.started, deadline=call.deadline
        )
