"""Issue 11, the rate headers and server-supplied waits: one parser, every wait finite and capped, and the wait
always lands on the shared budget (local, unlimited or Redis), so nobody keeps sending through it."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from factories import message
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis_server import RedisServer

from pipedrive_channels import (
    BudgetExhaustedError,
    BudgetTimeoutError,
    ChannelsClient,
    Message,
    RateBudget,
    RateLimitError,
    RetryPolicy,
    TokenBucket,
    ValidationError,
)
from pipedrive_channels.backfill import backfill
from pipedrive_channels.budget import RedisBudget
from pipedrive_channels.budget._rate_headers import MAX_BURST_RESET, MAX_SERVER_WAIT, RateHeaders
from pipedrive_channels.retry import retry_after, server_wait
from pipedrive_channels.testing import FakePipedrive

FAST = RetryPolicy(backoff_base=0.01, backoff_max=0.05)


def messages(n: int) -> Iterator[Message]:
    return (message(i) for i in range(n))


def client_for(fake: FakePipedrive, budget: RateBudget, retry: RetryPolicy = FAST) -> ChannelsClient:
    return ChannelsClient("token", base_url=fake.base_url, retry=retry, budget=budget)


def receives(fake: FakePipedrive) -> int:
    return sum(r.path.endswith("/receive") for r in fake.requests)


# -- #19, #3: one parser; numbers, finite, non-negative, every wait capped --------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0.0), ("0.0", 0.0), ("12", 12.0), (" 7 ", 7.0), ("NaN", None), ("inf", None), ("-1", None),
     ("lots", None), ("", None)],
)
def test_daily_remaining_is_a_finite_non_negative_number(value: str, expected: float | None) -> None:
    rate = RateHeaders.from_http({"x-daily-ratelimit-token-remaining": value})
    assert rate.daily_remaining == expected
    assert rate.daily_spent is (expected == 0)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-ratelimit-reset": "1e12"}, MAX_BURST_RESET),  # a broken or hostile header: a few windows at most
        ({"x-ratelimit-reset": "inf"}, None),
        ({"x-ratelimit-reset": "nan"}, None),
        ({"x-ratelimit-reset": "-3"}, None),
        ({"x-ratelimit-reset": "0.000"}, 0.0),  # a real answer, not a missing one
        ({"Retry-After": "1e12"}, MAX_SERVER_WAIT),
        ({"Retry-After": "Fri, 01 Jan 9999 00:00:00 GMT"}, MAX_SERVER_WAIT),
        ({"Retry-After": "inf", "x-ratelimit-reset": "1"}, 1.0),  # an unusable Retry-After is no Retry-After
        ({"Retry-After": "-5"}, None),
    ],
)
def test_server_waits_are_finite_and_capped(headers: dict[str, str], expected: float | None) -> None:
    assert server_wait(headers) == expected


def test_the_caps_are_a_few_burst_windows_and_a_day() -> None:
    assert 2.0 < MAX_BURST_RESET <= 10.0 and MAX_SERVER_WAIT == 86_400.0
    assert retry_after({"Retry-After": "90000"}) == MAX_SERVER_WAIT
    assert RateHeaders.from_http({}) == RateHeaders()  # nothing there, nothing known


async def test_a_huge_or_infinite_window_reset_holds_the_budget_a_few_seconds_at_most() -> None:
    for reset in ("1e12", "inf"):
        budget = RateBudget(requests_per_window=10, search_requests_per_window=None)
        budget.observe({"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset})
        reservation = await asyncio.wait_for(budget.acquire(1, timeout=MAX_BURST_RESET + 1), 30)
        reservation.settle()


async def test_a_nan_daily_remaining_leaves_the_bucket_alone_and_zero_point_zero_empties_it() -> None:
    budget = RateBudget(requests_per_window=10, tokens_per_day=1_000, search_requests_per_window=None)
    budget.observe({"x-daily-ratelimit-token-remaining": "NaN"})
    budget.observe({"x-daily-ratelimit-token-remaining": "lots"})
    assert budget.try_acquire(10) is not None
    budget.observe({"x-daily-ratelimit-token-remaining": "0.0"})
    assert budget.try_acquire(10) is None


async def test_a_daily_remaining_of_zero_point_zero_is_a_spent_budget_not_a_burst_429(fake: FakePipedrive) -> None:
    async with client_for(fake, RateBudget.unlimited()) as client:
        fake.fail_next(1, 429, headers={"x-daily-ratelimit-token-remaining": "0.0", "Retry-After": "0.01"})
        with pytest.raises(BudgetExhaustedError):
            await client.receive_message(message(1))
    assert receives(fake) == 1  # not retried


# -- #3 in Redis: the shared hold is capped too ---------------------------------------------------------------


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis(host="127.0.0.1", port=redis_server.port, socket_connect_timeout=0.5, socket_timeout=2.0,
                   retry=Retry(NoBackoff(), 1))
    yield client
    await client.aclose()


async def test_a_huge_window_reset_writes_a_short_shared_hold(redis: Redis) -> None:
    key = f"test:{uuid.uuid4().hex}"
    budget = RedisBudget(redis, key, requests_per_window=10, search_requests_per_window=None)
    budget.observe({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1e12"})
    await budget.aclose()
    assert 0 < await redis.pttl(f"{key}:hold") <= MAX_BURST_RESET * 1000
    budget.hold(1e12)  # and a hold asked for directly: at most a day
    await budget.aclose()
    assert await redis.pttl(f"{key}:hold") <= MAX_SERVER_WAIT * 1000


async def test_an_infinite_window_reset_holds_the_shared_budget_one_window(redis: Redis) -> None:
    key = f"test:{uuid.uuid4().hex}"
    budget = RedisBudget(redis, key, requests_per_window=10, window=2.0, search_requests_per_window=None)
    budget.observe({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "inf"})
    await budget.aclose()
    assert 0 < await redis.pttl(f"{key}:hold") <= 2_000


# -- #5, #27: a spent daily budget pauses every caller, whatever the budget ------------------------------------


@pytest.mark.parametrize(
    ("budget", "headers"),
    [
        (RateBudget.unlimited, {"x-daily-ratelimit-token-remaining": "0", "Retry-After": "3600"}),
        (RateBudget.unlimited, {"x-daily-ratelimit-token-remaining": "0"}),  # no word on when: still a pause
        (lambda: RateBudget(requests_per_window=1_000), {"x-daily-ratelimit-token-remaining": "0"}),  # no daily bucket
    ],
)
async def test_a_spent_daily_budget_pauses_a_backfill_instead_of_hammering(
    fake: FakePipedrive, tmp_path: Path, budget: object, headers: dict[str, str]
) -> None:
    journal = tmp_path / "journal.sqlite"
    async with client_for(fake, budget()) as client:  # type: ignore[operator]
        await client.add_channel(name="n", provider_channel_id="ch")
        fake.fail_randomly(1.0, 429, headers=headers)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(1.0, stop.set)  # no deadline: it pauses until stopped
        report = await asyncio.wait_for(
            backfill(client, messages(200), concurrency=2, checkpoint=journal, stop=stop, stop_grace=0.2), 30
        )
    assert report.stopped and report.delivered == 0 and report.failed == 0
    assert receives(fake) <= 4  # the first answers paused the budget: not hundreds of requests
    fake.clear_random_faults()
    async with client_for(fake, RateBudget.unlimited()) as client:  # resumable: a later run delivers everything
        rest = await asyncio.wait_for(backfill(client, messages(200), concurrency=8, checkpoint=journal), 30)
    assert (rest.delivered, rest.failed, rest.stopped) == (200, 0, False)


async def test_a_spent_daily_budget_that_resets_before_the_deadline_pauses_the_backfill(fake: FakePipedrive) -> None:
    async with client_for(fake, RateBudget.unlimited()) as client:
        await client.add_channel(name="n", provider_channel_id="ch")
        fake.fail_next(1, 429, headers={"x-daily-ratelimit-token-remaining": "0", "Retry-After": "0.3"})
        report = await asyncio.wait_for(backfill(client, messages(10), concurrency=1, deadline=600), 30)
    assert (report.delivered, report.failed, report.stopped) == (10, 0, False)
    refused, retried = [r for r in fake.requests if r.path.endswith("/receive")][:2]
    assert refused.status == 429 and retried.at - refused.at >= 0.3


async def test_a_spent_daily_budget_past_the_deadline_stops_the_backfill_at_once(fake: FakePipedrive) -> None:
    async with client_for(fake, RateBudget.unlimited()) as client:
        await client.add_channel(name="n", provider_channel_id="ch")
        fake.fail_randomly(1.0, 429, headers={"x-daily-ratelimit-token-remaining": "0", "Retry-After": "3600"})
        report = await asyncio.wait_for(backfill(client, messages(200), concurrency=2, deadline=600), 30)
    assert report.stopped and report.delivered == 0 and receives(fake) <= 2  # the pause outlasts the deadline


async def test_the_error_of_a_spent_daily_budget_says_when_to_come_back(fake: FakePipedrive) -> None:
    budget = RateBudget.unlimited()
    async with client_for(fake, budget) as client:
        fake.fail_next(1, 429, headers={"x-daily-ratelimit-token-remaining": "0", "Retry-After": "3600"})
        with pytest.raises(BudgetExhaustedError) as info:
            await client.receive_message(message(1))
        assert info.value.retry_after == pytest.approx(3600)
        with pytest.raises(BudgetTimeoutError):  # every other caller of the budget pauses too
            await client.receive_message(message(2), timeout=0.5)
    assert receives(fake) == 1


# -- #6: a server wait longer than the call's patience still holds the shared budget -----------------------------


async def test_a_retry_after_past_max_elapsed_still_holds_the_budget(fake: FakePipedrive) -> None:
    budget = RateBudget(requests_per_window=100, search_requests_per_window=None)
    async with client_for(fake, budget, RetryPolicy(max_elapsed=1.0)) as client:
        fake.fail_next(1, 429, headers={"Retry-After": "300"})
        with pytest.raises(RateLimitError):
            await client.receive_message(message(1))  # gives up: the wait is past its max_elapsed
        with pytest.raises(BudgetTimeoutError):  # but the others do not keep sending
            await client.receive_message(message(2), timeout=0.5)
    assert receives(fake) == 1


async def test_a_call_that_never_retries_still_holds_the_budget_for_the_servers_wait(fake: FakePipedrive) -> None:
    budget = RateBudget.unlimited()  # an unlimited budget models no limit, but obeys the server's word
    async with client_for(fake, budget, RetryPolicy.none()) as client:
        fake.fail_next(1, 429, headers={"Retry-After": "300"})
        with pytest.raises(RateLimitError):
            await client.receive_message(message(1))
        with pytest.raises(BudgetTimeoutError):
            await client.receive_message(message(2), timeout=0.5)
    assert receives(fake) == 1


# -- #25: a timeout is a number of seconds -----------------------------------------------------------------------


async def test_a_nan_or_negative_timeout_is_refused() -> None:
    budget = RateBudget(requests_per_window=10, tokens_per_day=1_000, search_requests_per_window=None)
    for timeout in (math.nan, -1.0):
        with pytest.raises(ValidationError, match="timeout"):
            await budget.acquire(1, timeout=timeout)
        with pytest.raises(ValidationError, match="timeout"):
            await TokenBucket(10, 1).acquire(1, timeout=timeout)
    assert budget.stats().requests_admitted == 0


async def test_an_infinite_timeout_means_no_limit() -> None:
    budget = RateBudget(requests_per_window=1, window=0.05, search_requests_per_window=None)
    first = await budget.acquire(0, timeout=math.inf)
    first.settle()
    second = await asyncio.wait_for(budget.acquire(0, timeout=math.inf), 5)  # waits for the slot, then goes
    second.settle()


async def test_the_redis_budget_refuses_a_nan_timeout(redis: Redis) -> None:
    budget = RedisBudget(redis, f"test:{uuid.uuid4().hex}", requests_per_window=10, search_requests_per_window=None)
    with pytest.raises(ValidationError, match="timeout"):
        await budget.acquire(1, timeout=math.nan)
    assert budget.stats().requests_admitted == 0
