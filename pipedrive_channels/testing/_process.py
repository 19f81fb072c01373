"""Serving a :class:`FakePipedrive` from its own process: ``python -m pipedrive_channels.testing``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import stat
from collections.abc import Sequence

from ._server import FakePipedrive


class _StopOnEof(asyncio.Protocol):
    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop.set()


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # Windows: SIGINT still raises KeyboardInterrupt
            loop.add_signal_handler(signum, stop.set)
    stdin: asyncio.BaseTransport | None = None
    # Only a pipe: a parent that dies closes it. /dev/null or a file would end the server at once.
    with contextlib.suppress(OSError, ValueError):
        if stat.S_ISFIFO(os.fstat(0).st_mode):
            stdin, _ = await loop.connect_read_pipe(
                lambda: _StopOnEof(stop), os.fdopen(0, "rb", closefd=False)
            )
    fake = FakePipedrive()
    if args.access_token:
        fake.add_access_token(args.access_token)
    if args.channel:
        fake.add_channel(args.channel)
    await fake.start(args.port)
    try:
        print(f"READY {fake.root_url}", flush=True)
        await stop.wait()
    finally:
        await fake.close()
        if stdin is not None:
            stdin.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Serve a :class:`FakePipedrive` until SIGTERM, SIGINT or stdin EOF (see the package docstring)."""
    parser = argparse.ArgumentParser(prog="python -m pipedrive_channels.testing", description=main.__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--access-token", help="accept this bearer token, never expiring")
    parser.add_argument("--channel", help="pre-add a channel with this provider_channel_id")
    asyncio.run(_serve(parser.parse_args(argv)))
