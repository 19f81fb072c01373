"""``pipedrive-channels backfill``: deliver a JSON Lines file resumably, or (``--dry-run``) say what it costs.

``--target channels`` (the default) sends each record with ``receive_message``; ``--target notes`` writes each
conversation's transcript as notes on the person its contact names. ``--dry-run`` estimates both, whichever is
chosen, so that the cost of moving to notes is in front of the user.

The first SIGINT (or SIGTERM) stops the run resumably, letting in-flight calls finish; a second SIGINT aborts at
once. The report goes to stdout (``--json``: one object), progress and errors to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import attrs

from ..auth import ApiToken
from ..backfill import (
    MAX_CONCURRENCY,
    BackfillReport,
    BadInput,
    Checkpoint,
    CheckpointError,
    WithContact,
    backfill,
    estimate,
    read_jsonl,
    shard_of,
)
from ..budget import Plan, RateBudget
from ..client import ChannelsClient
from ..errors import PipedriveError, ValidationError
from ..models import Message
from ._common import EXIT_FAILED, EXIT_OK, EXIT_STOPPED, UsageError, to_stderr
from ._credentials import auth_kind, credentials, make_client
from ._options import channel, int_in, positive_float, positive_int, shard, share
from ._progress import Display, duration
from ._targets import TITLES, add_options, check, counts_text, make

Item = Message | WithContact | BadInput
_PLANS = {"lite": Plan.LITE, "growth": Plan.GROWTH, "premium": Plan.PREMIUM, "ultimate": Plan.ULTIMATE}


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser], api: argparse.ArgumentParser) -> None:
    """Add the ``backfill`` command; ``api`` holds the credentials options."""
    fill = commands.add_parser(
        "backfill",
        parents=[api],
        help="deliver a JSON Lines file of messages, resumably",
        description="Deliver every message of a JSON Lines file (one receive-message body per line, optionally "
        'with "contact": {"person_id", "name", "phone", "email"}) as fast as the plan\'s rate budget allows, '
        "through the Channels API or as notes on the matched person (--target notes). Delivered records are "
        "journalled in --checkpoint, so a re-run (after Ctrl-C, a crash or kill -9) skips them and sends the rest.",
    )
    fill.add_argument("file", metavar="FILE.jsonl", help="the messages, one JSON object per line")
    add_options(fill)
    fill.add_argument("--checkpoint", metavar="PATH", help="the SQLite journal to resume from (required to send)")
    fill.add_argument(
        "--concurrency",
        type=int_in(1, MAX_CONCURRENCY),
        default=16,
        metavar="N",
        help=f"calls in flight at once, 1 to {MAX_CONCURRENCY} (default 16)",
    )
    fill.add_argument(
        "--plan", choices=[*_PLANS, "unlimited"], default="lite", help="Pipedrive plan whose limits to keep"
    )
    fill.add_argument(
        "--seats", type=positive_int, default=1, metavar="N", help="seats of the plan (daily budget; default 1)"
    )
    fill.add_argument(
        "--daily-share", type=share, default=1.0, metavar="X", help="part of the daily token budget, 0 < X <= 1"
    )
    fill.add_argument("--shard", type=shard, metavar="K/N", help="take only conversations of shard K of N")
    fill.add_argument(
        "--channel",
        type=channel,
        action="append",
        default=[],
        metavar="ID=NAME",
        help="add this channel first (once per checkpoint); repeatable",
    )
    fill.add_argument("--deadline", type=positive_float, metavar="SECONDS", help="stop resumably after this long")
    fill.add_argument("--dry-run", action="store_true", help="only print what the job costs; send nothing")
    fill.add_argument("--quiet", action="store_true", help="no progress, only the final report")
    fill.add_argument("--json", action="store_true", help="print the report as one JSON object")
    fill.set_defaults(handler=_command)


def count_lines(path: str | os.PathLike[str]) -> int:
    """The number of non-blank lines of a file: one binary pass, no decoding, no JSON."""
    count = 0
    with open(path, "rb", buffering=1 << 20) as file:
        for line in file:
            if not line.isspace():
                count += 1
    return count


def _budget(args: argparse.Namespace, auth: str) -> RateBudget:
    if args.plan == "unlimited":
        return RateBudget.unlimited()
    return RateBudget.for_plan(_PLANS[args.plan], args.seats, auth=auth, daily_share=args.daily_share)


def _command(args: argparse.Namespace) -> int:
    if not Path(args.file).is_file():
        raise UsageError(f"input file {args.file} not found")
    try:
        open(args.file, "rb").close()  # refused now, in one line, rather than by the reader, mid-run
    except OSError as error:
        raise UsageError(f"cannot read input file {args.file}: {error.strerror or error}") from None
    check(args)
    if args.dry_run:
        return _dry_run(args)
    if args.checkpoint is None:
        raise UsageError("--checkpoint PATH is required (it makes the run resumable); or use --dry-run")
    return asyncio.run(_backfill(args))


def _ours(items: Iterator[Item], which: tuple[int, int]) -> Iterator[Item]:
    k, n = which
    for item in items:
        message = item.message if isinstance(item, WithContact) else item
        if isinstance(message, BadInput) or shard_of(message.conversation_id, n) == k:
            yield item


def _dry_run(args: argparse.Namespace) -> int:
    """Print what delivering the file costs through each target (the chosen one's figures first in ``--json``)."""
    auth = auth_kind(args)
    budget = _budget(args, auth)
    results = {}
    for name in TITLES:  # one pass over the file per target: memory stays flat
        items = read_jsonl(args.file)
        try:
            results[name] = estimate(_ours(items, args.shard) if args.shard else items, budget, make(name, args))
        except OSError as error:  # reading the input failed midway
            to_stderr(f"error: cannot read {args.file}: {error}")
            return EXIT_FAILED
    chosen = results[args.target]
    if args.json:
        print(json.dumps({**attrs.asdict(chosen), "target": args.target, "plan": args.plan, "seats": args.seats,
                          "daily_share": args.daily_share, "auth": auth,
                          "estimates": {name: attrs.asdict(result) for name, result in results.items()}}))
        return EXIT_OK
    print(f"dry run of {args.file}{f' (shard {args.shard[0]}/{args.shard[1]})' if args.shard else ''}: nothing sent")
    print(f"  messages:  {chosen.messages:,}")
    print(f"  bad lines: {chosen.bad_lines:,}")
    for name, result in results.items():
        print(f"  --target {name}: {TITLES[name]}{' (chosen)' if name == args.target else ''}")
        print(f"    requests:  {result.requests:,} (without retries)")
        print(f"    tokens:    {result.tokens:,}")
        print(f"    time:      {_pace(args, budget, auth, result.seconds)}")
    return EXIT_OK


def _pace(args: argparse.Namespace, budget: RateBudget, auth: str, seconds: float) -> str:
    if args.plan == "unlimited":
        return "no rate limit (--plan unlimited)"
    per_day = budget.limits.daily_tokens or 0.0  # a plan always has a daily budget
    seats = f"{args.seats} seat{'s' if args.seats != 1 else ''}"
    return (
        f"about {duration(seconds)} at {args.plan.capitalize()}, {seats} ({budget.requests_per_window}"
        f" requests per {budget.window:g} s, {per_day:,.0f} tokens a day"
        f"{f' (share {args.daily_share:g})' if args.daily_share != 1 else ''}, {auth})"
    )


async def _backfill(args: argparse.Namespace) -> int:
    if not Path(args.checkpoint).parent.is_dir():
        raise UsageError(f"the folder of --checkpoint {args.checkpoint} does not exist")
    found = await credentials(args)
    budget = _budget(args, "api_token" if isinstance(found.token, ApiToken) else "oauth")
    client = make_client(args, found, budget)
    try:
        journal = Checkpoint(args.checkpoint)
    except CheckpointError as error:  # in use by another run, or not a SQLite file
        raise UsageError(str(error)) from None
    try:
        total = None if args.quiet or args.shard else count_lines(args.file)
        display = Display(total, args.quiet)
        if not args.quiet:
            delivered, failed = journal.counts()
            if delivered or failed:
                display.note(f"resuming from {args.checkpoint}: {delivered:,} records delivered, {failed:,} failed")
        outcome = await _run_with_signals(args, client, journal, display)
    finally:
        journal.close()
    if isinstance(outcome, int):
        return outcome
    if args.json:
        print(json.dumps(outcome.to_json()))
    else:
        print(_report_text(outcome, args.checkpoint))
    if outcome.stopped:
        return EXIT_STOPPED
    return EXIT_FAILED if outcome.failed else EXIT_OK


async def _run_with_signals(
    args: argparse.Namespace, client: ChannelsClient, journal: Checkpoint, display: Display
) -> BackfillReport | int:
    """Run the back-fill; the first SIGINT (or SIGTERM) stops it resumably, a second SIGINT aborts at once."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    job: asyncio.Future[BackfillReport] | None = None

    def on_sigint() -> None:
        if stop.is_set():
            display.note("aborting: in-flight calls are cancelled (a re-run sends them again)")
            if job is not None:
                job.cancel()
            return
        stop.set()
        display.note("stopping: letting in-flight calls finish (Ctrl-C again to abort at once)")

    def on_sigterm() -> None:
        if not stop.is_set():
            stop.set()
            display.note("stopping (SIGTERM): letting in-flight calls finish")

    installed = []
    for signum, handler in ((signal.SIGINT, on_sigint), (signal.SIGTERM, on_sigterm)):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # no loop signal handlers (e.g. Windows)
            loop.add_signal_handler(signum, handler)
            installed.append(signum)
    try:
        async with display, client:
            job = asyncio.ensure_future(
                backfill(
                    client,
                    read_jsonl(args.file),
                    concurrency=args.concurrency,
                    checkpoint=journal,
                    on_progress=display.on_progress,
                    ensure_channels=dict(args.channel) or None,
                    shard=args.shard,
                    deadline=args.deadline,
                    stop=stop,
                    target=make(args.target, args),
                )
            )
            try:
                return await job
            except asyncio.CancelledError:
                if not job.cancelled():
                    raise  # we were cancelled ourselves, not the job
    except ValidationError as error:  # the run's set-up, not a record's: e.g. a journal the notes grouped otherwise
        raise UsageError(str(error)) from None
    except PipedriveError as error:  # of the run, not of a record: the Redis budget, the journal, a channel
        to_stderr(f"error: {error}; {display.last.delivered:,} delivered before it (re-run with --checkpoint "
                  f"{args.checkpoint} to resume)")
        return EXIT_FAILED
    except OSError as error:  # reading the input failed midway (a line that is not UTF-8 is only a bad line)
        to_stderr(f"error: cannot read {args.file}: {error}")
        return EXIT_FAILED
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
    return _aborted(args, display)


def _aborted(args: argparse.Namespace, display: Display) -> int:
    last = display.last
    if args.json:
        report = BackfillReport(last.delivered, last.skipped, last.failed, (), last.tokens_charged,
                                last.requests_sent, last.elapsed, stopped=True)
        print(json.dumps({**report.to_json(), "aborted": True}))
    else:
        print(
            f"aborted: {last.delivered:,} delivered, {last.skipped:,} skipped, {last.failed:,} failed "
            f"before the abort; re-run with --checkpoint {args.checkpoint} to resume"
        )
    return EXIT_STOPPED


def _report_text(report: BackfillReport, checkpoint: str) -> str:
    lines = [
        f"delivered {report.delivered:,}, skipped {report.skipped:,} (already in the checkpoint), "
        f"failed {report.failed:,}",
        f"{report.requests_sent:,} requests, {report.tokens_charged:,.0f} tokens, {duration(report.elapsed)}"
        f" ({report.rate:,.1f} msg/s)",
    ]
    if (counts := counts_text(report.counts)) is not None:
        lines.append(counts)
    if report.failures:
        first = f"first {len(report.failures):,} of " if len(report.failures) < report.failed else ""
        lines.append(f"failures ({first}{report.failed:,}):")
        for failure in report.failures:
            where = f"line {failure.line}" if failure.line is not None else f"message {failure.message_id}"
            lines.append(f"  {where}: {failure.reason}")
    if report.stopped:
        lines.append(f"stopped early: re-run with --checkpoint {checkpoint} to resume")
    return "\n".join(lines)
