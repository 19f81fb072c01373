"""What every command shares: the program's name, the exit codes, the usage error, and lines on stderr."""

from __future__ import annotations

import sys

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
"""The command's name, in its usage line and its error messages."""


class UsageError(Exception):
    """A problem with the command line or the environment: one line on stderr, exit code 2."""


def to_stderr(text: str, *, end: str = "\n") -> None:
    """Write ``text`` to stderr at once (what the user is told, apart from a command's result on stdout)."""
    print(text, end=end, file=sys.stderr, flush=True)
