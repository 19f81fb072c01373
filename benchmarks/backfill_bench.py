"""The back-fill measured: its throughput next to a plain receive_message loop, and its memory on a big file.

1. Throughput: ``--n`` messages through ``backfill`` (with and without a checkpoint journal) and through a plain
   loop of ``receive_message`` calls at the same concurrency, in the same run, against the fake Pipedrive in its own
   process, with an unlimited budget. Target: back-fill / plain >= 0.9.
2. Memory: peak RSS of a process that back-fills ``--big`` messages read from a JSON Lines file, with a checkpoint,
   through a client whose HTTP is replaced by an instant answer (the engine, the reader and the journal are real;
   a million calls over loopback would take many minutes and measure the server, not the memory).

    python benchmarks/backfill_bench.py [--n 100000] [--concurrency 16] [--big 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from overhead_bench import TOKEN, _NoNetwork, build_messages, start_server

from pipedrive_channels import ChannelsClient, Message, RateBudget
from pipedrive_channels.backfill import backfill, read_jsonl
from pipedrive_channels.models import converter

CHANNEL = "bench-channel"


def distinct(n: int) -> Iterator[Message]:
    """n messages with distinct ids (build_messages repeats 1,000 ids: a journal would skip the repeats)."""
    for index, message in enumerate(build_messages(n)):
        yield converter.structure({**converter.unstructure(message), "id": f"m-{index}"}, Message)


async def plain(base_url: str, messages: list[Message], concurrency: int) -> float:
    async with ChannelsClient(TOKEN, base_url=base_url, budget=RateBudget.unlimited()) as client:
        pending = iter(messages)

        async def worker() -> None:
            for message in pending:
                await client.receive_message(message)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


async def through_backfill(base_url: str, messages: list[Message], concurrency: int, journal: Path | None) -> float:
    async with ChannelsClient(TOKEN, base_url=base_url, budget=RateBudget.unlimited()) as client:
        started = time.perf_counter()
        report = await backfill(client, messages, concurrency=concurrency, checkpoint=journal)
        elapsed = time.perf_counter() - started
    assert report.delivered == len(messages), report
    return elapsed


async def throughput(n: int, concurrency: int, rounds: int = 3) -> None:
    server, base_url = start_server()
    messages = list(distinct(n))
    try:
        await plain(base_url, messages[:500], concurrency)  # warm up
        best: dict[str, float] = {}
        with tempfile.TemporaryDirectory() as folder:
            for round_ in range(rounds):  # alternate, best of rounds: noise only adds time
                runs = {
                    "plain loop": plain(base_url, messages, concurrency),
                    "backfill": through_backfill(base_url, messages, concurrency, None),
                    "backfill + journal": through_backfill(
                        base_url, messages, concurrency, Path(folder) / f"journal-{round_}.sqlite"
                    ),
                }
                for name, run in runs.items():
                    best[name] = min(best.get(name, float("inf")), await run)
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(f"1. throughput, {n:,} messages at concurrency {concurrency}, best of {rounds}, fake server in its own "
          "process:")
    for name, seconds in best.items():
        print(f"   {name:<19} {n / seconds:>8,.0f} msg/s   ratio to the plain loop {best['plain loop'] / seconds:.2f}")


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: on Linux ru_maxrss keeps the forking parent's peak across
    exec, so a child started by a big parent would report the parent's memory."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_big_file(path: Path, n: int) -> None:
    body = converter.unstructure(build_messages(1)[0])
    with path.open("w", encoding="utf-8") as file:
        for index in range(n):
            file.write(json.dumps({**body, "id": f"m-{index}", "conversation_id": f"c-{index % 997}"}) + "\n")


async def big_run(path: Path, journal: Path) -> None:
    session: Any = _NoNetwork()
    async with ChannelsClient(TOKEN, base_url="http://127.0.0.1:9/v1", session=session,
                              budget=RateBudget.unlimited()) as client:
        started = time.perf_counter()
        report = await backfill(client, read_jsonl(path), concurrency=16, checkpoint=journal)
    peak_mb = peak_rss_mb()
    print(json.dumps({"delivered": report.delivered, "seconds": time.perf_counter() - started, "peak_mb": peak_mb}))


def memory(n: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path, journal = Path(folder) / "big.jsonl", Path(folder) / "journal.sqlite"
        write_big_file(path, n)
        size_mb = path.stat().st_size / 2**20
        command = [sys.executable, __file__, "--measure-big", str(path), str(journal)]
        result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        baseline = subprocess.run(
            [sys.executable, __file__, "--measure-baseline"], capture_output=True, text=True, check=True
        )
        print(f"2. memory: {result['delivered']:,} messages from a {size_mb:,.0f} MB file with a journal in "
              f"{result['seconds']:.0f} s: peak RSS {result['peak_mb']:.0f} MB (the interpreter with the package "
              f"imported: {float(baseline.stdout):.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--measure-big", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--measure-baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_baseline:  # the interpreter with the SDK imported, for comparison
        print(peak_rss_mb())
        return
    if args.measure_big:
        asyncio.run(big_run(Path(args.measure_big[0]), Path(args.measure_big[1])))
        return
    if not args.skip_throughput:
        asyncio.run(throughput(args.n, args.concurrency))
    memory(args.big)


if __name__ == "__main__":
    main()
