"""The Redis budget measured: admission throughput through one Redis, overhead next to the local budget, accuracy.

1. Throughput: 1, 4 and 16 processes each admit through one key, one caller each, for ``--seconds``; printed are
   the admission round trips per second in all (one admission is one script call).
2. Overhead: one ``acquire`` + ``settle`` per call, the local ``RateBudget`` next to ``RedisBudget`` (the settle is
   a background write; its time is counted by waiting for it at the end).
3. Accuracy: 4 processes x 32 tasks drive ``FakePipedrive(rate_limit=80, enforce_rate_limit=True)`` through one
   key for 8 s (the test's worker); printed are the most requests the server saw in any rolling 2-s window
   (must be <= 80), any 429s and the utilisation.

Starts its own redis-server on a free port (it must be installed).

    python benchmarks/redis_budget_bench.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import uuid

from redis.asyncio import Redis

from pipedrive_channels import RateBudget
from pipedrive_channels.budget import RedisBudget
from pipedrive_channels.testing import FakePipedrive

WORKER = pathlib.Path(__file__).resolve().parent.parent / "tests" / "redis_worker.py"


def start_redis() -> tuple[subprocess.Popen[bytes], int]:
    executable = shutil.which("redis-server")
    if executable is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    args = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    for _ in range(500):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return process, port
        except OSError:
            time.sleep(0.02)
    sys.exit("redis-server did not start")


async def admit_loop(port: int, key: str, start: float, seconds: float) -> int:
    redis = Redis(port=port)
    budget = RedisBudget(redis, key, requests_per_window=10**9, window=0.001, max_in_flight=0.001,
                         search_requests_per_window=None)
    await asyncio.sleep(max(0.0, start - time.time()))
    end, count = start + seconds, 0
    while time.time() < end:
        await budget.acquire(1)  # never settled: the slot frees 2 ms later on its own
        count += 1
    await redis.aclose()
    return count


def throughput(port: int, seconds: float) -> None:
    for processes in (1, 4, 16):
        key, start = f"bench:{uuid.uuid4().hex}", time.time() + 1.5 + processes * 0.05
        code = (
            "import asyncio, sys; sys.path.insert(0, sys.argv[1]); import redis_budget_bench as b; "
            "print(asyncio.run(b.admit_loop(int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5]))))"
        )
        here = str(pathlib.Path(__file__).resolve().parent)
        children = [
            subprocess.Popen([sys.executable, "-c", code, here, str(port), key, str(start), str(seconds)],
                             stdout=subprocess.PIPE)
            for _ in range(processes)
        ]
        total = sum(int(child.communicate()[0]) for child in children)
        print(f"  {processes:>2} process(es): {total / seconds:>9,.0f} admissions/s through one Redis")


async def overhead(port: int, n: int = 20_000) -> None:
    redis = Redis(port=port)
    local = RateBudget(requests_per_window=10**9, tokens_per_day=10**15)
    shared = RedisBudget(redis, f"bench:{uuid.uuid4().hex}", requests_per_window=10**9, tokens_per_day=10**15,
                         window=0.01, search_requests_per_window=None)

    async def per_call(budget: RateBudget) -> float:
        start = time.perf_counter()
        for _ in range(n):
            (await budget.acquire(10)).settle()
        if isinstance(budget, RedisBudget):
            await budget.aclose()
        return (time.perf_counter() - start) / n * 1e6

    ours, theirs = await per_call(local), await per_call(shared)
    print(f"  RateBudget (local) acquire+settle: {ours:8.1f} us/call")
    print(f"  RedisBudget        acquire+settle: {theirs:8.1f} us/call  (+{theirs - ours:.1f} us)")
    await redis.aclose()


async def accuracy(port: int) -> None:
    async with FakePipedrive(rate_limit=80, enforce_rate_limit=True) as fake:
        fake.add_access_token("shared-token")
        start, duration = time.time() + 1.5, 8.0
        args = {"mode": "fake", "port": port, "key": f"bench:{uuid.uuid4().hex}", "base_url": fake.base_url,
                "token": "shared-token", "start": start, "duration": duration, "tasks": 32}

        def run() -> None:
            children = [
                subprocess.Popen([sys.executable, str(WORKER), json.dumps({**args, "worker": i})],
                                 stdout=subprocess.PIPE)
                for i in range(4)
            ]
            for child in children:
                child.communicate()

        await asyncio.to_thread(run)
    times = sorted(r.at for r in fake.requests)
    best, lo = 0, 0
    for hi, at in enumerate(times):
        while times[lo] <= at - 2.0:
            lo += 1
        best = max(best, hi - lo + 1)
    in_run = sum(1 for at in times if at < times[0] + duration)
    rejected = sum(1 for r in fake.requests if r.status == 429)
    print(f"  {len(times)} requests; max in any rolling 2 s window: {best} (limit 80); 429s: {rejected}; "
          f"utilisation over {duration:g} s: {in_run / (80 * duration / 2):.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    options = parser.parse_args()
    process, port = start_redis()
    try:
        print("1. admission throughput")
        throughput(port, options.seconds)
        print("2. per-call overhead")
        asyncio.run(overhead(port))
        print("3. accuracy at the fake server (4 processes x 32 tasks, 80 requests / 2 s)")
        asyncio.run(accuracy(port))
    finally:
        process.terminate()
        process.wait()


if __name__ == "__main__":
    main()
