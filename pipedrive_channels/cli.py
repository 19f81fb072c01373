"""Command line: ``python -m pipedrive_channels demo``."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` and run the chosen command."""
    parser = argparse.ArgumentParser(prog="python -m pipedrive_channels", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the whole lifecycle against the embedded fake Pipedrive")
    demo.add_argument("--messages", type=int, default=2000, help="messages to back-fill (default 2000)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.messages < 1:
            parser.error("--messages must be at least 1")
        from .demo import run_demo

        asyncio.run(run_demo(messages=args.messages))
