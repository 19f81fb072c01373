"""RedisBudget when Redis stalls or goes away, and admissions that are cancelled: against a private redis-server.

The server is this module's own (tests/redis_server.py's RedisServer on a free port), so SIGSTOP can stall it
without stalling other tests. Each stall ends with SIGCONT in a ``finally``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis_server import RedisServer, running_redis_server

from pipedrive_channels import ChannelsClient
from pipedrive_channels.budget import BudgetUnavailableError, RedisBudget, RedisReservation
from pipedrive_channels.errors import BudgetTimeoutError
from pipedrive_channels.retry import RetryPolicy
from pipedrive_channels.testing import busiest_window

# A hang guard, far above what any of these calls may take.
GUARD = 5.0


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with running_redis_server() as private:  # this module's own: SIGSTOP must not stall the session's server
        yield private


@pytest.fixture
async def redis(server: RedisServer) -> AsyncIterator[Redis]:
    # No socket_timeout (redis-py's default): only the budget's own bound can end a stalled call.
    client = Redis(host="127.0.0.1", port=server.port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 1))
    await client.ping()  # one open connection before any stall
    yield client
    await client.aclose()


@contextmanager
def stalled(server: RedisServer) -> Iterator[None]:
    """The server stops answering (its process is stopped; connections stay open) until the block ends."""
    assert server._process is not None
    pid = server._process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _key() -> str:
    return f"hardening:{uuid.uuid4().hex}"


async def _held_past(redis: Redis, key: str, window: float) -> list[bytes]:
    """The slots under ``key`` that free later than ``window`` seconds from now (Redis's clock)."""
    seconds, micros = await redis.time()
    now_ms = seconds * 1000 + micros / 1000
    return list(await redis.zrangebyscore(key, now_ms + window * 1000, "+inf"))


async def _warm(budget: RedisBudget) -> None:
    """Load the scripts (as any earlier call of a running process has): a stalled EVALSHA then runs later."""
    (await budget.acquire(0)).settle()
    await budget.aclose()


# -- item 4: a stalled Redis is an outage, bounded by the caller's deadline --------------------------------


async def test_a_stalled_redis_is_an_outage_within_the_timeout_in_fail_mode(redis: Redis, server: RedisServer) -> None:
    key = _key()
    budget = RedisBudget(redis, key, requests_per_window=10, window=0.3, search_requests_per_window=None)
    await _warm(budget)
    with stalled(server), pytest.raises(BudgetUnavailableError, match="did not answer"):
        await asyncio.wait_for(budget.acquire(1, timeout=1), GUARD)
    await asyncio.wait_for(budget.aclose(), GUARD)
    assert await _held_past(redis, f"{key}:slots", 0.3) == []  # what the stalled script admitted was given back


async def test_the_callers_deadline_bounds_a_round_trip_shorter_than_redis_timeout(
    redis: Redis, server: RedisServer
) -> None:
    budget = RedisBudget(redis, _key(), requests_per_window=10, redis_timeout=30, search_requests_per_window=None)
    await _warm(budget)
    with stalled(server), pytest.raises(BudgetUnavailableError, match=r"within 0\.3 s"):
        await asyncio.wait_for(budget.acquire(1, timeout=0.3), GUARD)
    await asyncio.wait_for(budget.aclose(), GUARD)


async def test_a_stalled_redis_engages_the_fallback_within_the_timeout_in_local_mode(
    redis: Redis, server: RedisServer
) -> None:
    budget = RedisBudget(redis, _key(), requests_per_window=10, window=0.2, on_redis_error="local",
                         redis_timeout=0.3, search_requests_per_window=None)
    with stalled(server):
        reservation = await asyncio.wait_for(budget.acquire(1, timeout=1), GUARD)
    assert not isinstance(reservation, RedisReservation)  # the local fallback admitted it
    assert budget._fallback.local is not None and budget._fallback.local.stats().requests_admitted == 1
    await asyncio.wait_for(budget.aclose(), GUARD)


async def test_background_writes_to_a_stalled_redis_are_bounded(redis: Redis, server: RedisServer) -> None:
    budget = RedisBudget(redis, _key(), requests_per_window=10, window=0.3, search_requests_per_window=None)
    reservation = await budget.acquire(1)
    with stalled(server):
        reservation.settle()
        budget.hold(0.1)
        with pytest.raises(BudgetUnavailableError):
            await asyncio.wait_for(budget.acquire(1, timeout=1), GUARD)  # its release waits for Redis
        await asyncio.wait_for(budget.aclose(), GUARD)  # the settle, the hold and the release gave up


def test_redis_timeout_must_be_positive() -> None:
    redis = Redis(host="127.0.0.1", port=9)
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="redis_timeout"):
            RedisBudget(redis, "k", requests_per_window=1, redis_timeout=bad)


# -- item 17: the local fallback starts with no free slot ---------------------------------------------------


async def test_the_fallback_adds_no_burst_to_the_window_redis_just_filled(redis: Redis, server: RedisServer) -> None:
    limit, window = 20, 0.4
    budget = RedisBudget(redis, _key(), requests_per_window=limit, window=window, on_redis_error="local",
                         search_requests_per_window=None)
    admitted: list[float] = []
    for _ in range(limit):  # the shared window is full (one process stands for all of them here)
        (await budget.acquire(0)).settle()
        admitted.append(time.monotonic())
    await budget.aclose()
    server.stop()
    try:
        end = time.monotonic() + 2.5 * window
        while (left := end - time.monotonic()) > 0:
            try:
                (await asyncio.wait_for(budget.acquire(0, timeout=left), GUARD)).settle()
            except BudgetTimeoutError:
                break
            admitted.append(time.monotonic())
    finally:
        server.start()
    assert len(admitted) > limit  # the fallback did admit, once the window Redis filled had passed
    assert busiest_window(admitted, window) <= limit


# -- item 24: a cancelled or failed admission holds no slot past one window -------------------------------


async def test_cancelling_acquire_during_its_script_gives_the_slot_and_the_tokens_back(
    redis: Redis, server: RedisServer
) -> None:
    key = _key()
    budget = RedisBudget(redis, key, requests_per_window=10, window=0.3, tokens_per_day=100,
                         search_requests_per_window=None)
    await _warm(budget)
    with stalled(server):
        task = asyncio.create_task(budget.acquire(10))
        await asyncio.sleep(0.1)  # the script is sent; Redis has not answered
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await asyncio.wait_for(budget.aclose(), GUARD)
    assert await _held_past(redis, f"{key}:slots", 0.3) == []
    other = RedisBudget(redis, key, requests_per_window=10, window=0.3, tokens_per_day=100,
                        search_requests_per_window=None)
    assert await other.acquire(100, timeout=0)  # the 10 tokens were refunded: the bucket is full


async def test_a_search_request_whose_main_admission_times_out_frees_its_search_slot(redis: Redis) -> None:
    key, window = _key(), 0.3
    budget = RedisBudget(redis, key, requests_per_window=1, window=window, search_requests_per_window=2)
    assert await budget.try_acquire(0)  # the main window is full (in flight, never settled)
    async with ChannelsClient("token", base_url="http://127.0.0.1:9/v1", budget=budget,
                              retry=RetryPolicy.none()) as client:
        for _ in range(2):
            with pytest.raises(BudgetTimeoutError):
                await asyncio.wait_for(client.request("GET", "/leads/search", params={"term": "x"}, timeout=0.1),
                                       GUARD)
    await budget.aclose()
    await asyncio.sleep(window + 0.1)
    assert budget.search is not None
    assert await budget.search.try_acquire(0) and await budget.search.try_acquire(0)  # both slots free again
