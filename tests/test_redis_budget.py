"""RedisBudget against a real redis-server (tests/redis_server.py), never a mock.

The multi-process tests start tests/redis_worker.py, once per worker process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis_server import RedisServer

from pipedrive_channels import ChannelsClient, redis_budget
from pipedrive_channels.budget import (
    BudgetUnavailableError,
    Plan,
    Priority,
    RateBudget,
    RedisBudget,
    RedisReservation,
)
from pipedrive_channels.errors import BudgetExhaustedError, BudgetTimeoutError
from pipedrive_channels.testing import FakePipedrive, busiest_window


def _redis(port: int) -> Redis:
    # redis-py's default retry backs off for about 3 s before it reports Redis down; fail over sooner.
    return Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, socket_timeout=2.0,
                 retry=Retry(NoBackoff(), 1))


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = _redis(redis_server.port)
    yield client
    await client.aclose()


def _key() -> str:
    return f"test:{uuid.uuid4().hex}"


async def _admitted(budget: RedisBudget, cost: float = 0) -> RedisReservation | None:
    reservation = await budget.try_acquire(cost)
    assert reservation is None or isinstance(reservation, RedisReservation)
    return reservation


# -- the scripts at the window's edges ---------------------------------------------------------------------


async def test_window_admits_the_limit_then_frees_a_slot_window_after_its_settle(redis: Redis) -> None:
    budget = RedisBudget(redis, _key(), requests_per_window=3, window=0.3, search_requests_per_window=None)
    taken = [await _admitted(budget) for _ in range(3)]
    assert all(taken)
    assert await _admitted(budget) is None  # the limit: a fourth is not admitted
    taken[0].settle()  # type: ignore[union-attr]
    await budget.aclose()
    await asyncio.sleep(0.2)
    assert await _admitted(budget) is None  # freed only `window` after the settle
    await asyncio.sleep(0.15)
    assert await _admitted(budget) is not None
    assert await _admitted(budget) is None  # the other two are still in flight
    assert budget.stats().requests_admitted == 4


async def test_an_unsettled_slot_frees_window_plus_max_in_flight_after_admission(redis: Redis) -> None:
    key = _key()
    budget = RedisBudget(redis, key, requests_per_window=2, window=0.1, max_in_flight=0.3,
                         search_requests_per_window=None)
    assert await _admitted(budget) and await _admitted(budget)  # never settled: a crashed process
    await asyncio.sleep(0.25)
    assert await _admitted(budget) is None
    await asyncio.sleep(0.25)
    assert await _admitted(budget) is not None
    ttl = await redis.pttl(f"{key}:slots")
    assert 0 < ttl <= 100 + 300 + 1000  # keys vanish when idle


async def test_acquire_sleeps_the_time_redis_answers_and_fails_fast_past_its_deadline(redis: Redis) -> None:
    budget = RedisBudget(redis, _key(), requests_per_window=2, window=0.4, search_requests_per_window=None)
    for _ in range(2):
        (await budget.acquire(1)).settle()
    await budget.aclose()
    started = time.monotonic()
    with pytest.raises(BudgetTimeoutError):
        await budget.acquire(1, timeout=0.1)
    assert time.monotonic() - started < 0.05  # Redis said 0.4 s: no futile sleep
    await budget.acquire(1)
    assert 0.3 <= time.monotonic() - started < 0.6


async def test_one_head_per_process_asks_redis_and_the_queue_is_fifo(redis: Redis) -> None:
    budget = RedisBudget(redis, _key(), requests_per_window=2, window=0.2, search_requests_per_window=None)
    order: list[int] = []

    async def call(i: int) -> None:
        reservation = await budget.acquire(1, priority=Priority.BULK)
        order.append(i)
        reservation.settle()

    await asyncio.gather(*(call(i) for i in range(8)))
    assert order == list(range(8))
    assert budget.stats().queue_length == 0
    await budget.aclose()


async def test_daily_bucket_is_checked_and_charged_in_the_same_script(redis: Redis) -> None:
    budget = RedisBudget(redis, _key(), requests_per_window=100, tokens_per_day=100,
                         search_requests_per_window=None)
    assert await budget.acquire(60)
    with pytest.raises(BudgetExhaustedError) as caught:
        await budget.acquire(50, timeout=1)
    assert caught.value.retry_after == pytest.approx(10 * 864, rel=0.01)  # 10 tokens at 100 per day
    assert await budget.acquire(40, timeout=0)
    with pytest.raises(ValueError, match="capacity"):
        await budget.acquire(101)


async def test_headers_write_through_to_every_process(redis: Redis) -> None:
    key = _key()
    first = RedisBudget(redis, key, requests_per_window=10, tokens_per_day=1000, search_requests_per_window=None)
    other = RedisBudget(redis, key, requests_per_window=10, tokens_per_day=1000, search_requests_per_window=None)
    first.observe({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "0.3", "x-daily-ratelimit-token-remaining": "5"})
    await first.aclose()
    assert await _admitted(other) is None  # the shared hold
    await asyncio.sleep(0.35)
    assert await _admitted(other, 10) is None  # the lowered daily tokens
    assert await _admitted(other, 5) is not None
    other.hold(0.3)
    await other.aclose()
    assert await _admitted(first) is None


async def test_noscript_recovery(redis: Redis) -> None:
    budget = RedisBudget(redis, _key(), requests_per_window=10, search_requests_per_window=None)
    (await budget.acquire(1)).settle()
    await redis.script_flush()
    (await budget.acquire(1)).settle()  # NOSCRIPT: the script is loaded again and run
    await budget.aclose()
    assert budget.stats().requests_admitted == 2


async def test_clock_skew_between_processes_does_not_matter(redis: Redis) -> None:
    # Admission reads Redis TIME: local clocks an hour apart (and one going backwards) change nothing.
    key, limit, window = _key(), 4, 0.3
    clocks = [lambda: time.monotonic() + 3600, lambda: time.monotonic() - 3600, lambda: -time.monotonic()]
    budgets = [
        RedisBudget(redis, key, requests_per_window=limit, window=window, search_requests_per_window=None, clock=c)
        for c in clocks
    ]
    admitted: list[float] = []

    async def call(budget: RedisBudget) -> None:
        reservation = await budget.acquire(1)
        admitted.append(time.monotonic())
        reservation.settle()

    started = time.monotonic()
    await asyncio.gather(*(call(budgets[i % 3]) for i in range(12)))
    assert busiest_window(admitted, window) <= limit
    assert time.monotonic() - started >= 2 * window  # 12 calls, 4 per window: at least three windows
    for budget in budgets:
        await budget.aclose()


async def test_it_is_a_budget_the_client_accepts(redis: Redis) -> None:
    budget = RedisBudget.for_plan(redis, "k", plan=Plan.GROWTH, seats=2)
    client = ChannelsClient("token", base_url="http://127.0.0.1:9/v1", budget=budget)  # no cast needed
    assert client.budget is budget and budget.requests_per_window == 160
    assert budget.limits == RateBudget.for_plan(Plan.GROWTH, seats=2).limits
    assert isinstance(budget.search, RedisBudget) and budget.search.key == "k:search"
    assert "RedisBudget(key='k'" in repr(budget)


def test_the_old_module_still_exports_the_redis_budget() -> None:
    assert redis_budget.RedisBudget is RedisBudget
    assert redis_budget.RedisReservation is RedisReservation
    assert redis_budget.BudgetUnavailableError is BudgetUnavailableError


# -- Redis down, and back ----------------------------------------------------------------------------------


async def _run_through_restart(budget: RedisBudget, server: RedisServer) -> tuple[int, list[BaseException]]:
    admitted, errors = 0, []
    stop = asyncio.Event()

    async def task() -> None:
        nonlocal admitted
        while not stop.is_set():
            try:
                reservation = await budget.acquire(1, timeout=1)
            except BudgetUnavailableError as error:
                errors.append(error)
                await asyncio.sleep(0.02)
                continue
            admitted += 1
            reservation.settle()
            await asyncio.sleep(0.02)

    tasks = [asyncio.create_task(task()) for _ in range(4)]
    await asyncio.sleep(0.2)
    server.stop()
    await asyncio.sleep(0.4)
    down = admitted
    server.start()
    await asyncio.sleep(1.2)
    stop.set()
    await asyncio.gather(*tasks)
    await budget.aclose()
    return admitted - down, errors


async def test_redis_restarted_mid_run_fail_mode(redis: Redis, redis_server: RedisServer) -> None:
    budget = RedisBudget(redis, _key(), requests_per_window=1000, search_requests_per_window=None)
    after, errors = await _run_through_restart(budget, redis_server)
    assert errors and all(isinstance(e.__cause__, Exception) for e in errors)
    assert after > 0  # back on Redis once it answers


async def test_redis_restarted_mid_run_local_mode(
    redis: Redis, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    key = _key()
    # The fallback admits nothing in its first window: a short one, so that it admits during the 0.4 s outage.
    budget = RedisBudget(redis, key, requests_per_window=1000, window=0.2, on_redis_error="local",
                         search_requests_per_window=None)
    with caplog.at_level(logging.WARNING, logger="pipedrive_channels.redis_budget"):
        _, errors = await _run_through_restart(budget, redis_server)
    assert not errors
    falls = [r for r in caplog.records if "falls back" in r.getMessage()]
    assert len(falls) == 1  # logged once
    assert budget._fallback.local is not None and budget._fallback.local.stats().requests_admitted > 0
    assert await redis.exists(f"{key}:slots")  # back on Redis


# -- 4 OS processes sharing one key ------------------------------------------------------------------------

WORKER = Path(__file__).with_name("redis_worker.py")


def _workers(args: dict[str, Any], count: int = 4) -> list[dict[str, Any]]:
    processes = [
        subprocess.Popen([sys.executable, str(WORKER), json.dumps({**args, "worker": i})], stdout=subprocess.PIPE)
        for i in range(count)
    ]
    results = []
    for process in processes:
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        results.append(json.loads(out))
    return results


async def test_four_processes_never_exceed_the_window_and_use_it(redis_server: RedisServer) -> None:
    async with FakePipedrive(rate_limit=80, enforce_rate_limit=True) as fake:
        fake.add_access_token("shared-token")
        start, duration = time.time() + 1.5, 8.0
        args = {"mode": "fake", "port": redis_server.port, "key": _key(), "base_url": fake.base_url,
                "token": "shared-token", "start": start, "duration": duration, "tasks": 32}
        results = await asyncio.to_thread(_workers, args)
    times = [r.at for r in fake.requests]
    assert all(r.status == 200 for r in fake.requests)
    assert sum(r["requests"] for r in results) == len(times)
    assert busiest_window(times, 2.0) <= 80
    first = min(times)
    in_run = sum(1 for at in times if at < first + duration)
    assert in_run >= 0.9 * 80 * duration / 2.0, in_run


async def test_four_processes_share_one_daily_budget(redis_server: RedisServer) -> None:
    args = {"mode": "daily", "port": redis_server.port, "key": _key(), "start": time.time() + 1.0, "tasks": 32}
    results = await asyncio.to_thread(_workers, args)
    total = sum(r["tokens"] for r in results)
    assert 1000 - 7 < total <= 1000
