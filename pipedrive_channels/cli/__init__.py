"""The ``pipedrive-channels`` command (also ``python -m pipedrive_channels``).

Built on :mod:`argparse`: it is in the standard library, so the command adds no dependency to the SDK (click
would be one more package for every SDK user, for a handful of flat subcommands argparse handles well). The
progress bar uses tqdm when the optional ``cli`` extra is installed (``pip install 'pipedrive-channels[cli]'``)
and stderr is a terminal; otherwise a plain progress line goes to stderr every 2 s.

Subcommands::

    backfill FILE.jsonl --checkpoint PATH [--plan lite|growth|premium|ultimate|unlimited] [--seats N]
             [--daily-share X] [--concurrency N] [--shard K/N] [--channel ID=NAME ...] [--deadline SECONDS]
             [--dry-run] [--quiet] [--json]
    add-channel --provider-channel-id ID --name NAME [--avatar-url URL] [--provider-type TYPE] [--template-support]
    delete-channel ID
    delete-conversation CHANNEL_ID CONVERSATION_ID
    auth login --redirect-uri URI --token-file PATH [--authorize-url URL] [--token-url URL]
    demo
    manifest --base-url URL --provider MODULE:CLASS [--prefix PATH]

Credentials are never command-line arguments (those show in ``ps``): ``--token-file PATH`` (a JSON token store,
refreshed and saved back when ``PIPEDRIVE_CLIENT_ID`` and ``PIPEDRIVE_CLIENT_SECRET`` are set), else the
environment's ``PIPEDRIVE_ACCESS_TOKEN`` (a bearer token) or ``PIPEDRIVE_API_TOKEN`` (a company API token).
The API root is ``--base-url``, else ``PIPEDRIVE_BASE_URL``, else the client's default. No token or client
secret is ever printed.

Exit codes: 0 done (everything delivered), 1 something failed (for a back-fill: a record, or the run itself, which a
re-run resumes once the cause is fixed), 2 usage error (bad arguments, missing credentials, an unreadable input
file, a checkpoint in use by another run), 3 the back-fill stopped early and a re-run with the same checkpoint
resumes it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import attrs

from ..auth import ApiToken, JsonFileTokenStore, OAuthApp, OAuthToken
from ..backfill import (
    MAX_CONCURRENCY,
    BackfillReport,
    BadInput,
    Checkpoint,
    CheckpointError,
    Progress,
    backfill,
    estimate,
    read_jsonl,
    shard_of,
)
from ..budget import Plan, RateBudget
from ..client import ChannelsClient
from ..errors import PipedriveError, ValidationError
from ..models import Message, ProviderType, converter

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_STOPPED", "EXIT_USAGE", "PROG", "UsageError", "count_lines", "main", "run"]

EXIT_OK = 0
"""Everything was done (for a back-fill: every message delivered or already in the checkpoint)."""
EXIT_FAILED = 1
"""Something failed: a back-fill record that could not be delivered, or an API call that was refused."""
EXIT_USAGE = 2
"""Bad command line, missing credentials, a missing or unreadable input file, a checkpoint in use (argparse uses 2
too)."""
EXIT_STOPPED = 3
"""The back-fill stopped early (Ctrl-C, SIGTERM, ``--deadline``); a re-run with the same checkpoint resumes it."""

PROG = "pipedrive-channels"

_PLANS = {"lite": Plan.LITE, "growth": Plan.GROWTH, "premium": Plan.PREMIUM, "ultimate": Plan.ULTIMATE}
_ENV_ACCESS_TOKEN = "PIPEDRIVE_ACCESS_TOKEN"
_ENV_API_TOKEN = "PIPEDRIVE_API_TOKEN"
_ENV_CLIENT_ID = "PIPEDRIVE_CLIENT_ID"
_ENV_CLIENT_SECRET = "PIPEDRIVE_CLIENT_SECRET"
_ENV_BASE_URL = "PIPEDRIVE_BASE_URL"
_PLAIN_PROGRESS_EVERY = 2.0
_BAR_REFRESH_EVERY = 0.5


class UsageError(Exception):
    """A problem with the command line or the environment: one line on stderr, exit code 2."""


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, and exit with its code."""
    raise SystemExit(run(argv))


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` and return the exit code (argparse's own errors still exit 2 at once)."""
    args = _parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UsageError as error:
        _error(f"{PROG}: error: {error}")
        return EXIT_USAGE
    except KeyboardInterrupt:  # a Ctrl-C before the signal handlers were in place (or where there are none)
        _error("interrupted")
        return EXIT_STOPPED if args.command == "backfill" else 130


# -- the parser -----------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Pipedrive Channels API from the command line: back-fill a JSON Lines export, manage "
        "channels and conversations, log in with OAuth.",
        epilog="Exit codes: 0 done, 1 something failed, 2 usage error, 3 back-fill stopped (re-run to resume).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    api = argparse.ArgumentParser(add_help=False)
    group = api.add_argument_group(
        "credentials",
        f"never on the command line: --token-file, else ${_ENV_ACCESS_TOKEN}, else ${_ENV_API_TOKEN}. With a token "
        f"file, ${_ENV_CLIENT_ID} and ${_ENV_CLIENT_SECRET} let the token be refreshed (and saved back).",
    )
    group.add_argument("--token-file", metavar="PATH", help="JSON token file written by `auth login`")
    group.add_argument("--token-url", metavar="URL", help="OAuth token endpoint for refreshes (default Pipedrive's)")
    group.add_argument("--base-url", metavar="URL", help=f"API root (default ${_ENV_BASE_URL}, else the token's)")

    fill = commands.add_parser(
        "backfill",
        parents=[api],
        help="deliver a JSON Lines file of messages, resumably",
        description="Deliver every message of a JSON Lines file (one receive-message body per line) as fast as "
        "the plan's rate budget allows. Delivered records are journalled in --checkpoint, so a re-run (after "
        "Ctrl-C, a crash or kill -9) skips them and sends the rest.",
    )
    fill.add_argument("file", metavar="FILE.jsonl", help="the messages, one JSON object per line")
    fill.add_argument("--checkpoint", metavar="PATH", help="the SQLite journal to resume from (required to send)")
    fill.add_argument(
        "--concurrency",
        type=_int_in(1, MAX_CONCURRENCY),
        default=16,
        metavar="N",
        help=f"calls in flight at once, 1 to {MAX_CONCURRENCY} (default 16)",
    )
    fill.add_argument(
        "--plan", choices=[*_PLANS, "unlimited"], default="lite", help="Pipedrive plan whose limits to keep"
    )
    fill.add_argument(
        "--seats", type=_positive_int, default=1, metavar="N", help="seats of the plan (daily budget; default 1)"
    )
    fill.add_argument(
        "--daily-share", type=_share, default=1.0, metavar="X", help="part of the daily token budget, 0 < X <= 1"
    )
    fill.add_argument("--shard", type=_shard, metavar="K/N", help="take only conversations of shard K of N")
    fill.add_argument(
        "--channel",
        type=_channel,
        action="append",
        default=[],
        metavar="ID=NAME",
        help="add this channel first (once per checkpoint); repeatable",
    )
    fill.add_argument("--deadline", type=_positive_float, metavar="SECONDS", help="stop resumably after this long")
    fill.add_argument("--dry-run", action="store_true", help="only print what the job costs; send nothing")
    fill.add_argument("--quiet", action="store_true", help="no progress, only the final report")
    fill.add_argument("--json", action="store_true", help="print the report as one JSON object")
    fill.set_defaults(handler=_cmd_backfill)

    add = commands.add_parser("add-channel", parents=[api], help="register a channel; prints it as JSON")
    add.add_argument("--provider-channel-id", required=True, metavar="ID", help="the provider's own channel id")
    add.add_argument("--name", required=True, help="the channel's name in Pipedrive")
    add.add_argument("--avatar-url", metavar="URL")
    add.add_argument("--provider-type", choices=[t.value for t in ProviderType], default=ProviderType.OTHER.value)
    add.add_argument("--template-support", action="store_true")
    add.set_defaults(handler=_cmd_add_channel)

    delete_channel = commands.add_parser("delete-channel", parents=[api], help="delete a channel and its messages")
    delete_channel.add_argument("channel_id", metavar="ID", help="the provider_channel_id")
    delete_channel.set_defaults(handler=_cmd_delete_channel)

    delete_conversation = commands.add_parser(
        "delete-conversation", parents=[api], help="delete one conversation and its messages"
    )
    delete_conversation.add_argument("channel_id", metavar="CHANNEL_ID", help="the provider_channel_id")
    delete_conversation.add_argument("conversation_id", metavar="CONVERSATION_ID")
    delete_conversation.set_defaults(handler=_cmd_delete_conversation)

    auth = commands.add_parser("auth", help="OAuth log-in")
    auth_commands = auth.add_subparsers(dest="auth_command", required=True, metavar="SUBCOMMAND")
    login = auth_commands.add_parser(
        "login",
        help="authorize the app and save the token file",
        description=f"Print the authorization URL, read the code (or the whole callback URL) from stdin, exchange "
        f"it and save the token (mode 0600). The app's id and secret come from ${_ENV_CLIENT_ID} and "
        f"${_ENV_CLIENT_SECRET}.",
    )
    login.add_argument("--redirect-uri", required=True, metavar="URI", help="the app's registered callback URL")
    login.add_argument("--token-file", required=True, metavar="PATH", help="where to save the token")
    login.add_argument("--authorize-url", metavar="URL", help="OAuth authorize endpoint (default Pipedrive's)")
    login.add_argument("--token-url", metavar="URL", help="OAuth token endpoint (default Pipedrive's)")
    login.set_defaults(handler=_cmd_auth_login)

    demo = commands.add_parser("demo", help="back-fill a sample history into the embedded fake Pipedrive")
    demo.add_argument("--messages", type=_positive_int, default=2_000, help="messages to back-fill (default 2000)")
    demo.set_defaults(handler=_cmd_demo)

    manifest = commands.add_parser(
        "manifest",
        help="print the Messaging app extension manifest of a ChannelProvider as JSON",
        description="Print the manifest (for Developer Hub) listing exactly the endpoints the provider class "
        "implements, as served by pipedrive_channels.extension.create_app at --base-url + --prefix.",
    )
    manifest.add_argument("--base-url", required=True, metavar="URL", help="where the app is reachable, https://...")
    manifest.add_argument("--provider", required=True, metavar="MODULE:CLASS", help="the ChannelProvider subclass")
    manifest.add_argument("--prefix", default="/pipedrive", metavar="PATH", help="the routes' prefix (/pipedrive)")
    manifest.set_defaults(handler=_cmd_manifest)
    return parser


def _int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high`` (no upper bound if None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
        return value

    return parse


_positive_int = _int_in(1)


def _float_where(check: Callable[[float], bool], expected: str) -> Callable[[str], float]:
    """An argparse type: a number for which ``check`` holds, else an error saying it must be ``expected``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text}")
        return value

    return parse


_positive_float = _float_where(lambda value: value > 0 and math.isfinite(value), "more than 0")
_share = _float_where(lambda value: 0 < value <= 1, "in (0, 1]")


def _shard(text: str) -> tuple[int, int]:
    k, slash, n = text.partition("/")
    try:
        shard = (int(k), int(n))
    except ValueError:
        shard = (-1, 0)
    if not slash or not 0 <= shard[0] < shard[1]:
        raise argparse.ArgumentTypeError(f"must be K/N with 0 <= K < N (e.g. 0/4), got {text!r}")
    return shard


def _channel(text: str) -> tuple[str, str]:
    channel_id, equals, name = text.partition("=")
    if not equals or not channel_id or not name:
        raise argparse.ArgumentTypeError(f"must be ID=NAME, got {text!r}")
    return channel_id, name


# -- credentials ----------------------------------------------------------------------------------------------


class _Credentials(NamedTuple):
    token: OAuthToken | ApiToken | str
    app: OAuthApp | None
    store: JsonFileTokenStore | None


def _oauth_app(
    token_url: str | None, *, redirect_uri: str | None = None, authorize_url: str | None = None, required: bool
) -> OAuthApp | None:
    """The app from ``$PIPEDRIVE_CLIENT_ID`` and ``$PIPEDRIVE_CLIENT_SECRET``; None (or a usage error) without."""
    client_id, client_secret = os.environ.get(_ENV_CLIENT_ID), os.environ.get(_ENV_CLIENT_SECRET)
    if not client_id and not client_secret and not required:
        return None
    if not client_id or not client_secret:
        raise UsageError(f"set both ${_ENV_CLIENT_ID} and ${_ENV_CLIENT_SECRET} (the app's OAuth credentials)")
    urls: dict[str, Any] = {"token_url": token_url, "authorize_url": authorize_url}
    try:
        return OAuthApp(
            client_id, client_secret, redirect_uri=redirect_uri, **{k: v for k, v in urls.items() if v is not None}
        )
    except ValidationError as error:
        raise UsageError(str(error)) from None


async def _credentials(args: argparse.Namespace) -> _Credentials:
    """The token to use: ``--token-file``, else ``$PIPEDRIVE_ACCESS_TOKEN``, else ``$PIPEDRIVE_API_TOKEN``."""
    if args.token_file is not None:
        store = JsonFileTokenStore(args.token_file)
        try:
            token = await store.load()
        except (OSError, ValueError, TypeError) as error:  # messages name the field or position, never a value
            raise UsageError(f"cannot read the token file {args.token_file}: {type(error).__name__}") from None
        if token is None:
            raise UsageError(f"token file {args.token_file} not found (create it with `{PROG} auth login`)")
        app = _oauth_app(args.token_url, required=False)
        if app is None and token.expires_at is not None and token.expires_at <= datetime.now(timezone.utc):
            _error(
                f"warning: the token in {args.token_file} expired at {token.expires_at:%Y-%m-%d %H:%M %Z}; set "
                f"${_ENV_CLIENT_ID} and ${_ENV_CLIENT_SECRET} to refresh it"
            )
        return _Credentials(token, app, store)
    if access_token := os.environ.get(_ENV_ACCESS_TOKEN):
        return _Credentials(access_token, None, None)
    if api_token := os.environ.get(_ENV_API_TOKEN):
        return _Credentials(ApiToken(api_token), None, None)
    raise UsageError(f"no credentials: pass --token-file PATH, or set ${_ENV_ACCESS_TOKEN} or ${_ENV_API_TOKEN}")


def _auth_kind(args: argparse.Namespace) -> str:
    """Which burst limits apply ("api_token" or "oauth"), from where the credentials would come; reads nothing."""
    environ = os.environ
    if args.token_file is None and not environ.get(_ENV_ACCESS_TOKEN) and environ.get(_ENV_API_TOKEN):
        return "api_token"
    return "oauth"


def _client(args: argparse.Namespace, credentials: _Credentials, budget: RateBudget | None) -> ChannelsClient:
    base_url = args.base_url or os.environ.get(_ENV_BASE_URL) or None
    try:
        return ChannelsClient(
            credentials.token, app=credentials.app, token_store=credentials.store, base_url=base_url, budget=budget
        )
    except ValidationError as error:  # e.g. a plain-http base URL to a non-loopback host
        raise UsageError(str(error)) from None


# -- backfill -------------------------------------------------------------------------------------------------


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


def _cmd_backfill(args: argparse.Namespace) -> int:
    if not Path(args.file).is_file():
        raise UsageError(f"input file {args.file} not found")
    try:
        open(args.file, "rb").close()  # refused now, in one line, rather than by the reader, mid-run
    except OSError as error:
        raise UsageError(f"cannot read input file {args.file}: {error.strerror or error}") from None
    if args.dry_run:
        return _dry_run(args)
    if args.checkpoint is None:
        raise UsageError("--checkpoint PATH is required (it makes the run resumable); or use --dry-run")
    return asyncio.run(_backfill(args))


def _ours(items: Iterator[Message | BadInput], shard: tuple[int, int]) -> Iterator[Message | BadInput]:
    k, n = shard
    for item in items:
        if isinstance(item, BadInput) or shard_of(item.conversation_id, n) == k:
            yield item


def _dry_run(args: argparse.Namespace) -> int:
    auth = _auth_kind(args)
    budget = _budget(args, auth)
    items = read_jsonl(args.file)
    try:
        result = estimate(_ours(items, args.shard) if args.shard else items, budget)
    except OSError as error:  # reading the input failed midway
        _error(f"error: cannot read {args.file}: {error}")
        return EXIT_FAILED
    if args.json:
        print(json.dumps({**attrs.asdict(result), "plan": args.plan, "seats": args.seats,
                          "daily_share": args.daily_share, "auth": auth}))
        return EXIT_OK
    if args.plan == "unlimited":
        pace = "no rate limit (--plan unlimited)"
    else:
        per_day = 30_000 * _PLANS[args.plan].value * args.seats * args.daily_share
        seats = f"{args.seats} seat{'s' if args.seats != 1 else ''}"
        pace = (
            f"about {_duration(result.seconds)} at {args.plan.capitalize()}, {seats} ({budget.requests_per_window}"
            f" requests per {budget.window:g} s, {per_day:,.0f} tokens a day"
            f"{f' (share {args.daily_share:g})' if args.daily_share != 1 else ''}, {auth})"
        )
    print(f"dry run of {args.file}{f' (shard {args.shard[0]}/{args.shard[1]})' if args.shard else ''}: nothing sent")
    print(f"  messages:  {result.messages:,}")
    print(f"  bad lines: {result.bad_lines:,}")
    print(f"  requests:  {result.requests:,} (without retries)")
    print(f"  tokens:    {result.tokens:,}")
    print(f"  time:      {pace}")
    return EXIT_OK


def _duration(seconds: float) -> str:
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


class _Display:
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

    async def __aenter__(self) -> _Display:
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
        done = progress.delivered + progress.skipped + progress.failed
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
        _error(
            f"progress: {done:,}{of} done ({progress.delivered:,} delivered, {progress.skipped:,} skipped, "
            f"{progress.failed:,} failed), {progress.delivered / elapsed if elapsed > 0 else 0:,.1f} msg/s, "
            f"{progress.tokens_charged:,.0f} tokens, {waiting} waiting for the budget, {_duration(elapsed)}"
        )

    def note(self, text: str) -> None:
        """A line on stderr that does not break the bar."""
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            _error(text)


async def _backfill(args: argparse.Namespace) -> int:
    if not Path(args.checkpoint).parent.is_dir():
        raise UsageError(f"the folder of --checkpoint {args.checkpoint} does not exist")
    credentials = await _credentials(args)
    budget = _budget(args, "api_token" if isinstance(credentials.token, ApiToken) else "oauth")
    client = _client(args, credentials, budget)
    try:
        journal = Checkpoint(args.checkpoint)
    except CheckpointError as error:  # in use by another run, or not a SQLite file
        raise UsageError(str(error)) from None
    try:
        total = None if args.quiet or args.shard else count_lines(args.file)
        display = _Display(total, args.quiet)
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
    args: argparse.Namespace, client: ChannelsClient, journal: Checkpoint, display: _Display
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
                )
            )
            try:
                return await job
            except asyncio.CancelledError:
                if not job.cancelled():
                    raise  # we were cancelled ourselves, not the job
    except PipedriveError as error:  # of the run, not of a record: the Redis budget, the journal, a channel
        _error(f"error: {error}; {display.last.delivered:,} delivered before it (re-run with --checkpoint "
               f"{args.checkpoint} to resume)")
        return EXIT_FAILED
    except OSError as error:  # reading the input failed midway (a line that is not UTF-8 is only a bad line)
        _error(f"error: cannot read {args.file}: {error}")
        return EXIT_FAILED
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
    return _aborted(args, display)


def _aborted(args: argparse.Namespace, display: _Display) -> int:
    progress = display.last
    if args.json:
        print(json.dumps({
            "delivered": progress.delivered, "skipped": progress.skipped, "failed": progress.failed, "failures": [],
            "tokens_charged": progress.tokens_charged, "requests_sent": progress.requests_sent,
            "elapsed": progress.elapsed, "stopped": True, "aborted": True,
            "rate": progress.delivered / progress.elapsed if progress.elapsed > 0 else 0.0,
        }))
    else:
        print(
            f"aborted: {progress.delivered:,} delivered, {progress.skipped:,} skipped, {progress.failed:,} failed "
            f"before the abort; re-run with --checkpoint {args.checkpoint} to resume"
        )
    return EXIT_STOPPED


def _report_text(report: BackfillReport, checkpoint: str) -> str:
    lines = [
        f"delivered {report.delivered:,}, skipped {report.skipped:,} (already in the checkpoint), "
        f"failed {report.failed:,}",
        f"{report.requests_sent:,} requests, {report.tokens_charged:,.0f} tokens, {_duration(report.elapsed)}"
        f" ({report.rate:,.1f} msg/s)",
    ]
    if report.failures:
        first = f"first {len(report.failures):,} of " if len(report.failures) < report.failed else ""
        lines.append(f"failures ({first}{report.failed:,}):")
        for failure in report.failures:
            where = f"line {failure.line}" if failure.line is not None else f"message {failure.message_id}"
            lines.append(f"  {where}: {failure.reason}")
    if report.stopped:
        lines.append(f"stopped early: re-run with --checkpoint {checkpoint} to resume")
    return "\n".join(lines)


# -- channels and conversations -------------------------------------------------------------------------------


def _api_command(args: argparse.Namespace, call: Callable[[ChannelsClient], Awaitable[None]]) -> int:
    async def go() -> int:
        client = _client(args, await _credentials(args), None)
        try:
            async with client:
                await call(client)
        except ValidationError as error:  # raised before anything was sent: a bad argument
            raise UsageError(str(error)) from None
        except PipedriveError as error:
            _error(f"error: {error}")
            return EXIT_FAILED
        return EXIT_OK

    return asyncio.run(go())


def _cmd_add_channel(args: argparse.Namespace) -> int:
    async def call(client: ChannelsClient) -> None:
        channel = await client.add_channel(
            name=args.name,
            provider_channel_id=args.provider_channel_id,
            avatar_url=args.avatar_url,
            template_support=args.template_support,
            provider_type=args.provider_type,
        )
        print(json.dumps(converter.unstructure(channel), indent=2, default=str))

    return _api_command(args, call)


def _cmd_delete_channel(args: argparse.Namespace) -> int:
    async def call(client: ChannelsClient) -> None:
        await client.delete_channel(args.channel_id)
        print(f"channel {args.channel_id} deleted")

    return _api_command(args, call)


def _cmd_delete_conversation(args: argparse.Namespace) -> int:
    async def call(client: ChannelsClient) -> None:
        await client.delete_conversation(args.channel_id, args.conversation_id)
        print(f"conversation {args.conversation_id} of channel {args.channel_id} deleted")

    return _api_command(args, call)


# -- auth login -----------------------------------------------------------------------------------------------


def _code_from(answer: str, state: str) -> str:
    """The authorization code from what the user pasted: the code itself, or the callback URL (or its query)."""
    if "code=" not in answer and "error=" not in answer:
        return answer
    params = parse_qs(urlsplit(answer).query if "?" in answer else answer)
    if "error" in params:
        raise PipedriveError(f"the authorization was refused: {params['error'][0]}")
    returned = params.get("state", [])
    if not returned:  # without it, the forgery check could not be made
        raise UsageError("the callback URL holds no state: paste the whole URL you were sent back to, or the code")
    # Bytes: compare_digest refuses str with non-ASCII characters, which a pasted URL may hold.
    if len(returned) != 1 or not secrets.compare_digest(returned[0].encode(), state.encode()):
        raise PipedriveError("the callback's state does not match this login (a stale or forged URL); log in again")
    return params.get("code", [""])[0]


def _cmd_auth_login(args: argparse.Namespace) -> int:
    app = _oauth_app(args.token_url, redirect_uri=args.redirect_uri, authorize_url=args.authorize_url, required=True)
    assert app is not None
    path = Path(args.token_file)
    if not path.parent.is_dir():
        raise UsageError(f"the folder of --token-file {args.token_file} does not exist")
    state = secrets.token_urlsafe(16)
    _error("Open this URL in a browser and approve the app:")
    print(app.authorization_url(state), flush=True)
    _error("Then paste the code, or the whole URL you were sent back to: ", end="")
    answer = sys.stdin.readline().strip()
    if not answer:
        raise UsageError("no authorization code given")
    try:
        code = _code_from(answer, state)
        if not code:
            raise UsageError("the callback URL holds no code")
        token = asyncio.run(app.exchange_code(code))
    except PipedriveError as error:
        _error(f"error: {error}")
        return EXIT_FAILED
    asyncio.run(JsonFileTokenStore(path).save(token))
    expires = f"expires at {token.expires_at:%Y-%m-%d %H:%M:%S %Z}" if token.expires_at else "no expiry given"
    print(f"token saved to {path} ({expires})")
    return EXIT_OK


# -- demo -----------------------------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    display = _Display(args.messages, quiet=False)
    asyncio.run(run_demo(messages=args.messages, on_progress=display.on_progress, display=display))
    return EXIT_OK


# -- manifest -------------------------------------------------------------------------------------------------


def _cmd_manifest(args: argparse.Namespace) -> int:
    import importlib

    from ..extension import ChannelProvider, manifest

    module_name, colon, class_name = args.provider.partition(":")
    if not colon or not module_name or not class_name:
        raise UsageError(f"--provider must be MODULE:CLASS, got {args.provider!r}")
    try:
        provider = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise UsageError(f"cannot load {args.provider}: {error}") from None
    if not isinstance(provider, type) or not issubclass(provider, ChannelProvider):
        raise UsageError(f"{args.provider} is not a ChannelProvider subclass")
    try:
        document = manifest(args.base_url, provider, args.prefix)
    except ValidationError as error:
        raise UsageError(str(error)) from None
    print(json.dumps(document, indent=2))
    return EXIT_OK


def _error(text: str, *, end: str = "\n") -> None:
    print(text, end=end, file=sys.stderr, flush=True)
