"""Pipedrive's burst limits as the fake counts them: requests per token over a rolling 2-second window, and the
search operations' own window of 10 per token on every plan."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

WINDOW = 2.0
SEARCH_LIMIT = 10


class RateWindows:
    """The arrival times inside the window, per rate-limit key (a token), and those of its searches."""

    def __init__(self) -> None:
        self._windows: dict[str, deque[float]] = {}
        self._searches: dict[str, deque[float]] = {}
        self.search_peak = 0
        """The most searches any key had in its window so far."""

    def count(self, key: str, now: float, limit: int, *, search: bool = False) -> tuple[dict[str, str], bool]:
        """Count one request for ``key`` (and one search, with ``search``); return the ``x-ratelimit-*`` headers
        and whether it is over ``limit`` (or over :data:`SEARCH_LIMIT` searches)."""
        window = _slide(self._windows, key, now)
        reset, over = window[0] + WINDOW - now, len(window) > limit
        if search:
            searches = _slide(self._searches, key, now)
            self.search_peak = max(self.search_peak, len(searches))
            if len(searches) > SEARCH_LIMIT:  # the usual headers, with the reset of the window that refuses
                reset, over = max(reset, searches[0] + WINDOW - now), True
        headers = {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(max(0, limit - len(window))),
            "x-ratelimit-reset": f"{reset:.3f}",
        }
        return headers, over


def _slide(windows: dict[str, deque[float]], key: str, now: float) -> deque[float]:
    """``key``'s window at ``now``, this request in it."""
    window = windows.get(key)
    if window is None:
        window = windows[key] = deque()
    while window and window[0] <= now - WINDOW:
        window.popleft()
    window.append(now)  # rejected requests count too, as Pipedrive counts every request
    return window


def busiest_window(times: Iterable[float], window: float = WINDOW) -> int:
    """The most events in any rolling ``window`` seconds, counted as the fake counts: times in ``(t - window, t]``.

    ``busiest_window(r.at for r in fake.requests)`` says whether a client kept to a burst limit at the server.
    """
    ordered, start, most = sorted(times), 0, 0
    for end, at in enumerate(ordered):
        while ordered[start] <= at - window:
            start += 1
        most = max(most, end - start + 1)
    return most
