"""What the SDK costs per call over raw aiohttp, measured in one run against the same fake server.

The fake Pipedrive runs in its own process (as a real server would be elsewhere), so its CPU is charged to
neither side. For each concurrency, N ``receive_message`` calls go through ``ChannelsClient`` and N posts of
the same JSON through one bare ``aiohttp.ClientSession``, alternating, best of ``--rounds``. The SDK's budget
is ``RateBudget.unlimited()``: this measures the SDK's own cost, not Pipedrive's limits. Printed: calls/s,
client CPU per call (process time, the figure that the 2-core machine makes honest), and SDK/raw ratios.

    python benchmarks/overhead_bench.py [--n 20000] [--concurrency 1 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone

import aiohttp

from pipedrive_channels import ChannelsClient, Message, MessageStatus, RateBudget
from pipedrive_channels.models import converter

TOKEN = "bench-access-token"
CHANNEL = "bench-channel"


def build_messages(n: int) -> list[Message]:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    # 1,000 distinct ids: the server keeps updating the same messages, so its memory stays flat.
    return [
        Message(id=f"m-{i % 1000}", channel_id=CHANNEL, sender_id="customer", conversation_id=f"c-{i % 50}",
                message=f"benchmark message {i}", status=MessageStatus.DELIVERED,
                created_at=start + timedelta(seconds=i))
        for i in range(n)
    ]


async def run_calls(n: int, concurrency: int, call: Callable[[int], Awaitable[None]]) -> tuple[float, float]:
    """Run ``call(i)`` for i in range(n) on ``concurrency`` workers; return (wall seconds, CPU seconds)."""
    next_index = iter(range(n))

    async def worker() -> None:
        for index in next_index:
            await call(index)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - wall, time.process_time() - cpu


async def raw_aiohttp(base_url: str, bodies: list[dict[str, object]], concurrency: int) -> tuple[float, float]:
    url = f"{base_url}/channels/messages/receive"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:

        async def call(index: int) -> None:
            async with session.post(url, json=bodies[index], headers=headers) as response:
                payload = await response.json()
                if response.status != 200 or not payload["success"]:
                    raise RuntimeError(f"raw call failed: {response.status}")

        return await run_calls(len(bodies), concurrency, call)


async def sdk(base_url: str, messages: list[Message], concurrency: int) -> tuple[float, float]:
    async with ChannelsClient(TOKEN, base_url=base_url, budget=RateBudget.unlimited()) as client:

        async def call(index: int) -> None:
            await client.receive_message(messages[index])

        return await run_calls(len(messages), concurrency, call)


def start_server() -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "pipedrive_channels.testing", "--access-token", TOKEN, "--channel", CHANNEL],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline().split()
    if line[:1] != ["READY"]:
        server.kill()
        raise SystemExit(f"the fake server did not start: {line}")
    return server, f"{line[1]}/v1"


async def measure(base_url: str, n: int, concurrencies: Sequence[int], rounds: int) -> None:
    messages = build_messages(n)
    bodies = [converter.unstructure(message) for message in messages]
    await sdk(base_url, messages[:500], 8)  # warm up both paths and the server
    await raw_aiohttp(base_url, bodies[:500], 8)
    print(f"N={n:,} receive_message calls per run, {rounds} alternating rounds; fake server in its own process")
    print("calls/s and client CPU per call of the best round; ratio = SDK/raw (best rounds, and median of rounds)")
    print(f"{'concurrency':>11} {'raw calls/s':>12} {'sdk calls/s':>12} {'ratio':>6} {'median':>6} "
          f"{'raw CPU us':>11} {'sdk CPU us':>11} {'CPU ratio':>9}")
    for concurrency in concurrencies:
        raw_runs, sdk_runs = [], []
        for _ in range(rounds):  # alternate, so drift on a shared machine hits both sides alike
            raw_runs.append(await raw_aiohttp(base_url, bodies, concurrency))
            sdk_runs.append(await sdk(base_url, messages, concurrency))
        (raw_wall, raw_cpu), (sdk_wall, sdk_cpu) = min(raw_runs), min(sdk_runs)
        median = statistics.median(raw[0] / ours[0] for raw, ours in zip(raw_runs, sdk_runs, strict=True))
        print(f"{concurrency:>11} {n / raw_wall:>12,.0f} {n / sdk_wall:>12,.0f} {raw_wall / sdk_wall:>6.2f} "
              f"{median:>6.2f} {raw_cpu / n * 1e6:>11.1f} {sdk_cpu / n * 1e6:>11.1f} {raw_cpu / sdk_cpu:>9.2f}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    server, base_url = start_server()
    try:
        asyncio.run(measure(base_url, args.n, args.concurrency, args.rounds))
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
