"""The ``backfill`` command's targets: their options, the target a command line names, and its counts in words."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from .._target import Target
from ..backfill import ChannelsTarget
from ._common import UsageError

TARGETS = ("channels", "notes")
"""What ``--target`` takes: the Channels API (the default; Pipedrive removed it on 2026-02-01), or notes on the
matched person (what works on live accounts)."""

TITLES = {
    "channels": "the Channels API (removed by Pipedrive on 2026-02-01)",
    "notes": "notes on the matched person (works on live accounts)",
}

# The notes target's counts, in the order and words of the report.
_NOTES_COUNTS = (
    ("persons", (("persons_found", "found"), ("persons_created", "created"), ("persons_failed", "failed"))),
    ("notes", (("notes_created", "created"), ("notes_updated", "updated"))),
)


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--target`` and the notes target's own options."""
    parser.add_argument(
        "--target",
        choices=TARGETS,
        default="channels",
        help="where records go: the Channels API (default; removed by Pipedrive on 2026-02-01) or notes, a "
        "transcript per conversation on the person found by the record's contact (works on live accounts)",
    )
    parser.add_argument(
        "--group-by",
        choices=("day", "conversation"),
        help="--target notes: one note per conversation per UTC day (default), or per conversation",
    )
    parser.add_argument(
        "--no-create-persons",
        dest="create_persons",
        action="store_false",
        help="--target notes: a contact that matches no person fails its records instead of creating one",
    )


def check(args: argparse.Namespace) -> None:
    """Refuse the options that do not go with ``--target`` (one line, exit 2)."""
    if args.target != "notes":
        if args.group_by is not None:
            raise UsageError("--group-by goes with --target notes")
        if not args.create_persons:
            raise UsageError("--no-create-persons goes with --target notes")
    elif args.channel:
        raise UsageError("--channel adds a Channels API channel: it does not go with --target notes")


def make(name: str, args: argparse.Namespace) -> Target:
    """The target ``name`` with the command line's options (the notes options only apply to ``--target notes``)."""
    if name == "channels":
        return ChannelsTarget()
    from ..notes import NotesTarget  # only the notes commands need it

    chosen = args.target == "notes"
    return NotesTarget(
        create_persons=args.create_persons if chosen else True,
        group_by=(args.group_by if chosen else None) or "day",
    )


def counts_text(counts: Mapping[str, int]) -> str | None:
    """The target's counts as one line of the report (``None`` when it has none)."""
    if not counts:
        return None
    parts: list[str] = []
    named: set[str] = set()
    for noun, fields in _NOTES_COUNTS:
        present = [(key, word) for key, word in fields if key in counts]
        if present:
            parts.append(f"{noun}: " + ", ".join(f"{counts[key]:,} {word}" for key, word in present))
            named.update(key for key, _ in present)
    parts.extend(f"{key}: {value:,}" for key, value in counts.items() if key not in named)
    return "; ".join(parts)
