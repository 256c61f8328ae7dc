"""How many saves over existing records are HOT updates (``pg_stat_user_tables``).

``--records`` records of about 330 bytes are saved once, then ``--rounds`` times each
from 16 concurrent callers (the default configuration, change feed on, no index asked
for), and the state table's updates are counted once its statistics show them all.
Run it with another tree's ``src`` first on ``PYTHONPATH`` to measure that tree.

    python -m benchmarks.hot_updates [--records 200] [--rounds 80] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import psycopg
from psycopg import sql

import pgactors
from benchmarks.server import server_dsn
from pgactors import Store

CALLERS = 16
STATS_TIMEOUT = 30.0


def payload(i: int, round: int) -> dict[str, object]:
    """About 330 bytes of JSON, as in the issue's figures."""
    return {"name": f"player-{i}", "level": round, "score": i * 7 + round, "bio": "x" * 220}


async def save_rounds(store: Store, records: int, rounds: int) -> None:
    """Save every record once per round, ``CALLERS`` at a time (round 0 inserts)."""
    slots = asyncio.Semaphore(CALLERS)

    async def save(i: int, round: int) -> None:
        async with slots:
            await store.save("Player", f"p{i}", payload(i, round))

    for round in range(rounds + 1):
        await asyncio.gather(*(save(i, round) for i in range(records)))


async def update_counts(dsn: str, schema: str, expected: int) -> tuple[int, int]:
    """``(n_tup_upd, n_tup_hot_upd)`` of the state table once ``expected`` updates show."""
    query = sql.SQL(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
        "WHERE schemaname = {} AND relname = 'pgactors_state'"
    ).format(sql.Literal(schema))
    deadline = time.monotonic() + STATS_TIMEOUT
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while True:
            row = await (await conn.execute(query)).fetchone()
            if row is not None and row[0] >= expected:
                return int(row[0]), int(row[1])
            if time.monotonic() > deadline:
                raise SystemExit(f"statistics showed {row} updates, expected {expected}")
            await asyncio.sleep(0.1)


async def measure(dsn: str, records: int, rounds: int) -> tuple[int, int]:
    schema = f"hotbench_{uuid.uuid4().hex[:8]}"
    async with await Store.connect(dsn, schema=schema) as store:
        await store.init_schema()
        try:
            await save_rounds(store, records, rounds)
            return await update_counts(dsn, schema, records * rounds)
        finally:
            await store.drop_schema()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=80)
    parser.add_argument("--dsn", help="a server to use (default: a fresh embedded one)")
    args = parser.parse_args()
    with server_dsn(args.dsn, "pgactors-hotbench-") as dsn:
        updates, hot = asyncio.run(measure(dsn, args.records, args.rounds))
    print(f"pgactors from {pgactors.__file__}")
    print(f"{hot:,} of {updates:,} updates were HOT ({hot / updates:.1%}); target >= 90%")


if __name__ == "__main__":
    main()
