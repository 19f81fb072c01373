"""The journal: a SQLite file (WAL mode) a run keeps its state in, one run at a time (back-fills and targets)."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from .errors import PipedriveError

if sys.platform == "win32":
    import msvcrt

    def _lock(file: BinaryIO) -> None:
        msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)  # OSError when another process holds it
else:
    import fcntl

    def _lock(file: BinaryIO) -> None:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError when another one holds it

__all__ = ["Checkpoint", "CheckpointError", "CheckpointLockedError"]


class CheckpointError(PipedriveError):
    """The checkpoint journal cannot be opened, read or written; names the file. The SQLite error is the cause."""


class CheckpointLockedError(CheckpointError):
    """Another run (in this process or another one) uses the checkpoint; it is held until that run ends."""


class Checkpoint:
    """The back-fill journal: a SQLite file (WAL mode) of delivered and failed records, and added channels.

    It holds an exclusive lock on ``<path>.lock`` while open (``flock``, released by the OS when the process dies,
    even by ``kill -9``), so a second run on the same journal is refused with :class:`CheckpointLockedError`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self._lock_file: BinaryIO = open(lock_path, "ab")  # noqa: SIM115 (held until close())
        except OSError as error:
            raise CheckpointError(f"checkpoint {self.path}: cannot create its lock file: {error}") from error
        try:
            _lock(self._lock_file)
        except OSError:
            self._lock_file.close()
            raise CheckpointLockedError(
                f"checkpoint {self.path} is in use by another run (it holds {lock_path}); wait for it to end or "
                f"use another checkpoint"
            ) from None
        try:
            # Autocommit: each statement is its own transaction, committed before the next record goes out.
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as error:
            self._lock_file.close()
            raise CheckpointError(f"checkpoint {self.path}: {error}") from error
        try:
            self.execute("PRAGMA journal_mode=WAL")
            self.execute("PRAGMA synchronous=NORMAL")
            self.execute(
                "CREATE TABLE IF NOT EXISTS records (key BLOB PRIMARY KEY, message_id TEXT NOT NULL, failure TEXT)"
                " WITHOUT ROWID"
            )
            self.execute("CREATE TABLE IF NOT EXISTS channels (provider_channel_id TEXT PRIMARY KEY)")
        except CheckpointError:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r})"

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def execute(self, query: str, parameters: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        """Run one statement on the journal (autocommit: committed when it returns).

        A target keeps its own tables here (``CREATE TABLE IF NOT EXISTS``, names prefixed with the target's).
        :raises CheckpointError: any SQLite error (a full disk, a read-only file, a corrupt journal).
        """
        try:
            return self._db.execute(query, parameters)
        except sqlite3.Error as error:  # a full disk, a read-only file, a corrupt journal: the run cannot go on
            raise CheckpointError(f"checkpoint {self.path}: {error}") from error

    def delivered(self, key: bytes) -> bool:
        """Whether the record with this key was delivered (a failed one is not: a re-run tries it again)."""
        row = self.execute("SELECT failure FROM records WHERE key = ?", (key,)).fetchone()
        return row is not None and row[0] is None

    def record(self, key: bytes, message_id: str, failure: str | None = None) -> None:
        """Journal a record as delivered (``failure`` None) or failed with that reason; committed at once."""
        self.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", (key, message_id, failure))

    def is_empty(self) -> bool:
        """Whether no record was journalled yet (a fresh run need not look anything up)."""
        return self.execute("SELECT 1 FROM records LIMIT 1").fetchone() is None

    def has_channel(self, provider_channel_id: str) -> bool:
        """Whether ``ensure_channels`` already added this channel in an earlier run."""
        query = "SELECT 1 FROM channels WHERE provider_channel_id = ?"
        return self.execute(query, (provider_channel_id,)).fetchone() is not None

    def add_channel(self, provider_channel_id: str) -> None:
        """Journal a channel as added."""
        self.execute("INSERT OR IGNORE INTO channels VALUES (?)", (provider_channel_id,))

    def counts(self) -> tuple[int, int]:
        """(delivered, failed) records in the journal."""
        delivered, failed = self.execute("SELECT COUNT(*) - COUNT(failure), COUNT(failure) FROM records").fetchone()
        return int(delivered), int(failed)

    def close(self) -> None:
        """Close the database, then let another run have it."""
        try:
            self._db.close()
        finally:
            self._lock_file.close()
