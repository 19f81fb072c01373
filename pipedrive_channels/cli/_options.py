"""The options several commands share: argparse value types, and the credentials group of the API commands."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from ._credentials import ENV_ACCESS_TOKEN, ENV_API_TOKEN, ENV_BASE_URL, ENV_CLIENT_ID, ENV_CLIENT_SECRET


def credentials_options() -> argparse.ArgumentParser:
    """The parent parser of the commands that call the API: where the token and the API root come from."""
    api = argparse.ArgumentParser(add_help=False)
    group = api.add_argument_group(
        "credentials",
        f"never on the command line: --token-file, else ${ENV_ACCESS_TOKEN}, else ${ENV_API_TOKEN}. With a token "
        f"file, ${ENV_CLIENT_ID} and ${ENV_CLIENT_SECRET} let the token be refreshed (and saved back).",
    )
    group.add_argument("--token-file", metavar="PATH", help="JSON token file written by `auth login`")
    group.add_argument("--token-url", metavar="URL", help="OAuth token endpoint for refreshes (default Pipedrive's)")
    group.add_argument("--base-url", metavar="URL", help=f"API root (default ${ENV_BASE_URL}, else the token's)")
    return api


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
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


positive_int = int_in(1)


def float_where(check: Callable[[float], bool], expected: str) -> Callable[[str], float]:
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


positive_float = float_where(lambda value: value > 0 and math.isfinite(value), "more than 0")
share = float_where(lambda value: 0 < value <= 1, "in (0, 1]")


def shard(text: str) -> tuple[int, int]:
    """An argparse type: ``K/N``, shard K of N."""
    k, slash, n = text.partition("/")
    try:
        parsed = (int(k), int(n))
    except ValueError:
        parsed = (-1, 0)
    if not slash or not 0 <= parsed[0] < parsed[1]:
        raise argparse.ArgumentTypeError(f"must be K/N with 0 <= K < N (e.g. 0/4), got {text!r}")
    return parsed


def channel(text: str) -> tuple[str, str]:
    """An argparse type: ``ID=NAME``, a channel to add."""
    channel_id, equals, name = text.partition("=")
    if not equals or not channel_id or not name:
        raise argparse.ArgumentTypeError(f"must be ID=NAME, got {text!r}")
    return channel_id, name
