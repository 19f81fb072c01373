"""One task at a time per key (a contact's search, a group's write), the rest waiting; free keys are forgotten."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable

__all__ = ["KeyedLock"]


class KeyedLock:
    """A lock per key, kept only while a task holds or waits for it (memory stays bounded by the tasks)."""

    def __init__(self) -> None:
        self._held: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._held.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._held[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._held[key]
            if users == 1:
                del self._held[key]
            else:
                self._held[key] = (lock, users - 1)
