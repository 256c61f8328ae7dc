"""Change-feed benchmarks: commit-to-delivery latency, and what the feed costs writers.

    python -m benchmarks.feed [--dsn DSN] [--rate 1000] [--duration 10]

1. Latency: one store writes at a steady ``--rate`` (saves per second); a second store
   (its own pool and listener connection) subscribes. For every change, the time from
   the writer's acknowledgement (the save returned, so it committed) to its delivery
   to the subscriber. Reports p50/p99/max and whether every write arrived.
2. Cost: save throughput at concurrency 16 with the feed on (log, numbering and
   notifications, a subscriber attached) against the same run with ``changes=False``.

A script, never a timed test; quote the ratios from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from pgactors import Store

from .harness import make_payload
from .server import server_dsn


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


async def latency(dsn: str, schema: str, rate: int, duration: float) -> dict[str, Any]:
    """Commit-to-delivery latency at a steady write rate."""
    payload = make_payload()
    acked: dict[tuple[str, int], float] = {}
    delivered: dict[tuple[str, int], float] = {}
    total = int(rate * duration)
    async with (
        await Store.connect(dsn, schema=schema) as writer,
        await Store.connect(dsn, schema=schema) as reader,
        reader.changes("feedbench") as stream,
    ):

        async def consume() -> None:
            async for change in stream:
                delivered[(change.id, change.version)] = time.perf_counter()
                if len(delivered) >= total:
                    return

        consumer = asyncio.create_task(consume())
        start = time.perf_counter()
        pending: set[asyncio.Task[None]] = set()

        async def write(n: int) -> None:
            record = await writer.save("feedbench", f"k{n % 1000}", payload)
            acked[(record.id, record.version)] = time.perf_counter()

        for n in range(total):
            # Open loop: writes are issued on schedule, whatever the latency.
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(write(n))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
        achieved = total / (time.perf_counter() - start)
        try:
            await asyncio.wait_for(consumer, 30)
        except TimeoutError:
            consumer.cancel()
    latencies = sorted((delivered[key] - acked[key]) * 1000 for key in acked if key in delivered)
    return {
        "rate": rate,
        "achieved_rate": round(achieved, 1),
        "writes": total,
        "delivered": len(delivered),
        "missing": len(set(acked) - set(delivered)),
        "p50_ms": round(_percentile(latencies, 0.50), 3),
        "p99_ms": round(_percentile(latencies, 0.99), 3),
        "max_ms": round(latencies[-1], 3) if latencies else float("nan"),
    }


SUBSCRIBER = """
import asyncio, sys
from pgactors import Store

async def main(dsn, schema):
    async with await Store.connect(dsn, schema=schema) as store:
        async with store.changes() as stream:
            print("ready", flush=True)
            async for _ in stream:
                pass

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def save_throughput(
    dsn: str, schema: str, *, changes: bool, duration: float, concurrency: int = 16
) -> float:
    """Saves per second at ``concurrency``; with the feed on, another process subscribes."""
    payload = make_payload()
    subscriber = None
    if changes:
        # A subscriber in its own process, like another instance of the application.
        subscriber = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SUBSCRIBER, dsn, schema, stdout=asyncio.subprocess.PIPE
        )
        assert subscriber.stdout is not None
        await subscriber.stdout.readline()
    try:
        async with await Store.connect(
            dsn, schema=schema, changes=changes, pool_max_size=concurrency
        ) as store:
            count = 0
            stop = time.perf_counter() + duration

            async def worker(seed: int) -> None:
                nonlocal count
                rng = random.Random(seed)
                while time.perf_counter() < stop:
                    await store.save("costbench", f"k{rng.randrange(10_000)}", payload)
                    count += 1

            started = time.perf_counter()
            await asyncio.gather(*(worker(s) for s in range(concurrency)))
            return count / (time.perf_counter() - started)
    finally:
        if subscriber is not None:
            subscriber.terminate()
            await subscriber.wait()


async def run(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    schema = f"feedbench_{uuid.uuid4().hex[:8]}"
    async with await Store.connect(dsn, schema=schema) as setup:
        await setup.init_schema()
        await setup.save_many("costbench", {f"k{n}": make_payload() for n in range(10_000)})
    result: dict[str, Any] = {"latency": await latency(dsn, schema, args.rate, args.duration)}
    off = await save_throughput(dsn, schema, changes=False, duration=args.duration)
    on = await save_throughput(dsn, schema, changes=True, duration=args.duration)
    off_again = await save_throughput(dsn, schema, changes=False, duration=args.duration)
    result["cost"] = {
        "save_ops_feed_off": round(off, 1),
        "save_ops_feed_on": round(on, 1),
        "save_ops_feed_off_again": round(off_again, 1),
        "ratio_on_vs_off": round(on / ((off + off_again) / 2), 3),
    }
    async with await Store.connect(dsn, schema=schema) as cleanup:
        await cleanup.drop_schema()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.feed", description=__doc__)
    parser.add_argument("--dsn", help="PostgreSQL to use (default: a fresh embedded server)")
    parser.add_argument("--rate", type=int, default=1000, help="writes per second (default 1000)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per part (default 10)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with server_dsn(args.dsn, "pgactors-feedbench-") as dsn:
        result = asyncio.run(run(dsn, args))
    lat, cost = result["latency"], result["cost"]
    print("| change feed | value |\n|---|---:|")
    print(f"| write rate (target / achieved) | {lat['rate']} / {lat['achieved_rate']} per s |")
    print(f"| changes delivered / missing | {lat['delivered']} / {lat['missing']} |")
    print(f"| commit-to-delivery p50 | {lat['p50_ms']} ms |")
    print(f"| commit-to-delivery p99 | {lat['p99_ms']} ms |")
    print(f"| commit-to-delivery max | {lat['max_ms']} ms |")
    print(f"| save ops/s at 16, feed off | {cost['save_ops_feed_off']:,.0f} |")
    print(f"| save ops/s at 16, feed on + subscriber | {cost['save_ops_feed_on']:,.0f} |")
    print(f"| save ops/s at 16, feed off (again) | {cost['save_ops_feed_off_again']:,.0f} |")
    print(f"| feed on / off | {cost['ratio_on_vs_off']:.2f}x |")
    print(f"PASS p99 < 10 ms: {lat['p99_ms'] < 10}", file=sys.stderr)
    print(f"PASS feed on >= 0.8x off: {cost['ratio_on_vs_off'] >= 0.8}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
