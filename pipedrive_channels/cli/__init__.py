"""The ``pipedrive-channels`` command (also ``python -m pipedrive_channels``).

Built on :mod:`argparse`: it is in the standard library, so the command adds no dependency to the SDK (click
would be one more package for every SDK user, for a handful of flat subcommands argparse handles well). The
progress bar uses tqdm when the optional ``cli`` extra is installed (``pip install 'pipedrive-channels[cli]'``)
and stderr is a terminal; otherwise a plain progress line goes to stderr every 2 s. This module holds the entry
and the top-level parser; each command's module adds its own subparser.

Subcommands::

    backfill FILE.jsonl --checkpoint PATH [--target channels|notes] [--group-by day|conversation]
             [--no-create-persons] [--plan lite|growth|premium|ultimate|unlimited] [--seats N]
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
from collections.abc import Callable, Sequence

from . import _auth, _backfill, _channels, _demo, _manifest
from ._backfill import count_lines
from ._common import EXIT_FAILED, EXIT_OK, EXIT_STOPPED, EXIT_USAGE, PROG, UsageError, to_stderr
from ._options import credentials_options

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_STOPPED", "EXIT_USAGE", "PROG", "UsageError", "count_lines", "main", "run"]


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
        to_stderr(f"{PROG}: error: {error}")
        return EXIT_USAGE
    except KeyboardInterrupt:  # a Ctrl-C before the signal handlers were in place (or where there are none)
        to_stderr("interrupted")
        return EXIT_STOPPED if args.command == "backfill" else 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Pipedrive Channels API from the command line: back-fill a JSON Lines export, manage "
        "channels and conversations, log in with OAuth.",
        epilog="Exit codes: 0 done, 1 something failed, 2 usage error, 3 back-fill stopped (re-run to resume).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    api = credentials_options()
    _backfill.add_parser(commands, api)
    _channels.add_parsers(commands, api)
    _auth.add_parser(commands)
    _demo.add_parser(commands)
    _manifest.add_parser(commands)
    return parser
