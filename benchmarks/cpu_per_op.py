"""CPU per load and per save, client and server, alternating between source trees.

On a shared two-core machine, operations per second swing by 2x from one minute to
the next; CPU spent per operation moves much less. This runs short rounds of
``store.load`` and ``store.save`` (16 tasks, ~1 KB records, 10,000 keys, change feed
on) in a fresh process per round, alternating the trees given with ``--tree`` (their
``src`` directories go first on ``PYTHONPATH``), and prints medians per tree.

    python -m benchmarks.cpu_per_op                          # this tree only
    python -m benchmarks.cpu_per_op --tree /tmp/old --tree .  # a tree before and after
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks.server import server_cpu_seconds, server_dsn

KEYS = 10_000
PAYLOAD = {"blob": "x" * 900, "n": 1}


async def measure(
    dsn: str,
    op: str,
    tasks: int,
    seconds: float,
    *,
    changes: bool = True,
    prepare: Callable[[str, str], Awaitable[None]] | None = None,
    payload: dict[str, Any] = PAYLOAD,
    pool_size: int | None = None,
) -> dict[str, float]:
    """``op`` (``load`` or ``save``) of ``payload`` records from ``tasks`` tasks for
    ``seconds`` after a 1 s warm-up, in a fresh schema (``prepare(dsn, schema)`` runs
    once it exists), through the default pool or one of exactly ``pool_size``
    connections: per second, the client's and the server's CPU per operation in
    microseconds, and the share of the machine's CPU time left idle (``idle_pct``)."""
    from pgactors import Store

    schema = f"cpubench_{uuid.uuid4().hex[:8]}"
    sizes = {} if pool_size is None else {"pool_min_size": pool_size, "pool_max_size": pool_size}
    async with await Store.connect(dsn, schema=schema, changes=changes, **sizes) as store:
        await store.init_schema()
        try:
            if prepare is not None:
                await prepare(dsn, schema)
            keys = [f"k{i}" for i in range(KEYS)]
            await store.save_many("Bench", dict.fromkeys(keys, payload))
            done = 0

            async def worker(index: int, until: float) -> None:
                nonlocal done
                rng = random.Random(index)
                while time.perf_counter() < until:
                    key = keys[rng.randrange(KEYS)]
                    if op == "load":
                        await store.load("Bench", key)
                    else:
                        await store.save("Bench", key, payload)
                    done += 1

            warm = time.perf_counter() + 1.0
            await asyncio.gather(*(worker(i, warm) for i in range(tasks)))
            server, idle = server_cpu_seconds(dsn), _idle_ticks()
            done, cpu, started = 0, time.process_time(), time.perf_counter()
            until = started + seconds
            await asyncio.gather(*(worker(i, until) for i in range(tasks)))
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            after, idle_after = server_cpu_seconds(dsn), _idle_ticks()
        finally:
            await store.drop_schema()
    return {
        "per_s": done / elapsed,
        "client_us": cpu / done * 1e6,
        "server_us": (after - server) / done * 1e6 if server is not None and after else -1.0,
        "idle_pct": 100 * (idle_after[0] - idle[0]) / max(1, idle_after[1] - idle[1]),
    }


def _idle_ticks() -> tuple[int, int]:
    """The machine's idle (and I/O wait) ticks and all its ticks so far, from /proc/stat."""
    with open("/proc/stat") as stat:
        ticks = [int(t) for t in stat.readline().split()[1:]]
    return ticks[3] + ticks[4], sum(ticks)


def in_fresh_process(tree: Path, function: str, *args: str) -> dict[str, float]:
    """``function`` (``module:name``, an async function of string arguments returning a
    dict of floats), run in a fresh interpreter with ``tree``'s ``src`` first on
    ``PYTHONPATH``; its result."""
    module, name = function.split(":")
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{Path.cwd()}"}
    code = (
        f"import asyncio, json, sys; from {module} import {name}; "
        f"print(json.dumps(asyncio.run({name}(*sys.argv[1:]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def compare_variants(
    description: str, prefix: str, function: str, variants: tuple[str, ...], tasks: int
) -> None:
    """A script's command line (``--rounds``, ``--seconds``, ``--dsn``): run
    ``function(dsn, variant, seconds)`` (``module:name``) in a fresh process for each of
    ``variants`` in turn, ``--rounds`` times, against ``--dsn`` or a fresh embedded
    server (whose directory name starts with ``prefix``); print a table of saves per
    second (each round, median, against the first variant), CPU per save and the
    machine's idle CPU. ``tasks``: how many tasks ``function`` saves from, for the
    heading."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--dsn", help="a server to use (default: a fresh embedded one)")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with server_dsn(args.dsn, prefix) as dsn:
        for round_ in range(args.rounds):
            for variant in variants:
                result = in_fresh_process(Path.cwd(), function, dsn, variant, str(args.seconds))
                runs[variant].append(result)
                print(f"round {round_ + 1} {variant}: {result}", file=sys.stderr)
    print(
        f"{args.rounds} alternating rounds of {args.seconds:g} s, {tasks} tasks, "
        f"load average {os.getloadavg()[0]:.2f} at the end\n"
    )
    base = statistics.median(r["per_s"] for r in runs[variants[0]])
    print(
        f"| variant | saves/s (each round) | median | vs {variants[0]} "
        "| client CPU us/save | server CPU us/save | CPU idle |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for variant, results in runs.items():
        rates = [r["per_s"] for r in results]
        rate = statistics.median(rates)
        client, server, idle = (
            statistics.median(r[key] for r in results)
            for key in ("client_us", "server_us", "idle_pct")
        )
        each = ", ".join(f"{x:,.0f}" for x in rates)
        print(
            f"| {variant} | {each} | {rate:,.0f} | {rate / base:.2f}x "
            f"| {client:.1f} | {server:.1f} | {idle:.0f}% |"
        )


async def _round(dsn: str, op: str, tasks: str, seconds: str) -> dict[str, float]:
    return await measure(dsn, op, int(tasks), float(seconds))


def _run_round(tree: Path, dsn: str, op: str, tasks: int, seconds: float) -> dict[str, float]:
    return in_fresh_process(tree, "benchmarks.cpu_per_op:_round", dsn, op, str(tasks), str(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", type=Path, help="a source tree (repeat)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--dsn", help="a server to use (default: a fresh embedded one)")
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [Path.cwd()])]
    runs: dict[tuple[str, Path], list[dict[str, Any]]] = {}
    with server_dsn(args.dsn, "pgactors-cpubench-") as dsn:
        for round_ in range(args.rounds):
            for op in ("load", "save"):
                for tree in trees:
                    result = _run_round(tree, dsn, op, args.tasks, args.seconds)
                    runs.setdefault((op, tree), []).append(result)
                    print(f"round {round_ + 1} {op} {tree}: {result}", file=sys.stderr)
    print(
        f"{args.rounds} alternating rounds of {args.seconds:g} s, {args.tasks} tasks, "
        f"load average {os.getloadavg()[0]:.2f} at the end\n"
    )
    print("| op | tree | ops/s (median) | client CPU us/op | server CPU us/op |")
    print("|---|---|---:|---:|---:|")
    for (op, tree), results in runs.items():
        rate = statistics.median(r["per_s"] for r in results)
        client = statistics.median(r["client_us"] for r in results)
        server = statistics.median(r["server_us"] for r in results)
        print(f"| {op} | {tree} | {rate:,.0f} | {client:.1f} | {server:.1f} |")


if __name__ == "__main__":
    main()
