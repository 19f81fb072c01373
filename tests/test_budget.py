"""The rate budget on a fake clock: every rule is checked deterministically, without sleeping."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipedrive_channels.budget import Limits, Plan, Priority, RateBudget, Reservation, TokenBucket
from pipedrive_channels.errors import BudgetExhaustedError, BudgetTimeoutError

T = TypeVar("T")


class FakeTime:
    """Drives the running loop's clock by hand: timers fire only when the test advances time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.now = 1_000.0
        self.loop = loop

    def __call__(self) -> float:
        return self.now

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        for _ in range(10):
            await asyncio.sleep(0)


@pytest.fixture
async def clock(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeTime]:
    loop = asyncio.get_running_loop()
    fake = FakeTime(loop)
    monkeypatch.setattr(loop, "time", fake)
    yield fake


def start(awaitable: Awaitable[T]) -> asyncio.Task[T]:
    return asyncio.ensure_future(awaitable)


async def settle_all(reservations: list[Reservation]) -> None:
    for reservation in reservations:
        reservation.settle()


# -- TokenBucket ------------------------------------------------------------------------------------------


async def test_bucket_starts_full_and_refills_at_its_rate(clock: FakeTime) -> None:
    bucket = TokenBucket(10, 2, clock=clock)
    assert bucket.try_acquire(10)
    assert not bucket.try_acquire(1)
    await clock.advance(2.5)
    assert bucket.tokens == pytest.approx(5)
    await clock.advance(100)
    assert bucket.tokens == 10  # never above capacity


async def test_bucket_waiters_are_served_fifo_with_mixed_costs(clock: FakeTime) -> None:
    bucket = TokenBucket(10, 1, clock=clock)
    assert bucket.try_acquire(10)
    order: list[str] = []

    async def take(name: str, cost: float) -> None:
        await bucket.acquire(cost)
        order.append(name)

    tasks = [start(take("ten", 10)), start(take("six-a", 6)), start(take("six-b", 6))]
    await clock.advance(0)
    assert not bucket.try_acquire(1)  # waiters first: try_acquire never jumps the queue
    await clock.advance(6)
    assert order == []  # 6 tokens are there, but the 10-cost head is first
    await clock.advance(4)
    assert order == ["ten"]
    await clock.advance(6)
    assert order == ["ten", "six-a"]
    await clock.advance(6)
    assert order == ["ten", "six-a", "six-b"]
    await asyncio.gather(*tasks)


async def test_a_cost_above_capacity_fails_at_once(clock: FakeTime) -> None:
    bucket = TokenBucket(10, 1, clock=clock)
    with pytest.raises(ValueError, match="capacity"):
        await bucket.acquire(11)
    with pytest.raises(ValueError, match="non-negative"):
        bucket.try_acquire(-1)


async def test_bucket_deadline_fails_at_once_when_futile(clock: FakeTime) -> None:
    bucket = TokenBucket(10, 1, clock=clock)
    assert bucket.try_acquire(10)
    with pytest.raises(BudgetExhaustedError) as info:
        await bucket.acquire(5, timeout=4)
    assert info.value.retry_after == pytest.approx(5) and info.value.retry_at == pytest.approx(clock.now + 5)
    exactly_enough = start(bucket.acquire(5, timeout=5))
    await clock.advance(4.999)
    assert not exactly_enough.done()
    await clock.advance(0.001)
    await exactly_enough


# -- RateBudget: the window ---------------------------------------------------------------------------------


async def test_window_admits_exactly_the_limit_then_frees_a_slot_window_after_each_settle(clock: FakeTime) -> None:
    budget = RateBudget(requests_per_window=3, window=2.0, clock=clock)
    held = [await budget.acquire(1) for _ in range(3)]
    assert budget.try_acquire(1) is None
    held[0].settle()  # answered at t=0: that slot frees at t=2.0
    await clock.advance(0.5)
    held[1].settle()  # answered at t=0.5: frees at t=2.5
    waiter = start(budget.acquire(1))
    await clock.advance(1.4999)
    assert not waiter.done()
    await clock.advance(0.0001)
    assert waiter.done()
    assert budget.try_acquire(1) is None
    await clock.advance(0.5)
    assert budget.try_acquire(1) is not None
    assert budget.try_acquire(1) is None  # the third slot is still in flight: never freed by time alone
    held[2].settle()
    await clock.advance(1.999)
    assert budget.try_acquire(1) is None
    await clock.advance(0.001)
    assert budget.try_acquire(1) is not None


async def test_a_reservation_dropped_unsettled_frees_window_after_admission(clock: FakeTime) -> None:
    budget = RateBudget(requests_per_window=2, window=2.0, clock=clock)
    await budget.acquire(1)  # result dropped at once
    await clock.advance(1.0)
    await budget.acquire(1)
    gc.collect()
    assert budget.try_acquire(1) is None
    await clock.advance(1.0)
    kept = budget.try_acquire(1)
    assert kept is not None and budget.try_acquire(1) is None


async def test_waiters_are_woken_by_a_settle_when_every_slot_is_in_flight(clock: FakeTime) -> None:
    budget = RateBudget(requests_per_window=1, window=2.0, clock=clock)
    first = await budget.acquire(1)
    waiter = start(budget.acquire(1))
    await clock.advance(60)
    assert not waiter.done()  # in flight for a minute: the slot stays taken
    first.settle()
    await clock.advance(2)
    assert waiter.done()


async def test_cancelled_waiters_take_nothing(clock: FakeTime) -> None:
    budget = RateBudget(requests_per_window=1, window=2.0, tokens_per_day=1_000, clock=clock)
    first = await budget.acquire(10)
    cancelled = start(budget.acquire(10))
    kept = start(budget.acquire(10))
    await clock.advance(0)
    cancelled.cancel()
    await clock.advance(0)
    first.settle()
    await clock.advance(2)
    assert kept.done() and cancelled.cancelled()
    stats = budget.stats()
    assert (stats.requests_admitted, stats.tokens_charged, stats.queue_length) == (2, 20, 0)


async def test_deadline_in_the_window_is_a_budget_timeout_and_charges_nothing(clock: FakeTime) -> None:
    budget = RateBudget(requests_per_window=1, window=2.0, tokens_per_day=1_000, clock=clock)
    (await budget.acquire(10)).settle()
    with pytest.raises(BudgetTimeoutError):
        await budget.acquire(10, timeout=1.0)  # the slot frees in 2 s: futile, fails without waiting
    assert clock.now == 1_000
    late = start(budget.acquire(10, timeout=3.0))
    await clock.advance(2)
    await late
    assert budget.stats().tokens_charged == 20


async def test_a_deadline_passing_while_queued_fails_that_waiter_only(clock: FakeTime) -> None:
    budget = RateBudget(requests_per_window=1, window=2.0, clock=clock)
    first = await budget.acquire(1)  # in flight: no known end, so a deadline cannot be judged futile up front
    impatient = start(budget.acquire(1, timeout=1.0))
    patient = start(budget.acquire(1))
    await clock.advance(1.0)
    assert isinstance(impatient.exception(), BudgetTimeoutError)
    first.settle()
    await clock.advance(2.0)
    assert patient.done()


# -- RateBudget: the daily budget -----------------------------------------------------------------------------


async def test_daily_budget_is_charged_by_cost_and_exhaustion_names_the_retry_time(clock: FakeTime) -> None:
    budget = RateBudget(requests_per_window=10_000, tokens_per_day=86_400, daily_share=0.25, clock=clock)
    for _ in range(2160):  # 21,600 tokens: the quarter share
        (await budget.acquire(10)).settle()
    with pytest.raises(BudgetExhaustedError) as info:
        await budget.acquire(10, timeout=5)
    # The share refills 21,600 tokens per day = 0.25 per second: 10 tokens take 40 s.
    assert info.value.retry_after == pytest.approx(40)
    assert info.value.retry_at == pytest.approx(clock.now + 40)
    waiter = start(budget.acquire(10))
    await clock.advance(39.9)
    assert not waiter.done()
    await clock.advance(0.1)
    assert waiter.done()


async def test_daily_burst_paces_a_long_job(clock: FakeTime) -> None:
    budget = RateBudget(requests_per_window=1000, tokens_per_day=86_400, daily_burst=100, clock=clock)
    for _ in range(10):
        budget.try_acquire(10)
    assert budget.try_acquire(10) is None  # only the burst is there, not the whole day
    await clock.advance(10)  # refill 1 token per second
    assert budget.try_acquire(10) is not None


def test_plans_map_to_the_documented_limits() -> None:
    lite = RateBudget.for_plan(Plan.LITE, seats=1)
    assert lite.requests_per_window == 80 and "daily_capacity=30000" in repr(lite)
    ultimate = RateBudget.for_plan(Plan.ULTIMATE, seats=3, auth="api_token", daily_share=0.5)
    assert ultimate.requests_per_window == 120 and "daily_capacity=315000" in repr(ultimate)
    assert RateBudget.for_plan(Plan.GROWTH, 1).requests_per_window == 160
    assert RateBudget.for_plan(Plan.PREMIUM, 1, auth="api_token").requests_per_window == 100


def test_limits_hold_the_plan_table_and_are_the_budgets_keyword_arguments() -> None:
    limits = Limits.for_plan(Plan.PREMIUM, seats=2, daily_share=0.5)
    assert (limits.requests_per_window, limits.tokens_per_day, limits.daily_tokens) == (400, 300_000, 150_000)
    budget = RateBudget(**attrs.asdict(limits))
    assert budget.limits == limits and budget.search is not None and budget.search.requests_per_window == 10
    quarter = limits.scaled(0.25)
    assert (quarter.requests_per_window, quarter.daily_tokens, quarter.search_requests_per_window) == (100, 37_500, 2)
    with pytest.raises(ValueError, match="seats"):
        Limits.for_plan(Plan.LITE, seats=0)


def test_time_for_counts_the_window_and_the_daily_refill() -> None:
    limits = Limits(requests_per_window=80, tokens_per_day=86_400, daily_burst=100)
    assert limits.time_for(80, 10) == 0  # one full window, from full
    assert limits.time_for(160, 10) == 2.0  # a second window
    assert limits.time_for(1, 1100) == 1000.0  # 1000 tokens past the burst at 1 per second
    assert RateBudget(**attrs.asdict(limits)).time_for(1, 1100) == 1000.0
    assert RateBudget.unlimited().time_for(10**6, 10**9) == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"requests_per_window": 0}, {"requests_per_window": 1.5}, {"requests_per_window": 1, "window": 0},
     {"requests_per_window": 1, "daily_share": 0}, {"requests_per_window": 1, "daily_share": 1.5},
     {"requests_per_window": 1, "tokens_per_day": -1}, {"requests_per_window": 1, "bulk_share": 1}],
)
def test_bad_budget_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RateBudget(**kwargs)  # type: ignore[arg-type]


async def test_a_cost_above_the_daily_capacity_fails_at_once() -> None:
    budget = RateBudget(requests_per_window=10, tokens_per_day=100, daily_burst=20)
    with pytest.raises(ValueError, match="capacity"):
        await budget.acquire(21)


# -- header sync ---------------------------------------------------------------------------------------------


async def test_remaining_zero_holds_every_waiter_for_the_reset(clock: FakeTime) -> None:
    budget = RateBudget(requests_per_window=80, clock=clock)
    first = await budget.acquire(1)
    first.settle({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1.4", "x-ratelimit-limit": "80"})
    assert budget.try_acquire(1) is None
    waiters = [start(budget.acquire(1)) for _ in range(5)]
    await clock.advance(1.39)
    assert not any(w.done() for w in waiters)
    await clock.advance(0.01)
    assert all(w.done() for w in waiters)


async def test_a_remaining_above_zero_does_not_throttle(clock: FakeTime) -> None:
    budget = RateBudget(requests_per_window=10, clock=clock)
    budget.observe({"x-ratelimit-remaining": "3", "x-ratelimit-reset": "1.0"})  # a stale count: not acted on
    assert sum(budget.try_acquire(1) is not None for _ in range(12)) == 10


async def test_a_lower_daily_remaining_lowers_the_bucket(clock: FakeTime) -> None:
    budget = RateBudget(requests_per_window=10, tokens_per_day=30_000, clock=clock)
    budget.observe({"x-daily-ratelimit-token-remaining": "15"})
    assert budget.try_acquire(10) is not None
    assert budget.try_acquire(10) is None
    budget.observe({"x-daily-ratelimit-token-remaining": "99999", "x-ratelimit-remaining": "junk"})
    assert budget.try_acquire(10) is None  # a higher figure never raises the local view


async def test_hold_pauses_admissions(clock: FakeTime) -> None:
    budget = RateBudget(requests_per_window=10, clock=clock)
    budget.hold(3)
    waiter = start(budget.acquire(1))
    await clock.advance(2.9)
    assert not waiter.done()
    await clock.advance(0.1)
    assert waiter.done()


# -- priority lanes --------------------------------------------------------------------------------------------


async def test_interactive_goes_first_but_bulk_keeps_its_share(clock: FakeTime) -> None:
    budget = RateBudget(requests_per_window=1, window=1.0, bulk_share=0.2, clock=clock)
    blocker = await budget.acquire(1)
    order: list[str] = []

    async def call(name: str, priority: Priority) -> None:
        reservation = await budget.acquire(1, priority=priority)
        order.append(name)
        reservation.settle()

    tasks = [start(call(f"bulk{i}", Priority.BULK)) for i in range(4)]
    tasks += [start(call(f"live{i}", Priority.INTERACTIVE)) for i in range(12)]
    await clock.advance(0)
    blocker.settle()
    for _ in range(16):
        await clock.advance(1.0)
    assert order[:5] == ["live0", "live1", "live2", "live3", "bulk0"]
    assert order.count("bulk0") == 1 and order.index("bulk1") == 9  # every fifth admission while both wait
    assert len(order) == len(set(order)) == 16
    await asyncio.gather(*tasks)


async def test_stats_report_waits_and_the_queue(clock: FakeTime) -> None:
    budget = RateBudget(requests_per_window=1, window=2.0, clock=clock)
    (await budget.acquire(6)).settle()
    waiter = start(budget.acquire(10))
    await clock.advance(0)
    assert budget.stats().queue_length == 1
    await clock.advance(2)
    await waiter
    stats = budget.stats()
    assert (stats.tokens_charged, stats.requests_admitted, stats.queue_length) == (16, 2, 0)
    assert stats.total_wait == pytest.approx(2) and stats.max_wait == pytest.approx(2)


async def test_unlimited_admits_everything_and_still_counts() -> None:
    budget = RateBudget.unlimited()
    for _ in range(1000):
        (await budget.acquire(10)).settle({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "5"})  # ignored
    assert budget.try_acquire(10) is not None
    assert budget.stats().tokens_charged == 10_010 and budget.stats().requests_admitted == 1001
    budget.hold(100)  # but the server's explicit wait, relayed by the retry policy, is obeyed
    assert budget.try_acquire(10) is None


# -- property: no interleaving over-admits ---------------------------------------------------------------------

OPERATIONS = st.lists(
    st.tuples(st.sampled_from(["acquire", "acquire", "cancel", "settle", "advance", "observe"]), st.integers(0, 40)),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(OPERATIONS)
def test_no_interleaving_of_acquires_cancels_and_settles_over_admits(operations: list[tuple[str, int]]) -> None:
    limit, window, capacity, per_second = 3, 2.0, 20.0, 0.5

    async def run() -> None:
        loop = asyncio.get_running_loop()
        clock = FakeTime(loop)
        loop.time = clock  # type: ignore[method-assign]
        started = clock.now
        budget = RateBudget(requests_per_window=limit, window=window, tokens_per_day=capacity,
                            daily_burst=capacity, clock=clock)
        budget._daily.refill_per_second = per_second  # type: ignore[union-attr]
        pending: list[asyncio.Task[Reservation]] = []
        held: list[Reservation] = []
        settled_at: list[float] = []
        for operation, n in operations:
            if operation == "acquire":
                pending.append(start(budget.acquire(1 + n % 10, priority=Priority(n % 2), timeout=n or None)))
            elif operation == "cancel" and pending:
                pending[n % len(pending)].cancel()
            elif operation == "settle" and held:
                held.pop(n % len(held)).settle()
                settled_at.append(clock.now)
            elif operation == "advance":
                await clock.advance(n / 8)
            elif operation == "observe":
                budget.observe({"x-ratelimit-remaining": str(n % 4), "x-ratelimit-reset": "0.5"})
            await clock.advance(0)
            for task in [t for t in pending if t.done()]:
                pending.remove(task)
                if not task.cancelled() and task.exception() is None:
                    held.append(task.result())
            taken = len(held) + sum(1 for at in settled_at if at + window > clock.now)
            assert taken <= limit
            assert budget._free(clock.now) >= 0
            assert budget.stats().tokens_charged <= capacity + per_second * (clock.now - started) + 1e-9
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    asyncio.run(run())


async def test_a_task_cancelled_right_after_admission_keeps_its_charge(clock: FakeTime) -> None:
    budget = RateBudget(requests_per_window=1, window=2.0, tokens_per_day=1_000, clock=clock)
    first = await budget.acquire(10)
    admitted_then_cancelled = start(budget.acquire(10))
    await clock.advance(0)
    first.settle()  # the slot frees at t + 2
    clock.now += 2.0  # time passes without a loop iteration
    budget.observe({})  # a sync point re-checks the queue: the waiter is admitted...
    admitted_then_cancelled.cancel()  # ...and its task is cancelled before it runs again
    await clock.advance(0)
    assert admitted_then_cancelled.cancelled()
    assert budget.stats().tokens_charged == 20  # what was admitted stays charged (the server may have it)
    assert budget.try_acquire(10) is None  # and its slot is held a window from its admission
    await clock.advance(2.0)
    assert budget.try_acquire(10) is not None


async def test_one_budget_shared_by_many_tasks_never_over_admits(clock: FakeTime) -> None:
    budget = RateBudget(requests_per_window=5, window=1.0, clock=clock)
    admitted_at: list[float] = []

    async def call() -> None:
        reservation = await budget.acquire(1)
        admitted_at.append(clock.now)
        reservation.settle()

    tasks = [start(call()) for _ in range(50)]
    for _ in range(12):
        await clock.advance(1.0)
    await asyncio.gather(*tasks)
    assert len(admitted_at) == 50
    assert max(sum(1 for t in admitted_at if start_at <= t < start_at + 1.0) for start_at in admitted_at) == 5


async def test_a_zero_reset_holds_nothing_while_a_missing_one_holds_a_window(clock: FakeTime) -> None:
    budget = RateBudget(requests_per_window=10, window=2.0, clock=clock)
    budget.observe({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "0.000"})
    assert budget.try_acquire(1) is not None
    budget.observe({"x-ratelimit-remaining": "0"})
    assert budget.try_acquire(1) is None
    await clock.advance(2.0)
    assert budget.try_acquire(1) is not None
