"""The budget contract (``pipedrive_channels.budget.Budget``), the same cases against both implementations.

``RateBudget`` runs on the loop's clock, ``RedisBudget`` against a real redis-server (tests/redis_server.py); both
with short windows. Nothing here asserts how long a wait took: only who is admitted, in which order, and what is
refused or charged. ``GUARD`` bounds every wait that must end, far above what it takes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis_server import RedisServer

from pipedrive_channels.budget import Admission, Budget, Priority, RateBudget, RedisBudget
from pipedrive_channels.errors import BudgetExhaustedError, BudgetTimeoutError

GUARD = 5.0
WINDOW = 0.1

Make = Callable[..., Budget]


@pytest.fixture(params=["local", "redis"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """Builds budgets of one kind with ``RateBudget``'s keyword arguments (window ``WINDOW``, no search window)."""
    made: list[RedisBudget] = []
    redis: Redis | None = None
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        redis = Redis(host="127.0.0.1", port=server.port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 1))

    def build(**kwargs: Any) -> Budget:
        kwargs = {"window": WINDOW, "search_requests_per_window": None, **kwargs}
        if redis is None:
            return RateBudget(**kwargs)
        budget = RedisBudget(redis, f"contract:{uuid.uuid4().hex}", **kwargs)
        made.append(budget)
        return budget

    yield build
    for budget in made:
        await budget.aclose()
        if budget.search is not None:
            await budget.search.aclose()
    if redis is not None:
        await redis.aclose()


async def written(budget: Budget) -> None:
    """Let a Redis budget's background writes (settles, holds, header syncs) reach Redis; a local one has none."""
    if isinstance(budget, RedisBudget):
        await budget.aclose()


async def full(budget: Budget, requests: int, cost: float = 0) -> list[Admission]:
    """Take ``requests`` slots (admitted, in flight, not settled)."""
    return [await asyncio.wait_for(budget.acquire(cost, timeout=0), GUARD) for _ in range(requests)]


async def queued(budget: Budget, order: list[str], name: str, cost: float = 0,
                 priority: Priority = Priority.INTERACTIVE) -> asyncio.Task[None]:
    """Start a caller that records ``name`` in ``order`` when admitted, and settles at once; it queues now."""

    async def call() -> None:
        admission = await budget.acquire(cost, priority=priority)
        order.append(name)
        admission.settle()

    task = asyncio.create_task(call())
    await asyncio.sleep(0)  # it runs up to its first wait: it is in the queue, behind the ones started before
    return task


# -- FIFO ---------------------------------------------------------------------------------------------------


async def test_waiters_in_one_lane_are_admitted_in_arrival_order(make: Make) -> None:
    budget = make(requests_per_window=1)
    [blocker] = await full(budget, 1)
    order: list[str] = []
    tasks = [await queued(budget, order, f"c{i}", priority=Priority.BULK) for i in range(6)]
    blocker.settle()
    await asyncio.wait_for(asyncio.gather(*tasks), GUARD)
    assert order == [f"c{i}" for i in range(6)]
    assert budget.stats().queue_length == 0


async def test_a_big_waiter_is_not_overtaken_by_later_small_ones(make: Make) -> None:
    # 50 tokens a second, at most 10 at once; the window is no constraint.
    budget = make(requests_per_window=1000, tokens_per_day=50 * 86_400, daily_burst=10)
    await full(budget, 1, cost=10)  # the bucket is empty
    order: list[str] = []
    tasks = [await queued(budget, order, name, cost) for name, cost in (("ten", 10), ("six-a", 6), ("six-b", 6))]
    await asyncio.wait_for(asyncio.gather(*tasks), GUARD)
    assert order == ["ten", "six-a", "six-b"]
    assert budget.stats().tokens_charged == 32


# -- deadlines ------------------------------------------------------------------------------------------------


async def test_a_call_the_window_cannot_admit_before_its_deadline_is_refused_and_charged_nothing(make: Make) -> None:
    budget = make(requests_per_window=1, tokens_per_day=1000)
    await full(budget, 1, cost=10)  # in flight: the slot stays taken until it settles
    with pytest.raises(BudgetTimeoutError):
        await asyncio.wait_for(budget.acquire(10, timeout=0.05), GUARD)
    stats = budget.stats()
    assert (stats.requests_admitted, stats.tokens_charged, stats.queue_length) == (1, 10, 0)


async def test_a_call_the_daily_budget_cannot_admit_before_its_deadline_says_when_to_come_back(make: Make) -> None:
    budget = make(requests_per_window=100, tokens_per_day=100)
    await full(budget, 1, cost=60)
    with pytest.raises(BudgetExhaustedError) as caught:
        await asyncio.wait_for(budget.acquire(50, timeout=1), GUARD)
    assert caught.value.retry_after == pytest.approx(10 * 864, rel=0.01)  # 10 tokens at 100 per day
    assert (await asyncio.wait_for(budget.acquire(40, timeout=0), GUARD)) is not None  # what fits is admitted
    assert budget.stats().tokens_charged == 100


async def test_a_deadline_passing_in_the_queue_fails_that_waiter_only(make: Make) -> None:
    budget = make(requests_per_window=1)
    [blocker] = await full(budget, 1)
    impatient = asyncio.create_task(budget.acquire(0, timeout=0.05))
    patient = asyncio.create_task(budget.acquire(0))
    with pytest.raises(BudgetTimeoutError):
        await asyncio.wait_for(impatient, GUARD)
    blocker.settle()
    (await asyncio.wait_for(patient, GUARD)).settle()
    assert budget.stats().requests_admitted == 2


# -- cancellation ---------------------------------------------------------------------------------------------


async def test_a_cancelled_waiter_takes_nothing_and_the_next_one_goes(make: Make) -> None:
    budget = make(requests_per_window=1, tokens_per_day=1000)
    [blocker] = await full(budget, 1, cost=10)
    order: list[str] = []
    cancelled = await queued(budget, order, "cancelled", cost=10)
    kept = await queued(budget, order, "kept", cost=10)
    cancelled.cancel()
    blocker.settle()
    await asyncio.wait_for(kept, GUARD)
    assert cancelled.cancelled() and order == ["kept"]
    stats = budget.stats()
    assert (stats.requests_admitted, stats.tokens_charged, stats.queue_length) == (2, 20, 0)


# -- the server's word: hold and observe ---------------------------------------------------------------------


async def test_hold_admits_nothing_until_it_ends(make: Make) -> None:
    budget = make(requests_per_window=10)
    budget.hold(0.3)
    await written(budget)
    with pytest.raises(BudgetTimeoutError):
        await asyncio.wait_for(budget.acquire(0, timeout=0.05), GUARD)
    budget.hold(0)  # holds only lengthen: zero (or a negative number, or NaN) holds nothing
    budget.hold(float("nan"))
    await written(budget)
    with pytest.raises(BudgetTimeoutError):
        await asyncio.wait_for(budget.acquire(0, timeout=0.05), GUARD)
    (await asyncio.wait_for(budget.acquire(0), GUARD)).settle()  # admitted once the hold ends


async def test_observe_holds_on_a_spent_window_and_lowers_the_daily_tokens(make: Make) -> None:
    budget = make(requests_per_window=10, tokens_per_day=1000)
    budget.observe({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "0.3", "x-daily-ratelimit-token-remaining": "5"})
    await written(budget)
    with pytest.raises(BudgetTimeoutError):
        await asyncio.wait_for(budget.acquire(0, timeout=0.05), GUARD)
    (await asyncio.wait_for(budget.acquire(5), GUARD)).settle()  # after the reset: the 5 tokens left
    with pytest.raises(BudgetExhaustedError):
        await asyncio.wait_for(budget.acquire(5, timeout=0), GUARD)


async def test_observe_ignores_a_remaining_count_above_zero_and_unusable_headers(make: Make) -> None:
    budget = make(requests_per_window=3, tokens_per_day=1000)
    budget.observe({"x-ratelimit-remaining": "1", "x-ratelimit-reset": "5"})  # a stale count: not acted on
    budget.observe({"x-ratelimit-remaining": "junk", "x-daily-ratelimit-token-remaining": "nan"})
    await written(budget)
    assert len(await full(budget, 3, cost=300)) == 3


# -- settle -----------------------------------------------------------------------------------------------------


async def test_a_settled_slot_frees_for_the_next_waiter_and_settle_syncs_the_headers(make: Make) -> None:
    budget = make(requests_per_window=2, tokens_per_day=1000)
    first, second = await full(budget, 2)
    waiter = asyncio.create_task(budget.acquire(0))
    await asyncio.sleep(2 * WINDOW)
    assert not waiter.done()  # both slots in flight: time alone frees neither
    first.settle({"x-daily-ratelimit-token-remaining": "7"})
    first.settle()  # settling twice changes nothing
    (await asyncio.wait_for(waiter, GUARD)).settle()
    second.settle()
    await written(budget)
    with pytest.raises(BudgetExhaustedError):  # the answer's headers were observed
        await asyncio.wait_for(budget.acquire(8, timeout=0), GUARD)


async def test_a_refunded_admission_frees_its_slot(make: Make) -> None:
    budget = make(requests_per_window=1)
    [admission] = await full(budget, 1)
    waiter = asyncio.create_task(budget.acquire(0))
    admission.refund()  # nothing was sent: back at once where the budget can give back, else settled
    (await asyncio.wait_for(waiter, GUARD)).settle()


# -- priority lanes ---------------------------------------------------------------------------------------------


async def test_interactive_goes_first_but_bulk_keeps_its_share(make: Make) -> None:
    budget = make(requests_per_window=1, bulk_share=0.2)
    [blocker] = await full(budget, 1)
    order: list[str] = []
    tasks = [await queued(budget, order, f"bulk{i}", priority=Priority.BULK) for i in range(4)]
    tasks += [await queued(budget, order, f"live{i}") for i in range(12)]
    blocker.settle()
    await asyncio.wait_for(asyncio.gather(*tasks), 4 * GUARD)
    assert order[:5] == ["live0", "live1", "live2", "live3", "bulk0"]
    assert order.index("bulk1") == 9  # every fifth admission while both lanes wait
    assert sorted(order) == sorted({*order}) and len(order) == 16


# -- search=True: the search window's slot inside the same admission -------------------------------------------


async def test_a_search_call_takes_a_search_slot_that_its_admission_settles(make: Make) -> None:
    budget = make(requests_per_window=10, search_requests_per_window=1)
    searching = await asyncio.wait_for(budget.acquire(1, search=True), GUARD)
    with pytest.raises(BudgetTimeoutError):  # the one search slot is in flight
        await asyncio.wait_for(budget.acquire(1, search=True, timeout=0.05), GUARD)
    (await asyncio.wait_for(budget.acquire(1, timeout=0), GUARD)).settle()  # other calls are not held up
    waiter = asyncio.create_task(budget.acquire(1, search=True))
    searching.settle()
    (await asyncio.wait_for(waiter, GUARD)).settle()
    assert budget.stats().requests_admitted == 3  # the refused search call was charged nothing


async def test_a_search_call_refused_by_the_main_window_frees_its_search_slot(make: Make) -> None:
    budget = make(requests_per_window=1, search_requests_per_window=1)
    [blocker] = await full(budget, 1)
    for _ in range(2):  # the second would wait on the first's search slot if that were left taken
        with pytest.raises(BudgetTimeoutError):
            await asyncio.wait_for(budget.acquire(1, search=True, timeout=0.05), GUARD)
    blocker.settle()
    (await asyncio.wait_for(budget.acquire(1, search=True), GUARD)).settle()


async def test_a_cancelled_search_call_frees_its_search_slot(make: Make) -> None:
    budget = make(requests_per_window=1, search_requests_per_window=1)
    [blocker] = await full(budget, 1)
    cancelled = asyncio.create_task(budget.acquire(1, search=True))
    await asyncio.sleep(WINDOW / 2)  # it holds its search slot and waits for the main window
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    blocker.settle()
    (await asyncio.wait_for(budget.acquire(1, search=True), GUARD)).settle()


async def test_refunding_a_search_admission_refunds_both_slots(make: Make) -> None:
    budget = make(requests_per_window=1, search_requests_per_window=1)
    searching = await asyncio.wait_for(budget.acquire(1, search=True), GUARD)
    waiter = asyncio.create_task(budget.acquire(1, search=True))
    searching.refund()
    (await asyncio.wait_for(waiter, GUARD)).settle()
