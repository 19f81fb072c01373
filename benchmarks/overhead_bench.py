"""What the SDK costs per call over raw aiohttp, measured in one run against the same fake server.

The fake Pipedrive runs in its own process (as a real server would be elsewhere), so its CPU is charged to
neither side. The SDK's budget is ``RateBudget.unlimited()``: this measures the SDK's own cost, not Pipedrive's
limits. Sides alternate round by round, and the best round and the median of the per-round ratios are printed,
with calls/s and client CPU per call (process time).

The headline case is the one a user runs: each of N calls builds its ``Message`` (validated, as every call does)
and sends it with the default ``RetryPolicy()`` at concurrency 64; raw aiohttp builds the same JSON as a dict per
call and posts it. Then, per ``--concurrency``, pre-built messages and bodies isolate the SDK's transport path, with
``RetryPolicy.none()`` beside the default (the happy path must not tell them apart).

    python benchmarks/overhead_bench.py [--n 20000] [--concurrency 1 64] [--rounds 5] [--instructions]

Wall-clock ratios on a shared 2-core machine swing by +-10-20% between runs. ``--instructions`` adds the figure
that moves far less: each side runs in its own process under valgrind's callgrind, twice (300 and 1,300 calls),
and the difference gives the instructions each call costs, for the headline case and each pre-built one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from pipedrive_channels import ChannelsClient, Message, MessageStatus, RateBudget, RetryPolicy
from pipedrive_channels.models import converter

TOKEN = "bench-access-token"
CHANNEL = "bench-channel"
PER_CALL_CONCURRENCY = 64


START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def build_message(i: int) -> Message:
    # 1,000 distinct ids: the server keeps updating the same messages, so its memory stays flat.
    return Message(id=f"m-{i % 1000}", channel_id=CHANNEL, sender_id="customer", conversation_id=f"c-{i % 50}",
                   message=f"benchmark message {i}", status=MessageStatus.DELIVERED,
                   created_at=START + timedelta(seconds=i))


def build_body(i: int) -> dict[str, object]:
    """What a raw aiohttp user builds per call: the same JSON as ``build_message(i)`` sends, datetime formatted too."""
    return {"id": f"m-{i % 1000}", "channel_id": CHANNEL, "sender_id": "customer", "conversation_id": f"c-{i % 50}",
            "message": f"benchmark message {i}", "status": "delivered",
            "created_at": (START + timedelta(seconds=i)).isoformat(" ", "minutes")[:16], "attachments": []}


def build_messages(n: int) -> list[Message]:
    return [build_message(i) for i in range(n)]


async def run_calls(n: int, concurrency: int, call: Callable[[int], Awaitable[None]]) -> tuple[float, float]:
    """Run ``call(i)`` for i in range(n) on ``concurrency`` workers; return (wall seconds, CPU seconds)."""
    next_index = iter(range(n))

    async def worker() -> None:
        for index in next_index:
            await call(index)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - wall, time.process_time() - cpu


async def raw_aiohttp(
    base_url: str, n: int, concurrency: int, body: Callable[[int], dict[str, object]]
) -> tuple[float, float]:
    """``n`` posts of ``body(i)`` through one bare aiohttp session."""
    url = f"{base_url}/channels/messages/receive"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:

        async def call(index: int) -> None:
            async with session.post(url, json=body(index), headers=headers) as response:
                payload = await response.json()
                if response.status != 200 or not payload["success"]:
                    raise RuntimeError(f"raw call failed: {response.status}")

        return await run_calls(n, concurrency, call)


async def sdk(
    base_url: str, n: int, concurrency: int, message: Callable[[int], Message], retry: RetryPolicy | None = None
) -> tuple[float, float]:
    """``n`` ``receive_message(message(i))`` calls through one ``ChannelsClient``."""
    budget = RateBudget.unlimited()
    async with ChannelsClient(TOKEN, base_url=base_url, budget=budget, retry=retry) as client:

        async def call(index: int) -> None:
            await client.receive_message(message(index))

        return await run_calls(n, concurrency, call)


class _Answer:
    """A canned HTTP answer: the server's echo of the body, with no network and no server."""

    status = 200
    headers = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"}))

    def __init__(self, body: bytes) -> None:
        self._raw = b'{"success":true,"data":' + body + b"}"
        self.content_length = len(self._raw)

    async def read(self) -> bytes:
        return self._raw

    def __await__(self) -> Generator[Any, None, _Answer]:  # the transport awaits the request, then enters it
        return self.__aenter__().__await__()

    async def __aenter__(self) -> _Answer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None


class _NoNetwork:
    """Stands in for aiohttp.ClientSession: answers every request at once with its body echoed."""

    def request(self, method: str, url: object, *, data: bytes, **kwargs: object) -> _Answer:
        return _Answer(data)

    async def close(self) -> None:
        return None


async def sdk_without_http(messages: list[Message]) -> None:
    """The SDK's own CPU per call, HTTP taken out: stable where the end-to-end ratio is noisy."""
    session: Any = _NoNetwork()
    async with ChannelsClient(TOKEN, base_url="http://127.0.0.1:9/v1", session=session,
                              budget=RateBudget.unlimited()) as client:
        best = float("inf")
        for _ in range(3):
            cpu = time.process_time()
            for message in messages:
                await client.receive_message(message)
            best = min(best, time.process_time() - cpu)
    bodies = [converter.unstructure(message) for message in messages]
    json_cpu = time.process_time()
    for body in bodies:  # what the raw path pays too: encode the body, decode the answer
        json.loads(b'{"success":true,"data":' + json.dumps(body).encode() + b"}")
    json_cpu = time.process_time() - json_cpu
    n = len(messages)
    print(f"SDK CPU per call without HTTP: {best / n * 1e6:.1f} us, of which {json_cpu / n * 1e6:.1f} us is JSON "
          f"encoding and decoding that raw aiohttp pays as well")


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


def _table(title: str, n: int, runs: dict[str, list[tuple[float, float]]]) -> None:
    """Print calls/s, CPU per call and SDK/raw ratios; ``runs`` maps a side to its rounds, raw first."""
    print(title)
    print(f"{'client':>21} {'calls/s':>9} {'ratio':>6} {'median':>6} {'CPU us':>7} {'CPU ratio':>9}")
    raw_name = next(iter(runs))
    raw_wall, raw_cpu = min(runs[raw_name])
    for name, results in runs.items():
        wall, cpu = min(results)
        median = statistics.median(raw[0] / ours[0] for raw, ours in zip(runs[raw_name], results, strict=True))
        print(f"{name:>21} {n / wall:>9,.0f} {raw_wall / wall:>6.2f} {median:>6.2f} {cpu / n * 1e6:>7.1f} "
              f"{raw_cpu / cpu:>9.2f}")


async def measure(base_url: str, n: int, concurrencies: Sequence[int], rounds: int) -> None:
    messages = build_messages(n)
    bodies = [converter.unstructure(message) for message in messages]
    await sdk(base_url, 500, 8, messages.__getitem__)  # warm up both paths and the server
    await raw_aiohttp(base_url, 500, 8, bodies.__getitem__)
    await sdk_without_http(messages)
    print(f"N={n:,} receive_message calls per run, {rounds} alternating rounds; fake server in its own process")
    print("calls/s and client CPU per call of the best round; ratio = SDK/raw (best rounds, and median of rounds)")
    # The case a user runs: each call builds its Message (validated) or, raw, its dict; the default RetryPolicy().
    runs: dict[str, list[tuple[float, float]]] = {"raw, dict per call": [], "sdk, Message per call": []}
    for _ in range(rounds):  # alternate, so drift on a shared machine hits every side alike
        runs["raw, dict per call"].append(await raw_aiohttp(base_url, n, PER_CALL_CONCURRENCY, build_body))
        runs["sdk, Message per call"].append(await sdk(base_url, n, PER_CALL_CONCURRENCY, build_message))
    _table(f"\nper call (the headline case), concurrency {PER_CALL_CONCURRENCY}:", n, runs)
    # Pre-built inputs isolate the SDK's transport path; 'no retry' must not differ from the default policy.
    for concurrency in concurrencies:
        runs = {"raw": [], "sdk": [], "sdk, no retry": []}
        for _ in range(rounds):
            runs["raw"].append(await raw_aiohttp(base_url, n, concurrency, bodies.__getitem__))
            runs["sdk"].append(await sdk(base_url, n, concurrency, messages.__getitem__))
            runs["sdk, no retry"].append(
                await sdk(base_url, n, concurrency, messages.__getitem__, RetryPolicy.none())
            )
        _table(f"\npre-built messages and bodies, concurrency {concurrency}:", n, runs)


SIDES = ("raw", "sdk", "raw-per-call", "sdk-per-call")


async def one_side(side: str, base_url: str, n: int, concurrency: int) -> None:
    """Run only one side (for callgrind): one of ``SIDES``."""
    if side == "raw-per-call":
        await raw_aiohttp(base_url, n, concurrency, build_body)
    elif side == "sdk-per-call":
        await sdk(base_url, n, concurrency, build_message)
    else:
        messages = build_messages(n)
        if side == "raw":
            bodies = [converter.unstructure(m) for m in messages]
            await raw_aiohttp(base_url, n, concurrency, bodies.__getitem__)
        else:
            await sdk(base_url, n, concurrency, messages.__getitem__)


def instructions(base_url: str, concurrencies: Sequence[int]) -> None:
    if shutil.which("valgrind") is None:
        print("instructions: valgrind is not installed (apt-get install valgrind); skipped")
        return

    def count(side: str, n: int, concurrency: int) -> int:
        command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
                   "--side", side, "--base-url", base_url, "--n", str(n), "--concurrency", str(concurrency)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stderr
        return int(re.search(r"Collected : (\d+)", output).group(1))  # type: ignore[union-attr]

    def per_call(side: str, concurrency: int) -> float:
        return (count(side, 1300, concurrency) - count(side, 300, concurrency)) / 1000

    print("\ninstructions per call under callgrind (marginal cost of 1,000 calls):")
    cases = [("per call", "-per-call", PER_CALL_CONCURRENCY)] + [("pre-built", "", c) for c in concurrencies]
    for name, suffix, concurrency in cases:
        raw, ours = per_call("raw" + suffix, concurrency), per_call("sdk" + suffix, concurrency)
        print(f"  {name:>9}, concurrency {concurrency:>3}: raw {raw:,.0f}, sdk {ours:,.0f}, ratio raw/sdk "
              f"{raw / ours:.3f}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--instructions", action="store_true", help="also count instructions with callgrind")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        asyncio.run(one_side(args.side, args.base_url, args.n, args.concurrency[0]))
        return
    server, base_url = start_server()
    try:
        asyncio.run(measure(base_url, args.n, args.concurrency, args.rounds))
        if args.instructions:
            instructions(base_url, args.concurrency)
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
