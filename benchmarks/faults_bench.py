"""Delivery under faults: N receive_message calls through 64 tasks while the fake Pipedrive misbehaves.

The fake answers 5% of requests 429 (Retry-After: 1), 5% 503 and drops 1% of connections after reading the
request. Printed: messages delivered (must be all), extra requests per message, and the total time next to
the same run without faults. The budget is unlimited, so only the faults and the retry policy set the pace;
each 429 holds the whole shared budget for its Retry-After, as a real 429 should.

    python benchmarks/faults_bench.py [--n 10000] [--tasks 64]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from datetime import datetime, timezone

from pipedrive_channels import ChannelsClient, Message, MessageStatus, RateBudget, RetryPolicy
from pipedrive_channels.testing import FakePipedrive


async def deliver(n: int, tasks: int, faults: bool) -> None:
    async with FakePipedrive() as fake:
        fake.add_access_token("token")
        policy = RetryPolicy(max_attempts=10, backoff_base=0.05, backoff_max=1.0)
        async with ChannelsClient("token", base_url=fake.base_url, budget=RateBudget.unlimited(),
                                  retry=policy) as client:
            await client.add_channel(name="bench", provider_channel_id="ch")
            if faults:
                fake.fail_randomly(0.05, 429, headers={"Retry-After": "1"})
                fake.fail_randomly(0.05 / 0.95, 503)  # 5% of all requests, given the 429s went first
                fake.fail_randomly(0.01 / 0.90, None)  # 1% of all: drop the connection
            created = datetime(2026, 1, 1, tzinfo=timezone.utc)
            pending = iter(range(n))
            failures: list[BaseException] = []

            async def worker() -> None:
                for index in pending:
                    message = Message(id=f"m-{index}", channel_id="ch", sender_id="s",
                                      conversation_id=f"c-{index % 100}", message="x", status=MessageStatus.SENT,
                                      created_at=created)
                    try:
                        await client.receive_message(message)
                    except Exception as error:  # counted, never silently dropped
                        failures.append(error)

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(tasks)))
            elapsed = time.perf_counter() - started
        delivered = sum(len(thread) for thread in fake.messages.values())
        sent = sum(1 for r in fake.requests if r.path.endswith("/receive"))
        statuses = [r.status for r in fake.requests if r.path.endswith("/receive")]
    label = "with faults   " if faults else "without faults"
    print(f"{label}: delivered {delivered:,}/{n:,}, failed {len(failures)}, requests {sent:,} "
          f"({(sent - n) / n:.3f} extra per message; 429 {statuses.count(429)}, 503 {statuses.count(503)}, "
          f"dropped {statuses.count(None)}), time {elapsed:.1f} s")


async def main(n: int, tasks: int) -> None:
    logging.getLogger("pipedrive_channels").setLevel(logging.ERROR)  # hundreds of retry warnings otherwise
    await deliver(n, tasks, faults=False)
    await deliver(n, tasks, faults=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=64)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.n, arguments.tasks))
