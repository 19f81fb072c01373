"""A search operation's admission: a slot of the search operations' own window (10 per 2 s on every plan) and
the call's own admission, taken together so that neither is left behind when the other fails."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from ._contract import Admission, Budget, Priority

_T = TypeVar("_T")


class SearchAdmission:
    """A search request's admission: its slot in the budget's window and in the search window, settled together."""

    __slots__ = ("_main", "_search")

    def __init__(self, main: Admission, search: Admission) -> None:
        self._main = main
        self._search = search

    def settle(self, headers: Mapping[str, str] | None = None) -> None:
        self._main.settle(headers)
        self._search.settle()

    def refund(self) -> None:
        self._main.refund()
        self._search.refund()


async def with_search_slot(
    search: Budget,
    admit: Callable[[float | None], Awaitable[_T]],
    priority: Priority,
    timeout: float | None,
    clock: Callable[[], float],
) -> tuple[_T, Admission]:
    """Take a slot of the search window, then ``admit(timeout left)`` the call itself; both or neither.

    If the call is not admitted (refused, cancelled), its search slot is settled: nothing was sent, and it frees
    one window from now.
    """
    started = clock()
    slot = await search.acquire(0, priority=priority, timeout=timeout)
    try:
        return await admit(None if timeout is None else max(0.0, timeout - (clock() - started))), slot
    except BaseException:
        slot.settle()
        raise
