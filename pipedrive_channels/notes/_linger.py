"""Live delivery's coalescing: a dirty group is written ``delay`` seconds after it became dirty, by one background
task per target.

The trade-off: a burst of messages in one conversation becomes one write (one request, not one per message),
and a note is updated at most once per ``delay``, so what a user sees in Pipedrive lags the chat by up to that.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Awaitable, Callable

__all__ = ["Linger"]

_log = logging.getLogger("pipedrive_channels")

Group = tuple[str, str]

_CONCURRENCY = 8
"""Groups written at once by the background task (the budget paces the calls in any case)."""


class Linger:
    """Schedules group writes ``delay`` seconds after a group became dirty; ``write`` handles its own errors."""

    def __init__(self, delay: float, write: Callable[[Group], Awaitable[None]]) -> None:
        self.delay = delay
        self._write = write
        self._due: dict[Group, float] = {}
        self._heap: list[tuple[float, Group]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy = False  # writing a batch (stop() lets it end rather than cancel it mid-call)

    def mark(self, group: Group, delay: float | None = None) -> None:
        """The group became dirty: write it after ``delay`` (default the linger), unless a write is already due."""
        if group in self._due:
            return
        when = time.monotonic() + (self.delay if delay is None else delay)
        self._due[group] = when
        heapq.heappush(self._heap, (when, group))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        self._wake.set()

    async def stop(self) -> None:
        """End the background task: at once when it waits, after its batch when it writes; nothing is left due."""
        task, self._task = self._task, None
        self._due.clear()
        self._heap.clear()
        if task is None:
            return
        if not self._busy:  # else it ends after its batch: it is no longer the target's task
            task.cancel()
        try:
            await asyncio.gather(task, return_exceptions=True)
        finally:
            task.cancel()  # flush() itself cancelled: the task must not outlive it

    async def _run(self) -> None:
        me = asyncio.current_task()
        while self._task is me:
            now = time.monotonic()
            if not self._heap or self._heap[0][0] > now:
                self._wake.clear()
                wait = None if not self._heap else self._heap[0][0] - now
                with contextlib.suppress(asyncio.TimeoutError):  # not TimeoutError before Python 3.11
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            batch = []
            while self._heap and self._heap[0][0] <= now:
                _, group = heapq.heappop(self._heap)
                del self._due[group]
                batch.append(group)
            self._busy = True
            try:
                for start in range(0, len(batch), _CONCURRENCY):
                    results = await asyncio.gather(*map(self._write, batch[start:start + _CONCURRENCY]),
                                                   return_exceptions=True)
                    for error in results:
                        if isinstance(error, Exception):
                            _log.error("a background note write failed: %s: %s", type(error).__name__, error)
            finally:
                self._busy = False
