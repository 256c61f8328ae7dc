"""``python -m benchmarks``: pgactors throughput/latency next to pgbench and a psycopg peer.

Starts a throwaway embedded PostgreSQL (unless ``--dsn`` is given), creates an isolated
``bench_<random>`` schema, preloads the key space, runs every workload at concurrency 1
and ``--concurrency``, prints a markdown table, and drops the schema (and stops the
server it started) at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import resource
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benchmarks import harness, peers, report, workloads
from benchmarks.suite import WORKLOADS, Bench, Workload, select_workloads
from pgactors import Store
from pgactors.config import redact
from pgactors.embedded import EmbeddedServer


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument(
        "--dsn",
        help="PostgreSQL to benchmark (default: a fresh embedded server in a temp dir)",
    )
    parser.add_argument(
        "--duration", type=int, default=10, help="seconds per workload (default 10)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="concurrent tasks/clients; concurrency 1 always runs too (default 16)",
    )
    parser.add_argument("--records", type=int, default=10_000, help="key space (default 10000)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument(
        "--workloads",
        default="default",
        help="'default', 'all', or a comma-separated list of: "
        + ", ".join(w.name + ("" if w.default else " (off by default)") for w in WORKLOADS),
    )
    parser.add_argument(
        "--pgbench-payload",
        choices=("literal", "param"),
        default="literal",
        help="pgbench write scripts carry the JSON as a SQL literal in the script "
        "(default) or bind it as a parameter on every execution, as the Python clients do",
    )
    args = parser.parse_args(argv)
    if args.duration < 1:
        parser.error("--duration must be at least 1 second")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.records < 1:
        parser.error("--records must be at least 1")
    try:
        args.selected = select_workloads(args.workloads)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _peak_rss_mib() -> float:
    """Peak resident set size of this process (pgbench and the server not included)."""
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _drop_schema(dsn: str, schema_name: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema_name))
        )


async def _run_all(
    bench: Bench, selected: Sequence[Workload], levels: Sequence[int]
) -> list[harness.Result]:
    results: list[harness.Result] = []
    total = len(selected) * len(levels)
    for level in levels:
        for workload in selected:
            _log(f"[{len(results) + 1}/{total}] {workload.label}, concurrency {level} ...")
            result = await workload.run(bench, level, seed=len(results))
            results.append(result)
            _log(
                f"    {result.ops_per_sec:,.0f} ops/s, p50 {result.p50_ms or 0:.3f} ms, "
                f"p99 {result.p99_ms or 0:.3f} ms"
            )
    return results


async def run(args: argparse.Namespace, dsn: str, workdir: Path) -> int:
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    levels = sorted({1, args.concurrency})
    pool_size = max(levels)
    schema_name = f"bench_{secrets.token_hex(4)}"
    payload = harness.make_payload()
    keys = harness.make_keys(args.records)
    async with contextlib.AsyncExitStack() as stack:
        admin = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        stack.push_async_callback(admin.close)
        cur = await admin.execute("SELECT current_setting('server_version')")
        row = await cur.fetchone()
        server_version = str(row[0]) if row else "unknown"
        # Registered before init_schema so a failure anywhere still drops the schema.
        stack.push_async_callback(_drop_schema, dsn, schema_name)

        store = await Store.connect(
            dsn, schema=schema_name, pool_min_size=pool_size, pool_max_size=pool_size
        )
        stack.push_async_callback(store.close)
        await store.init_schema()
        peer_pool = await peers.open_pool(dsn, pool_size)
        stack.push_async_callback(peer_pool.close)

        _log(f"schema {schema_name}: preloading {args.records} records ...")
        started = time.perf_counter()
        await workloads.preload(store, keys, payload)
        bench = Bench(
            dsn=dsn,
            schema=schema_name,
            records=args.records,
            duration=args.duration,
            warmup=min(0.5, args.duration / 10),
            workdir=workdir / "pgbench",
            payload=payload,
            keys=keys,
            store=store,
            peer_pool=peer_pool,
            admin=admin,
            pgbench_payload=args.pgbench_payload,
        )
        await bench.vacuum_analyze()
        _log(f"preloaded in {time.perf_counter() - started:.1f} s")

        results = await _run_all(bench, args.selected, levels)

        peak_rss = _peak_rss_mib()
        meta: dict[str, Any] = {
            "started_at": started_at,
            "postgresql_version": server_version,
            "server": "embedded (temp dir)" if args.dsn is None else redact(dsn),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "duration_s": args.duration,
            "warmup_s": bench.warmup,
            "concurrency_levels": levels,
            "records": args.records,
            "payload_bytes": harness.payload_bytes(payload),
            "pgbench_payload": args.pgbench_payload,
            "checkpoint_between_workloads": bench.checkpoints,
            "peak_rss_mib": round(peak_rss, 1),
        }
        print()
        print(
            f"PostgreSQL {server_version} | Python {meta['python']} | {meta['cpu_count']} CPUs | "
            f"{args.records} records of {meta['payload_bytes']} B JSON | "
            f"{args.duration} s per workload | pgbench payload: {args.pgbench_payload}"
        )
        print()
        print(report.markdown_table(results))
        notes = report.conflict_notes(results)
        if notes:
            print()
            print("Compare-and-set conflicts:")
            print("\n".join(notes))
        print()
        print(f"Peak RSS of this process: {peak_rss:.1f} MiB")
        if args.json is not None:
            report.write_json(args.json, meta, results)
            print(f"Results written to {args.json}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pgactors-bench-"))
    server: EmbeddedServer | None = None
    try:
        if args.dsn is not None:
            dsn = args.dsn
        else:
            server = EmbeddedServer(workdir / "server")
            _log(f"starting an embedded PostgreSQL in {server.data_dir} ...")
            server.start()
            dsn = server.dsn
        return asyncio.run(run(args, dsn, workdir))
    finally:
        if server is not None:
            _log("stopping the embedded PostgreSQL ...")
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
