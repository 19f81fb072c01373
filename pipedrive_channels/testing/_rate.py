"""Pipedrive's burst limit as the fake counts it: requests per token over a rolling 2-second window."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

WINDOW = 2.0


class RateWindows:
    """The arrival times inside the window, per rate-limit key (a token)."""

    def __init__(self) -> None:
        self._windows: dict[str, deque[float]] = {}
        self.peak = 0
        """The most requests any key had in its window so far."""

    def count(self, key: str, now: float, limit: int) -> tuple[dict[str, str], bool]:
        """Count one request for ``key``; return the ``x-ratelimit-*`` headers and whether it is over ``limit``."""
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = deque()
        while window and window[0] <= now - WINDOW:
            window.popleft()
        window.append(now)  # rejected requests count too, as Pipedrive counts every request
        self.peak = max(self.peak, len(window))
        headers = {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(max(0, limit - len(window))),
            "x-ratelimit-reset": f"{window[0] + WINDOW - now:.3f}",
        }
        return headers, len(window) > limit


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
