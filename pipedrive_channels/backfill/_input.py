"""The back-fill's input: messages read lazily from JSON Lines, bad lines kept as such, and stable shards."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator

import attrs

from ..errors import ValidationError
from ..models import Message, converter

__all__ = ["BadInput", "read_jsonl", "shard_of"]


@attrs.frozen
class BadInput:
    """An input record that is not a valid message: its line (when read from a file) and why."""

    line: int | None
    reason: str


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[Message | BadInput]:
    """Read messages from a JSON Lines file, one receive-message body per line, lazily.

    A line that is not a valid message becomes a :class:`BadInput` naming the line and the field; blank lines
    are skipped.
    """
    with open(path, "rb") as file:  # bytes: a line that is not UTF-8 is a bad line, not a crash of the run
        for number, raw in enumerate(file, start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw.decode("utf-8"))
                if not isinstance(data, dict):
                    raise TypeError(f"a line must hold a JSON object, got {type(data).__name__}")
                yield converter.structure(data, Message)
            except ValidationError as error:
                yield BadInput(number, str(error))
            except RecursionError:  # json.loads (or structuring) recursing into a line like [[[[...]]]]
                yield BadInput(number, "the JSON is nested too deeply")
            except (ValueError, TypeError, KeyError) as error:
                reason = f"missing field {error}" if isinstance(error, KeyError) else f"{type(error).__name__}: {error}"
                yield BadInput(number, reason)


def shard_of(conversation_id: str, shards: int) -> int:
    """The shard (0 to ``shards - 1``) a conversation belongs to: stable across runs, processes and machines."""
    digest = hashlib.blake2b(conversation_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards
