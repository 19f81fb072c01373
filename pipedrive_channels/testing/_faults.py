"""The fault plan: the failures scheduled by ``fail_next``/``drop_next`` and the random ones of ``fail_randomly``."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from ._envelopes import error_body


@dataclass(slots=True)
class Fault:
    """One planned failure: answer ``status`` (None: drop the connection) to the next ``remaining`` requests."""

    remaining: int
    path: str | None  # only requests whose raw path ends with this count
    status: int | None
    headers: Mapping[str, str]
    body: object
    method: str | None = None  # only requests of this method count (None: any)

    def response(self, rate_headers: Mapping[str, str]) -> web.Response:
        """The answer: ``body`` as JSON, or sent raw as ``text/html`` when it is ``str``/``bytes``."""
        assert self.status is not None
        headers = {**rate_headers, **self.headers}
        if isinstance(self.body, (str, bytes)):
            content_type = "text/html; charset=utf-8"
            raw = self.body.encode() if isinstance(self.body, str) else self.body
        else:
            content_type = "application/json"
            raw = json.dumps(error_body(self.status) if self.body is None else self.body).encode()
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = content_type
        return web.Response(body=raw, status=self.status, headers=headers)


class FaultPlan:
    """Scheduled faults, taken in order, then random ones, each checked with its own probability."""

    def __init__(self) -> None:
        self._scheduled: list[Fault] = []
        self._random: list[tuple[float, Fault]] = []
        self._dice = random.Random()

    def __bool__(self) -> bool:
        return bool(self._scheduled or self._random)

    def schedule(self, fault: Fault) -> None:
        if fault.remaining > 0:
            self._scheduled.append(fault)

    def add_random(self, probability: float, fault: Fault) -> None:
        if not 0 <= probability <= 1:
            raise ValueError("probability must be in [0, 1]")
        self._random.append((probability, fault))

    def clear_random(self) -> None:
        self._random.clear()

    def take(self, path: str, method: str) -> Fault | None:
        """The fault this request gets, if any, counted against its plan."""
        for fault in self._scheduled:
            if (fault.path is None or path.endswith(fault.path)) and fault.method in (None, method):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._scheduled.remove(fault)
                return fault
        for probability, fault in self._random:
            if self._dice.random() < probability:
                return fault
        return None
