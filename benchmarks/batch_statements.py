"""What a coalesced save batch costs with ttl parameters and without: the statements alone.

A batch in which no save has a ttl runs the ``save_*_batch_plain`` statements, which
parse no ttl or sliding parameters and compute no expiry for new rows. This times
each pair on one connection, serially: ``--batches`` batches of 16 saves over random
keys of 10,000 existing ~1 KB records (``harness.make_payload``), the change feed on,
``synchronous_commit`` off (the WAL flush, the same for both, would drown the
difference). Rounds alternate which statement goes first; medians per statement.

    python -m benchmarks.batch_statements [--rounds 20] [--batches 200] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql

from benchmarks import harness
from benchmarks.server import server_dsn
from benchmarks.statements import query
from pgactors import Store
from pgactors.postgres.ops import SaveRequest, save_params

KEYS = 10_000
BATCH = 16
KINDS = ("lww",)


async def _fill(dsn: str, schema: str, payload: dict[str, Any]) -> None:
    async with await Store.connect(dsn, schema=schema) as store:
        await store.init_schema()
        await store.save_many("Bench", dict.fromkeys((f"k{i}" for i in range(KEYS)), payload))


def run(dsn: str, rounds: int, batches: int) -> dict[str, list[float]]:
    """Microseconds per statement, one figure per round, by statement name."""
    schema = f"batchstmt_{uuid.uuid4().hex[:8]}"
    payload = harness.make_payload()
    text = json.dumps(payload)
    asyncio.run(_fill(dsn, schema, payload))
    names = [f"save_{kind}_batch{suffix}" for kind in KINDS for suffix in ("", "_plain")]
    results: dict[str, list[float]] = {name: [] for name in names}
    rng = random.Random(1)
    versions = dict.fromkeys((f"k{i}" for i in range(KEYS)), 1)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET synchronous_commit = off")
            statements = {name: query(name, schema) for name in names}
            for round in range(rounds):
                for name in names if round % 2 else reversed(names):
                    started = time.perf_counter()
                    for _ in range(batches):
                        keys = sorted(f"k{k}" for k in rng.sample(range(KEYS), BATCH))
                        expected = "cas" in name
                        batch = [
                            SaveRequest("Bench", k, text, versions[k] if expected else None)
                            for k in keys
                        ]
                        params = save_params(batch)
                        # What a batch holding a save with a ttl sends for those without.
                        params["ttls"] = json.dumps([None] * BATCH)
                        params["slidings"] = json.dumps([False] * BATCH)
                        rows = conn.execute(statements[name], params, prepare=True).fetchall()
                        versions.update((row[1], row[2]) for row in rows)
                    results[name].append((time.perf_counter() - started) / batches * 1e6)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batches", type=int, default=200, help="batches per statement a round")
    parser.add_argument("--dsn", help="PostgreSQL to use (default: a fresh embedded server)")
    args = parser.parse_args()
    with server_dsn(args.dsn, "pgactors-batchstmt-") as dsn:
        results = run(dsn, args.rounds, args.batches)
    print(f"{__doc__.splitlines()[0]}\n")
    print("| batch of 16 | with ttl parameters | no ttl (`_plain`) | ratio (median of rounds) |")
    print("|---|---:|---:|---:|")
    for kind in KINDS:
        full, plain = results[f"save_{kind}_batch"], results[f"save_{kind}_batch_plain"]
        ratio = statistics.median(p / f for p, f in zip(plain, full, strict=True))
        print(
            f"| `save_{kind}_batch` | {statistics.median(full):.0f} µs "
            f"| {statistics.median(plain):.0f} µs | {ratio:.2f}x |"
        )


if __name__ == "__main__":
    main()
