"""``pipedrive-channels demo``: the demo (``pipedrive_channels._demo``) with the back-fill's progress display (over the
Channels pass: the notes pass takes a few seconds)."""

from __future__ import annotations

import argparse
import asyncio

from ._common import EXIT_OK
from ._options import positive_int
from ._progress import Display


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` command."""
    demo = commands.add_parser(
        "demo",
        help="back-fill a sample history into the embedded fake Pipedrive, through the Channels API and as notes",
    )
    demo.add_argument("--messages", type=positive_int, default=2_000, help="messages to back-fill (default 2000)")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from .._demo import run_demo  # it starts the fake server: loaded only for this command

    display = Display(args.messages, quiet=False)
    asyncio.run(run_demo(messages=args.messages, on_progress=display.on_progress, display=display))
    return EXIT_OK
