"""The rate budget measured: its acquire overhead, its accuracy at the server, and its fairness.

1. Overhead: one acquire when tokens are available, per call, next to ``aiolimiter.AsyncLimiter.acquire(10)``
   in the same run (the SDK's acquire also creates the reservation and settles it, as every call does).
2. Accuracy: 64 tasks hammer ``receive_message`` through a budget of 80 requests / 2 s for ``--seconds``
   against the fake Pipedrive; printed are the most requests the server saw in any rolling 2-s window (must be
   <= 80), any 429s, and the utilisation (requests the server saw / 40 per second).
3. Fairness: 10-cost and 6-cost callers share a cost-limited budget; printed is the longest wait of a 10-cost
   caller relative to the mean wait (FIFO within a lane: the big caller is never starved).

    python benchmarks/budget_bench.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from datetime import datetime, timezone

from aiolimiter import AsyncLimiter

from pipedrive_channels import ChannelsClient, Message, MessageStatus, RateBudget, TokenBucket
from pipedrive_channels.testing import FakePipedrive, busiest_window


async def overhead(n: int = 200_000) -> None:
    budget = RateBudget(requests_per_window=10**9, window=2.0, tokens_per_day=10**15)
    bucket = TokenBucket(10**15, 10**15)
    limiter = AsyncLimiter(max_rate=10**15, time_period=1)

    async def ours() -> float:
        start = time.perf_counter()
        for _ in range(n):
            (await budget.acquire(10)).settle()
        return (time.perf_counter() - start) / n * 1e6

    async def primitive() -> float:
        start = time.perf_counter()
        for _ in range(n):
            await bucket.acquire(10)
        return (time.perf_counter() - start) / n * 1e6

    async def theirs() -> float:
        start = time.perf_counter()
        for _ in range(n):
            await limiter.acquire(10)
        return (time.perf_counter() - start) / n * 1e6

    ours_us, primitive_us, theirs_us = [], [], []
    for _ in range(5):  # alternate rounds, keep the best: noise only ever adds time
        ours_us.append(await ours())
        primitive_us.append(await primitive())
        theirs_us.append(await theirs())
    best = min(theirs_us)
    print(f"1. acquire overhead, best of 5 x {n:,}: aiolimiter acquire(10) {best:.2f} us; "
          f"TokenBucket.acquire(10) {min(primitive_us):.2f} us ({min(primitive_us) / best:.2f} x); "
          f"RateBudget.acquire(10) + settle (window, daily bucket, reservation) {min(ours_us):.2f} us "
          f"({min(ours_us) / best:.2f} x)")


async def accuracy(seconds: float, tasks: int = 64) -> None:
    async with FakePipedrive(rate_limit=80, enforce_rate_limit=True) as fake:
        fake.add_access_token("token")
        budget = RateBudget(requests_per_window=80, window=2.0)
        async with ChannelsClient("token", base_url=fake.base_url, budget=budget) as client:
            await client.add_channel(name="bench", provider_channel_id="ch")
            fake.requests.clear()
            stop = time.monotonic() + seconds
            created = datetime(2026, 1, 1, tzinfo=timezone.utc)

            async def hammer(worker: int) -> None:
                index = 0
                while time.monotonic() < stop:
                    index += 1
                    message = Message(id=f"{worker}-{index}", channel_id="ch", sender_id="s",
                                      conversation_id=f"c{worker}", message="x", status=MessageStatus.SENT,
                                      created_at=created)
                    await client.receive_message(message, timeout=max(0.0, stop - time.monotonic()))

            results = await asyncio.gather(*(hammer(w) for w in range(tasks)), return_exceptions=True)
        arrivals = [r.at for r in fake.requests]
        refused = sum(r.status == 429 for r in fake.requests)
    errors = {type(r).__name__ for r in results if isinstance(r, BaseException)}
    utilisation = len(arrivals) / (seconds * 40)
    # Steady state: after the first full window, how close the rate comes to 40/s. A slot frees a window after
    # its answer (that is what makes the window exact at the server), so each cycle costs the answer's latency.
    arrivals.sort()
    sustained = (len(arrivals) - 80) / (arrivals[-1] - arrivals[0]) / 40
    print(f"2. accuracy, {tasks} tasks for {seconds:g} s at 80 requests / 2 s: {len(arrivals)} requests, busiest 2-s "
          f"window {busiest_window(arrivals)} (limit 80), 429s {refused}; utilisation {utilisation:.1%} of 40/s over "
          f"the run, {sustained:.1%} sustained after the first window; callers stopped by their deadline with "
          f"{', '.join(sorted(errors)) or 'nothing'}")


async def fairness(seconds: float = 3.0) -> None:
    # 400 tokens per second, at most 100 at once; the window is no constraint here.
    budget = RateBudget(requests_per_window=10**9, tokens_per_day=400 * 86_400, daily_burst=100)
    waits: dict[int, list[float]] = {10: [], 6: []}
    stop = time.monotonic() + seconds

    async def caller(cost: int) -> None:
        while time.monotonic() < stop:
            start = time.monotonic()
            (await budget.acquire(cost)).settle()
            waits[cost].append(time.monotonic() - start)

    await asyncio.gather(*(caller(10) for _ in range(16)), *(caller(6) for _ in range(16)))
    every = waits[10] + waits[6]
    mean = statistics.fmean(every)
    print(f"3. fairness, 16 x 10-cost and 16 x 6-cost callers at 400 tokens/s: mean wait {mean * 1e3:.1f} ms; "
          f"longest 10-cost wait {max(waits[10]) * 1e3:.1f} ms = {max(waits[10]) / mean:.2f} x the mean "
          f"(6-cost: {max(waits[6]) / mean:.2f} x); calls {len(waits[10])} x 10, {len(waits[6])} x 6")


async def main(seconds: float) -> None:
    await overhead()
    await accuracy(seconds)
    await fairness()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    arguments: Sequence[str] | None = None
    asyncio.run(main(parser.parse_args(arguments).seconds))
