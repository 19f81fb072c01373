"""The journal a target keeps its state in: an open connection as well as a path, and multi-statement transactions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pipedrive_channels._journal import Checkpoint, CheckpointError, CheckpointLockedError


def test_an_open_connection_is_locked_through_its_file(tmp_path: Path) -> None:
    path = tmp_path / "service.db"
    connection = sqlite3.connect(path)
    with Checkpoint(connection) as journal:
        assert journal.path == path
        with pytest.raises(CheckpointLockedError):
            Checkpoint(path)
        with pytest.raises(CheckpointLockedError):
            Checkpoint(sqlite3.connect(path))
    with Checkpoint(path):  # released on close
        pass
    connection.execute("SELECT 1")  # and left open: its owner closes it
    connection.close()


def test_statements_on_a_connection_in_pythons_default_mode_commit_at_once(tmp_path: Path) -> None:
    path = tmp_path / "service.db"
    connection = sqlite3.connect(path)  # isolation_level "": Python would hold the INSERT in a transaction
    with Checkpoint(connection) as journal:
        journal.record(b"k", "m-1")
        assert sqlite3.connect(path).execute("SELECT message_id FROM records").fetchall() == [("m-1",)]
    connection.close()


def test_an_in_memory_connection_needs_no_lock_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    connection = sqlite3.connect(":memory:")
    with Checkpoint(connection) as journal:
        journal.record(b"k", "m-1")
        assert journal.counts() == (1, 0)
    assert list(tmp_path.iterdir()) == []
    connection.close()


def test_a_connection_with_an_open_transaction_is_refused(tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "service.db")
    connection.execute("CREATE TABLE t (x)")
    connection.execute("INSERT INTO t VALUES (1)")  # Python opened a transaction for it
    with pytest.raises(CheckpointError, match="open transaction"):
        Checkpoint(connection)
    connection.rollback()
    with Checkpoint(tmp_path / "service.db"):  # the refused one released its lock
        pass
    connection.close()


def test_a_transaction_commits_together_or_not_at_all(tmp_path: Path) -> None:
    with Checkpoint(tmp_path / "j.db") as journal:
        with journal.transaction():
            journal.record(b"a", "m-1")
            journal.record(b"b", "m-2")
        assert journal.counts() == (2, 0)
        with pytest.raises(RuntimeError), journal.transaction():
            journal.record(b"c", "m-3")
            raise RuntimeError("half-way")
        assert journal.counts() == (2, 0)
        with journal.transaction(), pytest.raises(CheckpointError, match="already open"), journal.transaction():
            pass
        journal.record(b"d", "m-4")  # autocommit again after the block
    with Checkpoint(tmp_path / "j.db") as journal:
        assert journal.counts() == (3, 0)


def test_a_closed_connection_is_a_checkpoint_error() -> None:
    connection = sqlite3.connect(":memory:")
    connection.close()
    with pytest.raises(CheckpointError):
        Checkpoint(connection)
