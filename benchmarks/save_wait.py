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

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

from benchmarks import harness
from benchmarks.cpu_per_op import in_fresh_process, measure
from benchmarks.server import server_dsn

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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--dsn", help="a server to use (default: a fresh embedded one)")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    with server_dsn(args.dsn, "pgactors-savewait-") as dsn:
        for round_ in range(args.rounds):
            for variant in VARIANTS:
                result = in_fresh_process(
                    Path.cwd(), "benchmarks.save_wait:_round", dsn, variant, str(args.seconds)
                )
                runs[variant].append(result)
                print(f"round {round_ + 1} {variant}: {result}", file=sys.stderr)
    print(
        f"{args.rounds} alternating rounds of {args.seconds:g} s, {TASKS} tasks, "
        f"load average {os.getloadavg()[0]:.2f} at the end\n"
    )
    base = statistics.median(r["per_s"] for r in runs["default"])
    print(
        "| variant | saves/s (each round) | median | vs default "
        "| client CPU us/save | server CPU us/save | CPU idle |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for variant, results in runs.items():
        rates = [r["per_s"] for r in results]
        rate = statistics.median(rates)
        client = statistics.median(r["client_us"] for r in results)
        server = statistics.median(r["server_us"] for r in results)
        idle = statistics.median(r["idle_pct"] for r in results)
        each = ", ".join(f"{x:,.0f}" for x in rates)
        print(
            f"| {variant} | {each} | {rate:,.0f} | {rate / base:.2f}x "
            f"| {client:.1f} | {server:.1f} | {idle:.0f}% |"
        )


if __name__ == "__main__":
    main()
