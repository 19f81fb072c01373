"""Token stores: where refreshed tokens are kept, so a restarted process picks up the newest one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Protocol

from ..errors import ValidationError
from ._tokens import NOT_JSON, OAuthToken, decode_json

__all__ = ["JsonFileTokenStore", "MemoryTokenStore", "TokenStore"]


class TokenStore(Protocol):
    """Where refreshed tokens are kept, so a restarted process picks up the newest one."""

    async def load(self) -> OAuthToken | None:
        """Return the stored token, or ``None`` when there is none."""

    async def save(self, token: OAuthToken) -> None:
        """Persist ``token``, replacing the stored one."""


class MemoryTokenStore:
    """A :class:`TokenStore` in memory: shares refreshed tokens between clients in one process."""

    def __init__(self, token: OAuthToken | None = None) -> None:
        self._token = token

    def __repr__(self) -> str:
        return f"MemoryTokenStore(has_token={self._token is not None})"

    async def load(self) -> OAuthToken | None:
        """Return the stored token."""
        return self._token

    async def save(self, token: OAuthToken) -> None:
        """Keep ``token``."""
        self._token = token


class JsonFileTokenStore:
    """A :class:`TokenStore` in a JSON file, readable by its owner only (mode 0600).

    Saves are atomic (a temporary file in the same folder, mode 0600, fsynced, then renamed over the old one),
    so a crash never leaves a half-written token behind. A temporary file a killed save left (it holds a
    token) is removed by the next load or save, once it is older than any save in progress could be.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        # mkstemp's names: the prefix, then 8 characters of [a-z0-9_]
        self._temp_name = re.compile(re.escape(f".{self.path.name}.") + "[a-z0-9_]{8}")

    def __repr__(self) -> str:
        return f"JsonFileTokenStore({str(self.path)!r})"

    async def load(self) -> OAuthToken | None:
        """Read the token, or ``None`` if the file does not exist.

        :raises ValidationError: the file is not a JSON token (the message names the field, never a value).
        """
        return await asyncio.to_thread(self._load)

    async def save(self, token: OAuthToken) -> None:
        """Write ``token`` atomically with mode 0600."""
        await asyncio.to_thread(self._save, token)

    def _load(self) -> OAuthToken | None:
        self._remove_stale_temp_files()
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        data = decode_json(raw)  # bytes: invalid UTF-8 is "not JSON" too
        if data is NOT_JSON:
            raise ValidationError("token_file", f"{self.path} is not JSON")
        if not isinstance(data, dict):
            raise ValidationError("token_file", f"{self.path} must hold a JSON object")
        return OAuthToken.from_json(data)

    def _save(self, token: OAuthToken) -> None:
        self._remove_stale_temp_files()
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)  # mkstemp: mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(token.to_json(), file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise

    def _remove_stale_temp_files(self) -> None:
        # Only older ones: a younger file may be another process's save under way, about to be renamed.
        cutoff = time.time() - _STALE_TEMP_FILE
        try:
            with os.scandir(self.path.parent) as entries:
                stale = [e.path for e in entries if self._temp_name.fullmatch(e.name) and e.stat().st_mtime < cutoff]
        except OSError:  # the folder is missing or unreadable: nothing to clean
            return
        for path in stale:
            with contextlib.suppress(FileNotFoundError):  # another process cleaned it first
                os.unlink(path)


_STALE_TEMP_FILE = 60.0
"""Seconds after which a store's temporary file is a killed save's leftover (a save takes milliseconds)."""
