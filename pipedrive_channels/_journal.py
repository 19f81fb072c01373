"""The journal: a SQLite file (WAL mode) a run keeps its state in, one run at a time (back-fills and targets)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from collections.abc import Iterator
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
    """The journal: a SQLite file (WAL mode) of delivered and failed records, added channels, and the tables a
    back-fill's target keeps its state in.

    It holds an exclusive lock on ``<path>.lock`` while open (``flock``, released by the OS when the process dies,
    even by ``kill -9``), so a second run on the same journal is refused with :class:`CheckpointLockedError`.
    """

    def __init__(self, path: str | os.PathLike[str] | sqlite3.Connection) -> None:
        """Open (or create) the journal at ``path``, or use an open connection (a service's own database).

        A connection is locked the same way, through its database file (an in-memory one needs no lock), switched
        to WAL mode, used in autocommit (each statement commits when it returns) and left open by :meth:`close`:
        its owner closes it.
        """
        self._depth = 0  # inside transaction(): statements commit together at its end
        self._lock_file: BinaryIO | None = None
        if isinstance(path, sqlite3.Connection):
            self.path = Path(_file_of(path))
            self._owned = False
            if str(self.path) != ":memory:":
                self._lock_file = _hold_lock(self.path)
            self._db = path
        else:
            self.path = Path(path)
            self._owned = True
            self._lock_file = _hold_lock(self.path)
            try:
                # Autocommit: each statement is its own transaction, committed before the next record goes out.
                self._db = sqlite3.connect(self.path, isolation_level=None)
            except sqlite3.Error as error:
                self._release()
                raise CheckpointError(f"checkpoint {self.path}: {error}") from error
        try:
            if self._db.in_transaction:
                raise CheckpointError(f"checkpoint {self.path}: the connection has an open transaction; commit it "
                                      f"first")
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
            cursor = self._db.execute(query, parameters)
            if self._depth == 0 and self._db.in_transaction:  # a connection given in Python's default mode
                self._db.commit()
            return cursor
        except sqlite3.Error as error:  # a full disk, a read-only file, a corrupt journal: the run cannot go on
            raise CheckpointError(f"checkpoint {self.path}: {error}") from error

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Statements run inside commit together when the block ends, or none of them if it raises.

        For a target whose one change takes several statements. Not re-entrant; hold no ``await`` inside, or other
        tasks' statements would join the transaction.
        """
        if self._depth:
            raise CheckpointError(f"checkpoint {self.path}: a transaction is already open")
        self._depth = 1
        try:
            self.execute("BEGIN IMMEDIATE")
            yield
        except BaseException:
            self._depth = 0
            with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already (a full disk)
                self._db.rollback()
            raise
        self._depth = 0
        self.execute("COMMIT")

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
        """Close the database (unless it was given open), then let another run have it."""
        try:
            if self._owned:
                self._db.close()
        finally:
            self._release()

    def _release(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None


def _file_of(connection: sqlite3.Connection) -> str:
    """The file of a connection's main database, ``:memory:`` for an in-memory (or temporary) one."""
    try:
        rows = connection.execute("PRAGMA database_list").fetchall()
    except sqlite3.Error as error:  # a closed connection, say
        raise CheckpointError(f"checkpoint connection: {error}") from error
    file = next((row[2] for row in rows if row[1] == "main"), "")
    return file or ":memory:"


def _hold_lock(path: Path) -> BinaryIO:
    """Take ``<path>.lock`` exclusively, or refuse: another run has the journal."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        lock_file: BinaryIO = open(lock_path, "ab")  # noqa: SIM115 (held until close())
    except OSError as error:
        raise CheckpointError(f"checkpoint {path}: cannot create its lock file: {error}") from error
    try:
        _lock(lock_file)
    except OSError:
        lock_file.close()
        raise CheckpointLockedError(
            f"checkpoint {path} is in use by another run (it holds {lock_path}); wait for it to end or "
            f"use another checkpoint"
        ) from None
    return lock_file
