"""Shared test set-up."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import aioresponses.core
import pytest
from aiohttp import ClientResponse
from notes_mock import MockPipedrive, mocked
from notes_mock import client as notes_client
from redis_server import redis_server  # noqa: F401  (the session's redis-server fixture)
from webhook_e2e import client_of, started_fake

from pipedrive_channels import ChannelsClient
from pipedrive_channels.testing import FakePipedrive

# The extension's test provider and its app's test client: the `shop` and `http` fixtures (test_fake_server.py has
# an `http` of its own, a plain aiohttp session).
pytest_plugins = ["extension_shop"]

# aiohttp 3.14 added a required `stream_writer` argument to ClientResponse, which aioresponses 0.7.9 does not
# pass yet (pnuckowski/aioresponses#289). The mock only reads its `output_size` when the request is already
# sent, so a stand-in with output_size 0 is enough. Drop this once aioresponses ships the fix.
if "stream_writer" in inspect.signature(ClientResponse.__init__).parameters:

    class _ClientResponse(ClientResponse):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
            super().__init__(*args, **kwargs)

    aioresponses.core.ClientResponse = _ClientResponse  # type: ignore[misc]


@pytest.fixture
async def fake() -> AsyncIterator[FakePipedrive]:
    """A started FakePipedrive that accepts the bearer token ``factories.TOKEN`` and retries webhook deliveries
    after milliseconds, not seconds (``webhook_e2e.started_fake``)."""
    async with started_fake() as server:
        yield server


@pytest.fixture
async def client(fake: FakePipedrive) -> AsyncIterator[ChannelsClient]:
    """A client of ``fake`` with a roomy budget and quick retries (``webhook_e2e.client_of``)."""
    async with client_of(fake) as c:
        yield c


@pytest.fixture
def pd() -> Iterator[MockPipedrive]:
    """A stand-in Pipedrive on aioresponses, for the notes target's unit tests (``notes_mock``)."""
    yield from mocked()


@pytest.fixture
async def api() -> AsyncIterator[ChannelsClient]:
    """A client of the stand-in Pipedrive ``pd``."""
    async with notes_client() as c:
        yield c
