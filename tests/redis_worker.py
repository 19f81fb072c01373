"""One worker process of test_redis_budget.py's multi-process tests: ``python redis_worker.py JSON``.

Mode ``fake`` sends add-channel requests to a FakePipedrive through a shared RedisBudget until ``duration`` ends;
mode ``daily`` spends a shared daily budget of 1000 tokens, 7 at a time. Both start at the wall-clock ``start``,
so the workers begin together, and print a JSON summary (``requests`` or ``tokens``) on stdout.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from pipedrive_channels import ChannelsClient
from pipedrive_channels.budget import Admission, RedisBudget
from pipedrive_channels.errors import BudgetExhaustedError, BudgetTimeoutError
from pipedrive_channels.retry import RetryPolicy


async def work(args: dict[str, Any]) -> dict[str, Any]:
    """Run one worker as ``args`` says; return its summary."""
    # As the tests' clients: fail over within a second rather than redis-py's default ~3 s of retries.
    redis = Redis(host="127.0.0.1", port=args["port"], socket_connect_timeout=0.5, socket_timeout=2.0,
                  retry=Retry(NoBackoff(), 1))
    await asyncio.sleep(max(0.0, args["start"] - time.time()))
    if args["mode"] == "daily":
        budget = RedisBudget(redis, args["key"], requests_per_window=100_000, tokens_per_day=1000,
                             search_requests_per_window=None)
        tokens = 0

        async def spend() -> None:
            nonlocal tokens
            while True:
                try:
                    reservation: Admission = await budget.acquire(7, timeout=0.5)
                except BudgetExhaustedError:
                    return
                tokens += 7
                reservation.settle()

        await asyncio.gather(*(spend() for _ in range(args["tasks"])))
        await budget.aclose()
        await redis.aclose()
        return {"tokens": tokens}

    budget = RedisBudget(redis, args["key"], requests_per_window=80, window=2.0, search_requests_per_window=None)
    end = args["start"] + args["duration"]
    sent = 0
    async with ChannelsClient(args["token"], base_url=args["base_url"], budget=budget,
                              retry=RetryPolicy.none()) as client:

        async def send(task: int) -> None:
            nonlocal sent
            n = 0
            while (left := end - time.time()) > 0:
                try:
                    await client.add_channel(name="c", provider_channel_id=f"{args['worker']}-{task}-{n}",
                                             timeout=left)
                except BudgetTimeoutError:
                    return
                sent += 1
                n += 1

        await asyncio.gather(*(send(i) for i in range(args["tasks"])))
    await budget.aclose()
    await redis.aclose()
    return {"requests": sent}


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore", ".*is deprecated by Pipedrive", DeprecationWarning)
    print(json.dumps(asyncio.run(work(json.loads(sys.argv[1])))))
