"""A back-fill's progress on stderr, for the ``backfill`` and ``demo`` commands: a tqdm bar or a plain line.

The bar needs the optional ``cli`` extra (``pip install 'pipedrive-channels[cli]'``) and a terminal on stderr;
otherwise a plain progress line goes to stderr every 2 s.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from ..backfill import Progress
from ._common import to_stderr

_PLAIN_PROGRESS_EVERY = 2.0
_BAR_REFRESH_EVERY = 0.5


def duration(seconds: float) -> str:
    """Seconds in human units: ``48 s``, ``12 min 30 s``, ``3 h 20 min``, ``2 d 4 h``."""
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    total = round(seconds)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s"


class Display:
    """A back-fill's progress on stderr: a tqdm bar on a terminal (when tqdm is installed), else a plain line.

    Shown from ``async with`` until its end, which closes the bar: what is printed before (a header) and after
    (the report) stays out of the bar's way.
    """

    def __init__(self, total: int | None, quiet: bool) -> None:
        self.total = total
        self.quiet = quiet
        self.last = Progress(0, 0, 0, 0.0, 0, 0.0, 0)
        self.started = time.monotonic()
        self._bar: Any = None
        self._ticker: asyncio.Future[None] | None = None

    async def __aenter__(self) -> Display:
        if self.quiet:
            return self
        self.started = time.monotonic()
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                # miniters=1, mininterval=0: every update() redraws and feeds the rate; we call it twice a second.
                self._bar = tqdm(
                    total=self.total, unit="msg", file=sys.stderr, dynamic_ncols=True, miniters=1, mininterval=0
                )
        self._ticker = asyncio.ensure_future(self._tick())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._ticker is None:
            return
        self._ticker.cancel()
        self._ticker = None
        self.show()
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    @property
    def interval(self) -> float:
        return _BAR_REFRESH_EVERY if self._bar is not None else _PLAIN_PROGRESS_EVERY

    def on_progress(self, progress: Progress) -> None:
        self.last = progress  # called after every record: keep it cheap, draw on the timer

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.show()

    def show(self) -> None:
        progress = self.last
        waiting = progress.waiting
        done = progress.delivered + progress.skipped + progress.failed + progress.held
        if self.total is not None:  # a re-run's target may deliver records an earlier run held (and it skipped)
            done = min(done, self.total)
        if self._bar is not None:
            postfix = f"tokens={progress.tokens_charged:,.0f}, waiting={waiting}, failed={progress.failed}"
            self._bar.set_postfix_str(postfix, refresh=False)
            if done > self._bar.n:
                self._bar.update(done - self._bar.n)
            else:
                self._bar.refresh()
            return
        elapsed = time.monotonic() - self.started
        of = f"/{self.total:,}" if self.total is not None else ""
        to_stderr(
            f"progress: {done:,}{of} done ({progress.delivered:,} delivered, "
            f"{f'{progress.held:,} held to be written, ' if progress.held else ''}{progress.skipped:,} skipped, "
            f"{progress.failed:,} failed), {progress.delivered / elapsed if elapsed > 0 else 0:,.1f} msg/s, "
            f"{progress.tokens_charged:,.0f} tokens, {waiting} waiting for the budget, {duration(elapsed)}"
        )

    def note(self, text: str) -> None:
        """A line on stderr that does not break the bar."""
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            to_stderr(text)
