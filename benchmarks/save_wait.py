"""What bounds ``store.save`` at 16 callers: CPU, or waiting for commits.

Alternating rounds, each in a fresh process and a fresh schema
(``benchmarks.cpu_per_op.measure``: 16 tasks, ~1 KB records, a 1 s warm-up), of:

- ``default``: the default configuration (change feed on, the default pool);
- ``pool16``: a pool of exactly 16 connections, as the main suite opens;
- ``feed-off``: ``changes=False``;
- ``async-commit``: the default, but every session of the store runs with
  ``synchronous_commit=off`` (libpq ``options``). Not a configuration anyone should run
  (a crash can lose acknowledged saves): it shows what the commits' WAL flushes cost.

It prints saves per second, the client's and the server's CPU per save, and how much of
the machine's CPU stayed idle. Idle CPU with commits synchronous, and a much higher rate
without them, mean the saves wait for their commits, not for CPU.

    python -m benchmarks.save_wait [--rounds 3] [--seconds 3] [--dsn DSN]
"""

from __future__ import annotations

from psycopg.conninfo import make_conninfo

from benchmarks import harness
from benchmarks.cpu_per_op import compare_variants, measure

VARIANTS = ("default", "pool16", "feed-off", "async-commit")
TASKS = 16


async def _round(dsn: str, variant: str, seconds: str) -> dict[str, float]:
    if variant == "async-commit":
        dsn = make_conninfo(dsn, options="-c synchronous_commit=off")
    return await measure(
        dsn,
        "save",
        TASKS,
        float(seconds),
        changes=variant != "feed-off",
        payload=harness.make_payload(),
        pool_size=TASKS if variant == "pool16" else None,
    )


def main() -> None:
    compare_variants(
        __doc__.splitlines()[0],
        "pgactors-savewait-",
        "benchmarks.save_wait:_round",
        VARIANTS,
        TASKS,
    )


if __name__ == "__main__":
    main()
