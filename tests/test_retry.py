"""The retry policy: waits from the server's headers, what is repeated, and that every attempt is charged.

The loop's waits, attempts and limits run on a fake clock (``Loop``); the tests against the fake Pipedrive check
what only real I/O shows: what is sent, what the budget charges, and that a hold pauses the other tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import pytest
from aioresponses import aioresponses

from pipedrive_channels import (
    BudgetExhaustedError,
    ChannelsClient,
    Message,
    MessageStatus,
    NotFoundError,
    PipedriveError,
    RateBudget,
    RateLimitError,
    Repeat,
    RetryPolicy,
    ServerError,
    TransportError,
)
from pipedrive_channels.errors import ApiError
from pipedrive_channels.retry import server_wait
from pipedrive_channels.testing import FakePipedrive

FAST = RetryPolicy(backoff_base=0.01, backoff_max=0.05)
BASE = "https://api.pipedrive.com/v1"


def message(index: int) -> Message:
    return Message(id=f"m-{index}", channel_id="ch", sender_id="u", conversation_id="c", message="hi",
                   status=MessageStatus.SENT, created_at=datetime(2026, 1, 1, tzinfo=timezone.utc))


@pytest.fixture
async def fake() -> AsyncIterator[FakePipedrive]:
    async with FakePipedrive() as server:
        server.add_access_token("token")
        yield server


def client_for(fake: FakePipedrive, retry: RetryPolicy = FAST, budget: RateBudget | None = None) -> ChannelsClient:
    return ChannelsClient("token", base_url=fake.base_url, retry=retry, budget=budget or RateBudget.unlimited())


def arrivals(fake: FakePipedrive, suffix: str) -> list[Any]:
    return [r for r in fake.requests if r.path.endswith(suffix)]


class Loop:
    """Runs ``RetryPolicy.retry`` on a fake clock (sleeping moves it on at once), as the budget records its holds."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []
        self.holds: list[float] = []
        self.sent = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def hold(self, seconds: float) -> None:  # the one budget method the loop calls
        self.holds.append(seconds)

    async def run(
        self, policy: RetryPolicy, first_error: PipedriveError, *later: PipedriveError | str,
        repeat: Repeat = Repeat.IDEMPOTENT, timeout: float | None = None,
    ) -> object:
        """Retry after ``first_error``; each attempt raises or returns the next of ``later``."""
        outcomes = list(later)

        async def attempt() -> object:
            self.sent += 1
            outcome = outcomes.pop(0)
            if isinstance(outcome, PipedriveError):
                raise outcome
            return outcome

        budget: Any = self
        deadline = None if timeout is None else self.now + timeout
        return await policy.retry(first_error, attempt, repeat=repeat, budget=budget, started=self.now,
                                  deadline=deadline, clock=self.clock, sleep=self.sleep)


@pytest.fixture
def loop() -> Loop:
    return Loop()


# -- the wait, from each header form ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "1.5", "x-ratelimit-reset": "9"}, 1.5),
        ({"x-ratelimit-reset": "1.4"}, 1.4),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # in the past: no wait, never negative
        ({"Retry-After": "soon"}, None),
        ({"x-ratelimit-reset": "junk"}, None),
        ({}, None),
    ],
)
def test_server_wait_reads_each_header_form(headers: dict[str, str], expected: float | None) -> None:
    assert server_wait(headers) == expected


def test_server_wait_reads_an_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert server_wait({"Retry-After": later}, now=now.timestamp()) == pytest.approx(30)


def test_a_429_waits_at_least_what_the_server_asked_plus_a_little() -> None:
    error = RateLimitError(429, headers={"Retry-After": "2"})
    waits = [RetryPolicy().wait(error, attempt) for attempt in (1, 2, 3) for _ in range(50)]
    assert all(2.0 <= wait <= 2.3 for wait in waits)
    assert RetryPolicy(jitter=False).wait(error, 1) == 2.0
    assert RetryPolicy(backoff_max=0.1).wait(RateLimitError(429, headers={"Retry-After": "60"}), 1) >= 60


def test_other_failures_back_off_exponentially_with_full_jitter_capped() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_max=3.0, jitter=False)
    error = ServerError(502)
    assert [policy.wait(error, n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    jittered = [RetryPolicy(backoff_base=0.5, backoff_max=3.0).wait(error, 3) for _ in range(200)]
    assert all(0 <= wait <= 2.0 for wait in jittered) and len(set(jittered)) > 100


@pytest.mark.parametrize(
    ("error", "repeat", "retried"),
    [
        (ServerError(503), Repeat.UNSAFE, True),
        (RateLimitError(429), Repeat.UNSAFE, True),
        (ServerError(500), Repeat.UNSAFE, False),
        (ServerError(502), Repeat.IDEMPOTENT, True),
        (ServerError(504), Repeat.DELETE, True),
        (TransportError("dropped"), Repeat.UNSAFE, False),
        (TransportError("refused", request_sent=False), Repeat.UNSAFE, True),
        (TransportError("dropped"), Repeat.IDEMPOTENT, True),
        (RateLimitError(429, headers={"x-daily-ratelimit-token-remaining": "0"}), Repeat.IDEMPOTENT, False),
        *((ApiError(status), Repeat.IDEMPOTENT, False) for status in (400, 401, 402, 403, 404, 410, 422)),
    ],
)
def test_which_failures_are_repeated(error: Exception, repeat: Repeat, retried: bool) -> None:
    assert RetryPolicy().should_retry(error, repeat) is retried


def test_unsafe_calls_are_repeated_after_ambiguous_failures_only_when_opted_in() -> None:
    policy = RetryPolicy(retry_unsafe=True)
    assert policy.should_retry(ServerError(500), Repeat.UNSAFE)
    assert policy.should_retry(TransportError("dropped"), Repeat.UNSAFE)


async def test_mocked_503s_then_success_with_aioresponses() -> None:
    with aioresponses() as mock:
        url = f"{BASE}/channels/p"
        mock.delete(url, status=503, payload={"success": False})
        mock.delete(url, status=503, payload={"success": False}, headers={"Retry-After": "0.05"})
        mock.delete(url, payload={"success": True})
        async with ChannelsClient("t", retry=FAST, budget=RateBudget.unlimited()) as client:
            await client.delete_channel("p")
        assert sum(len(calls) for calls in mock.requests.values()) == 3


# -- the loop, on a fake clock ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "wait"),
    [
        (RateLimitError(429, headers={"Retry-After": "1"}), 1.0),
        (RateLimitError(429, headers={"x-ratelimit-reset": "0.4", "x-ratelimit-remaining": "0"}), 0.4),
        (RateLimitError(429, headers={"Retry-After": "when-pigs-fly", "x-ratelimit-reset": "0.1"}), 0.1),
        (ServerError(503, headers={"Retry-After": "3"}), 3.0),  # maintenance
    ],
)
async def test_the_server_s_wait_is_slept_and_held_before_sending_again(
    loop: Loop, error: PipedriveError, wait: float
) -> None:
    # Even add_channel is repeated: a 429 or a 503 was not processed.
    assert await loop.run(RetryPolicy(jitter=False), error, "done", repeat=Repeat.UNSAFE) == "done"
    assert loop.sleeps == [wait] and loop.holds == [wait] and loop.sent == 1


async def test_a_retry_after_date_is_waited_for_in_whole_seconds(loop: Loop) -> None:
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=2), usegmt=True)
    await loop.run(RetryPolicy(jitter=False), RateLimitError(429, headers={"Retry-After": later}), "done")
    (wait,) = loop.sleeps  # the date has whole seconds: 2 s ahead is 1 to 2 s ahead
    assert 1.0 <= wait <= 2.0 and loop.holds == [pytest.approx(wait, abs=0.1)]  # read a moment apart


async def test_the_server_s_wait_gets_a_little_jitter_on_top_never_less(loop: Loop) -> None:
    await loop.run(RetryPolicy(), RateLimitError(429, headers={"Retry-After": "2"}), "done")
    (wait,) = loop.sleeps
    assert 2.0 <= wait <= 2.25 and loop.holds == [2.0]


async def test_each_retry_is_announced_with_the_failed_attempt_and_the_wait(loop: Loop) -> None:
    announced: list[tuple[int, float, str]] = []

    async def on_retry(attempt: int, wait: float, error: Exception) -> None:
        announced.append((attempt, wait, type(error).__name__))

    policy = RetryPolicy(backoff_base=0.5, jitter=False, on_retry=on_retry)
    assert await loop.run(policy, ServerError(503), ServerError(502), "done") == "done"
    assert announced == [(1, 0.5, "ServerError"), (2, 1.0, "ServerError")]
    assert loop.sleeps == [0.5, 1.0] and loop.sent == 2
    synchronous: list[int] = []
    await Loop().run(RetryPolicy(on_retry=lambda attempt, wait, error: synchronous.append(attempt)),
                     ServerError(503), "done")
    assert synchronous == [1]


async def test_max_attempts_ends_with_the_last_error(loop: Loop) -> None:
    policy = RetryPolicy(max_attempts=3, backoff_base=0.5, jitter=False)
    last = ServerError(504)
    with pytest.raises(ServerError) as info:
        await loop.run(policy, ServerError(502), ServerError(503), last, "never sent")
    assert info.value is last and (info.value.attempts, loop.sent) == (3, 2)
    assert loop.sleeps == [0.5, 1.0] and info.value.elapsed == pytest.approx(1.5)


@pytest.mark.parametrize(("max_elapsed", "timeout"), [(0.5, None), (120.0, 0.5)])
async def test_max_elapsed_and_the_call_deadline_end_with_the_last_error(
    loop: Loop, max_elapsed: float, timeout: float | None
) -> None:
    policy = RetryPolicy(max_attempts=100, max_elapsed=max_elapsed, backoff_base=0.2, backoff_max=0.2, jitter=False)
    with pytest.raises(ServerError) as info:
        await loop.run(policy, *(ServerError(503) for _ in range(100)), timeout=timeout)
    # Attempts at 0, 0.2 and 0.4 s; the next would start at 0.6 s, past the limit: none starts.
    assert info.value.attempts == 3 and loop.sleeps == [0.2, 0.2]
    assert info.value.elapsed == pytest.approx(0.4)


async def test_a_wait_that_would_end_past_the_deadline_is_not_started(loop: Loop) -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_max=1.0, jitter=False)
    with pytest.raises(ServerError) as info:
        await loop.run(policy, ServerError(503), "never sent", timeout=0.5)
    assert info.value.attempts == 1 and loop.sleeps == [] and loop.sent == 0


async def test_a_daily_budget_spent_on_a_retry_holds_the_budget_and_raises_exhausted(loop: Loop) -> None:
    spent = RateLimitError(429, headers={"x-daily-ratelimit-token-remaining": "0"})
    with pytest.raises(BudgetExhaustedError) as info:
        await loop.run(RetryPolicy(backoff_base=0.5, jitter=False), ServerError(502), spent, "never sent")
    assert info.value.__cause__ is spent and info.value.attempts == 2
    assert info.value.retry_after == 60.0 and info.value.retry_at == loop.now + 60.0  # no Retry-After: a minute
    assert loop.holds == [60.0] and loop.sleeps == [0.5]


@pytest.mark.parametrize(("first_error", "done"), [(ServerError(502), True), (RateLimitError(429), False)])
async def test_a_404_on_a_retried_delete_is_done_only_after_an_ambiguous_failure(
    loop: Loop, first_error: PipedriveError, done: bool
) -> None:
    gone = NotFoundError(404)
    if done:  # the 502 may have deleted it
        assert await loop.run(FAST, first_error, gone, repeat=Repeat.DELETE) is None
    else:  # a 429 was not processed: the 404 is the answer
        with pytest.raises(NotFoundError) as info:
            await loop.run(FAST, first_error, gone, repeat=Repeat.DELETE)
        assert info.value is gone and info.value.attempts == 2


# -- against the fake Pipedrive ---------------------------------------------------------------------------


async def test_a_dropped_connection_is_retried_for_receive_but_not_for_add_channel(fake: FakePipedrive) -> None:
    async with client_for(fake) as client:
        fake.drop_next(1)
        with pytest.raises(TransportError) as info:
            await client.add_channel(name="n", provider_channel_id="ch")  # may have registered: not repeated
        assert info.value.attempts == 1
    async with client_for(fake, RetryPolicy(backoff_base=0.01, retry_unsafe=True)) as client:
        fake.drop_next(1)
        await client.add_channel(name="n", provider_channel_id="ch")  # opted in: repeated
    async with client_for(fake) as client:
        fake.drop_next(2)
        await client.receive_message(message(1))
    assert [r.status for r in arrivals(fake, "/channels")] == [None, None, 200]
    assert [r.status for r in arrivals(fake, "/receive")] == [None, None, 200]


async def test_the_call_deadline_bounds_retries_too(fake: FakePipedrive) -> None:
    async with client_for(fake, RetryPolicy(backoff_base=1.0, backoff_max=1.0, jitter=False)) as client:
        await client.add_channel(name="n", provider_channel_id="ch")
        fake.fail_next(10, 503)
        with pytest.raises(ServerError) as info:
            await client.receive_message(message(1), timeout=0.5)  # a 1 s backoff would pass the deadline
    assert info.value.attempts == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
async def test_client_errors_are_not_retried(fake: FakePipedrive, status: int) -> None:
    async with client_for(fake) as client:
        await client.add_channel(name="n", provider_channel_id="ch")
        fake.fail_next(1, status)
        with pytest.raises(ApiError) as info:
            await client.receive_message(message(1))
    assert info.value.status == status and len(arrivals(fake, "/receive")) == 1


async def test_a_daily_budget_429_is_not_retried_and_stops_the_budget(fake: FakePipedrive) -> None:
    budget = RateBudget(requests_per_window=100, tokens_per_day=30_000)
    async with client_for(fake, budget=budget) as client:
        await client.add_channel(name="n", provider_channel_id="ch")
        fake.fail_next(1, 429, headers={"x-daily-ratelimit-token-remaining": "0", "Retry-After": "0.01"})
        with pytest.raises(BudgetExhaustedError) as info:
            await client.receive_message(message(1))
        assert isinstance(info.value.__cause__, RateLimitError) and info.value.attempts == 1
        with pytest.raises(BudgetExhaustedError):  # the other tasks stop too: nothing more is sent
            await client.receive_message(message(2), timeout=1.0)
    assert len(arrivals(fake, "/receive")) == 1


async def test_a_404_on_a_retried_delete_counts_as_done(fake: FakePipedrive) -> None:
    async with client_for(fake) as client:
        fake.fail_next(1, 502)  # ambiguous: the delete may have happened
        await client.delete_channel("never-added")  # then 404: done
        with pytest.raises(NotFoundError):
            await client.delete_channel("never-added")  # a plain 404 stays an error
    assert [r.status for r in arrivals(fake, "never-added")] == [502, 404, 404]


async def test_every_attempt_is_charged(fake: FakePipedrive) -> None:
    budget = RateBudget(requests_per_window=1_000, tokens_per_day=1_000_000)
    async with client_for(fake, budget=budget) as client:
        await client.add_channel(name="n", provider_channel_id="ch")
        fake.fail_next(2, 503)
        await client.receive_message(message(1))
    assert budget.stats().requests_admitted == len(fake.requests) == 4
    assert budget.stats().tokens_charged == 10 * 4


async def test_a_429_storm_across_50_tasks_does_not_multiply_requests(fake: FakePipedrive) -> None:
    async with client_for(fake, budget=RateBudget(requests_per_window=1_000)) as client:
        await client.add_channel(name="n", provider_channel_id="ch")
        fake.fail_next(50, 429, headers={"Retry-After": "0.5"})
        await asyncio.gather(*(client.receive_message(message(i)) for i in range(50)))
    calls = sorted(arrivals(fake, "/receive"), key=lambda r: r.at)
    storm_start = calls[0].at
    during = [r for r in calls if r.at < storm_start + 0.5]
    assert len(calls) == 100  # each task: one refused attempt, one accepted retry, nothing more
    assert all(r.status == 429 for r in during) and len(during) == 50


async def test_each_retry_is_logged_without_secrets(fake: FakePipedrive, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pipedrive_channels")
    async with client_for(fake) as client:
        await client.add_channel(name="n", provider_channel_id="ch")
        fake.fail_next(1, 503)
        await client.receive_message(message(1))
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "retrying in" in record.getMessage()
    assert "token" not in caplog.text


async def test_a_429s_wait_holds_the_other_tasks_sharing_the_budget(fake: FakePipedrive) -> None:
    refused_once = asyncio.Event()
    policy = RetryPolicy(on_retry=lambda attempt, wait, error: refused_once.set())
    async with client_for(fake, policy, budget=RateBudget(requests_per_window=1_000)) as client:
        await client.add_channel(name="n", provider_channel_id="ch")
        fake.fail_next(1, 429, headers={"Retry-After": "0.5"})
        first = asyncio.ensure_future(client.receive_message(message(1)))
        await refused_once.wait()
        await client.receive_message(message(2))  # another task, started after the 429 arrived
        await first
    refused, *later = arrivals(fake, "/receive")
    assert refused.status == 429 and len(later) == 2
    assert all(r.at - refused.at >= 0.5 for r in later)
