"""The read cache: cached ``load`` against pgbench's select on a bare table, and staleness.

    python -m benchmarks.cache [--duration 7] [--hot 1000] [--concurrency 16] [--dsn DSN]

In one run, on one server (a fresh embedded one without ``--dsn``):

1. pgbench's point select of a random key among ``--hot`` keys of a bare table (primary
   key only), at ``--concurrency`` clients: the ceiling for reads from PostgreSQL;
2. ``store.load`` of a random key among the same ``--hot`` keys at ``--concurrency``
   callers, with ``cache_size=100_000`` (change feed on, the default), after one warm-up
   pass; and the same without the cache, for reference;
3. staleness: another store (another connection pool and listener) saves a hot key
   and, from its acknowledgement, the cached store polls ``load`` until it returns that
   version; 300 rounds, p50/p99/max.

Reports ops/s, the ratio to pgbench (target: at least 2x), the hit ratio, the bytes
the cache counts, and this process's RSS growth while filling it. A hit never waits
for I/O, so the callers take turns rather than overlap: ``--concurrency`` only shapes
the misses. A script, never a timed test; quote the figures from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from benchmarks import harness, pgbench
from benchmarks.harness import RECORD_TYPE, closed_loop
from benchmarks.server import server_dsn
from benchmarks.suite import Bench
from pgactors import Store
from pgactors.cache import CacheStats

TARGET_RATIO = 2.0
CACHE_SIZE = 100_000


def rss_mib() -> float:
    """This process's resident set now, in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def load_rate(store: Store, hot: int, concurrency: int, duration: float) -> float:
    """Loads per second of random hot keys (a warm-up pass first)."""
    for n in range(1, hot + 1):
        await store.load(RECORD_TYPE, f"k{n}")

    async def op(rng: random.Random) -> int:
        if await store.load(RECORD_TYPE, f"k{rng.randint(1, hot)}") is None:
            raise RuntimeError("a hot key was not preloaded")
        return 0

    sample = await closed_loop(op, concurrency=concurrency, duration=duration)
    return sample.latencies.count / (sample.elapsed_ns / 1e9)


async def staleness(reader: Store, writer: Store, hot: int, rounds: int) -> list[float]:
    """Seconds from a save's acknowledgement until the reader's (cached) load returns it."""
    lags = []
    rng = random.Random(7)
    for _ in range(rounds):
        key = f"k{rng.randint(1, hot)}"
        await reader.load(RECORD_TYPE, key)  # cached before the write
        saved = await writer.save(RECORD_TYPE, key, {"round": rng.random()})
        acknowledged = time.perf_counter()
        deadline = acknowledged + 10
        while True:
            record = await reader.load(RECORD_TYPE, key)
            if record is not None and record.version >= saved.version:
                break
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{key} v{saved.version} not seen within 10 s")
            await asyncio.sleep(0.0002)
        lags.append(time.perf_counter() - acknowledged)
    return lags


async def main(args: argparse.Namespace) -> int:
    with server_dsn(args.dsn, "pgactors-cache-bench-") as dsn:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            async with await Store.connect(dsn, schema=schema) as setup:
                await setup.init_schema()
            bench = Bench(
                dsn, schema, args.hot, args.duration, 1.0, args.concurrency,
                Path(tempfile.mkdtemp(prefix="pgactors-cache-bench-")),
                harness.make_payload(), admin,
            )  # fmt: skip
            await bench.preload()
            print("pgbench bare select ...", file=sys.stderr)
            bare = await pgbench.measure(
                dsn,
                pgbench.bare_select_script(schema, args.hot),
                kind="load",
                label="pgbench select, bare table",
                name="pgbench-bare-load",
                concurrency=args.concurrency,
                duration=args.duration,
                workdir=bench.workdir,
            )
            pool = {"pool_min_size": args.concurrency, "pool_max_size": args.concurrency}
            print("pgactors load, no cache ...", file=sys.stderr)
            async with await Store.connect(dsn, schema=schema, **pool) as plain:
                uncached = await load_rate(plain, args.hot, args.concurrency, args.duration)
            print("pgactors load, cached ...", file=sys.stderr)
            before = rss_mib()
            async with (
                await Store.connect(dsn, schema=schema, cache_size=CACHE_SIZE, **pool) as cached,
                await Store.connect(dsn, schema=schema) as writer,
            ):
                await cached.load(RECORD_TYPE, "k1")
                for _ in range(1000):  # the feed connects in the background
                    if cache_stats(cached).serving:
                        break
                    await asyncio.sleep(0.01)
                rate = await load_rate(cached, args.hot, args.concurrency, args.duration)
                stats = cache_stats(cached)
                grown = rss_mib() - before
                print("staleness ...", file=sys.stderr)
                lags = await staleness(cached, writer, args.hot, args.rounds)
    lags_ms = sorted(lag * 1000 for lag in lags)
    p99 = lags_ms[min(len(lags_ms) - 1, int(len(lags_ms) * 0.99))]
    ratio = rate / bare.ops_per_sec
    print(
        f"\n{args.hot} hot keys of ~1 KB JSON, {args.concurrency} callers, {args.duration} s each\n"
    )
    print("| what | loads/s | vs pgbench bare select |")
    print("|---|---:|---:|")
    print(f"| pgbench select, bare table | {bare.ops_per_sec:,.0f} | 1.00x |")
    print(f"| `store.load`, no cache | {uncached:,.0f} | {uncached / bare.ops_per_sec:.2f}x |")
    print(f"| `store.load`, `cache_size={CACHE_SIZE:_}` | {rate:,.0f} | {ratio:.2f}x |")
    print(
        f"\nhit ratio {stats.hit_ratio:.4f} ({stats.hits:,} hits, {stats.misses:,} misses); "
        f"cache holds {stats.entries:,} records, {stats.bytes / 2**20:.1f} MiB counted; "
        f"process RSS grew {grown:.1f} MiB while filling and using it"
    )
    print(
        f"staleness after another store's acknowledged save ({len(lags_ms)} rounds): "
        f"p50 {statistics.median(lags_ms):.2f} ms, p99 {p99:.2f} ms, max {lags_ms[-1]:.2f} ms"
    )
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(f"\n{verdict}: cached load {ratio:.2f}x pgbench's bare select (target {TARGET_RATIO}x)")
    return 0 if verdict == "PASS" else 1


def cache_stats(store: Store) -> CacheStats:
    """The store's cache counters (it must have a cache)."""
    stats = store.metrics().cache
    if stats is None:
        raise RuntimeError("the store has no read cache")
    return stats


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cache", description=__doc__)
    parser.add_argument("--dsn", default=None, help="server (default: a new embedded one)")
    parser.add_argument("--duration", type=int, default=7, help="seconds per measurement")
    parser.add_argument("--hot", type=int, default=1000, help="hot keys")
    parser.add_argument("--concurrency", type=int, default=16, help="callers and clients")
    parser.add_argument("--rounds", type=int, default=300, help="staleness rounds")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
