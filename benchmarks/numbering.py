"""What a change-feed listener costs the writers: saves with one connected, and without.

One store saves from 16 tasks (~1 KB records, 10,000 keys, the default configuration)
for the whole run. Segments alternate: in one, a connection named as pgactors'
listeners name theirs LISTENs on the feed's channel, so the store numbers its changes
promptly (every 2 ms under this stream); in the other, nobody listens and it numbers
every 50 ms. Each segment waits until the store has seen the change (the passes' spacing
in the log says so), then counts saves for ``--seconds``. In one process and one schema,
segments seconds apart meet the same machine, so the ratio of neighbours is what to read.

    python -m benchmarks.numbering [--segments 20] [--seconds 1] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg import sql

from benchmarks import harness
from benchmarks.server import server_dsn
from pgactors import Store
from pgactors.postgres.feed import listener_name

KEYS = 10_000
TASKS = 16
SETTLE_TIMEOUT = 10.0


@asynccontextmanager
async def listening(store: Store, dsn: str, on: bool) -> AsyncIterator[None]:
    """A listener's connection for the block (nothing if not ``on``)."""
    if not on:
        yield
        return
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, application_name=listener_name(store.config)
    ) as conn:
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(store.config.channel)))
        yield


async def passes_per_second(dsn: str, store: Store, seconds: float = 0.3) -> float:
    """Numbering passes per second just now: distinct stamps of the log's recent changes."""
    await asyncio.sleep(seconds)
    table = sql.Identifier(store.config.schema, "pgactors_changes")
    query = sql.SQL(
        "SELECT count(DISTINCT at) FROM {} WHERE at > now() - make_interval(secs => %s)"
    )
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query.format(table), [seconds])
        row = await cur.fetchone()
    return 0.0 if row is None else row[0] / seconds


async def run(dsn: str, segments: int, seconds: float) -> dict[str, list[float]]:
    schema = f"numbering_{uuid.uuid4().hex[:8]}"
    payload = harness.make_payload()
    results: dict[str, list[float]] = {"listener": [], "none": []}
    async with await Store.connect(dsn, schema=schema) as store:
        await store.init_schema()
        try:
            keys = [f"k{i}" for i in range(KEYS)]
            await store.save_many("Bench", dict.fromkeys(keys, payload))
            saved = 0
            running = True

            async def worker(index: int) -> None:
                nonlocal saved
                rng = random.Random(index)
                while running:
                    await store.save("Bench", keys[rng.randrange(KEYS)], payload)
                    saved += 1

            tasks = [asyncio.create_task(worker(i)) for i in range(TASKS)]
            try:
                for segment in range(segments):
                    on = segment % 2 == 0
                    async with listening(store, dsn, on):
                        deadline = time.monotonic() + SETTLE_TIMEOUT
                        # Prompt: well above 20 passes/s; quiet: at most 20 (one per 50 ms).
                        while (await passes_per_second(dsn, store) > 40) != on:
                            if time.monotonic() > deadline:
                                raise RuntimeError("the store never saw the listener change")
                        before, started = saved, time.perf_counter()
                        await asyncio.sleep(seconds)
                        rate = (saved - before) / (time.perf_counter() - started)
                    results["listener" if on else "none"].append(rate)
            finally:
                running = False
                await asyncio.gather(*tasks)
        finally:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=20, help="segments, alternating")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds counted per segment")
    parser.add_argument("--dsn", help="PostgreSQL to use (default: a fresh embedded server)")
    args = parser.parse_args()
    with server_dsn(args.dsn, "pgactors-numbering-") as dsn:
        results = asyncio.run(run(dsn, args.segments, args.seconds))
    listened, quiet = results["listener"], results["none"]
    ratios = [q / lst for lst, q in zip(listened, quiet, strict=False)]
    print(f"{__doc__.splitlines()[0]}\n")
    print("| segment | saves/s (median) | segments |")
    print("|---|---:|---:|")
    print(f"| a listener connected | {statistics.median(listened):,.0f} | {len(listened)} |")
    print(f"| nobody listening | {statistics.median(quiet):,.0f} | {len(quiet)} |")
    each = ", ".join(f"{r:.2f}" for r in ratios)
    print(
        f"\nnobody listening / a listener connected, neighbouring segments: median "
        f"{statistics.median(ratios):.2f}x ({each})"
    )


if __name__ == "__main__":
    main()
