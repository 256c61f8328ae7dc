"""``python -m benchmarks``: pgactors next to pgbench, a psycopg peer and SQLAlchemy.

Starts a throwaway embedded PostgreSQL (unless ``--dsn`` is given), creates an isolated
``bench_<random>`` schema, preloads the key space, runs every workload at concurrency 1
and ``--concurrency`` (each Python workload in a fresh subprocess), optionally runs the
scale curve, prints the markdown tables and the PASS/FAIL targets, writes
``<out>/<date>.json``, ``.md`` and ``.png`` (and ``<date>-scale.png``), and drops the
schemas (and stops the server it started) at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import secrets
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benchmarks import harness, report
from benchmarks import history as history_bench
from benchmarks.pgbench import FEED_OFF
from benchmarks.report import ScalePoint
from benchmarks.suite import (
    BY_NAME,
    HISTORY_WORKLOADS,
    SCALE_WORKLOADS,
    WORKLOADS,
    Bench,
    Workload,
    select_workloads,
)
from pgactors import Store
from pgactors.config import redact
from pgactors.embedded import EmbeddedServer

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
DEFAULT_SCALE_SIZES = "10000,100000,1000000"


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be integers >= 1")
    return sorted(set(sizes))


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
        "--duration", type=int, default=7, help="seconds per workload and concurrency (default 7)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="concurrent tasks/clients and pool size; concurrency 1 always runs too (default 16)",
    )
    parser.add_argument("--records", type=int, default=10_000, help="key space (default 10000)")
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="directory for <date>.json, <date>.md, <date>.png and <date>-scale.png "
        "(default benchmarks/results)",
    )
    parser.add_argument("--json", type=Path, help="also write the JSON results to this file")
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
    parser.add_argument(
        "--history-rounds",
        type=int,
        default=3,
        metavar="N",
        help="version history: N alternating rounds of pgactors save with no history, "
        "with another type keeping history, and with its own type keeping it, at each "
        "concurrency; medians and ratios (default 3, 0 to skip)",
    )
    parser.add_argument(
        "--pair-rounds",
        type=int,
        default=3,
        metavar="N",
        help="the bare-table targets: N more rounds of each target's workload and its "
        "baseline back to back at --concurrency, the first of the pair alternating; "
        "judged on the median ratio (default 3, 0 to judge the main pass alone)",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="also run the scale curve: pgactors save and load at --concurrency against "
        "tables of --scale-sizes records",
    )
    parser.add_argument(
        "--scale-sizes",
        type=_sizes,
        default=_sizes(DEFAULT_SCALE_SIZES),
        metavar="N,N,...",
        help=f"record counts for --scale (default {DEFAULT_SCALE_SIZES})",
    )
    args = parser.parse_args(argv)
    if args.duration < 1:
        parser.error("--duration must be at least 1 second")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.records < 1:
        parser.error("--records must be at least 1")
    if args.history_rounds < 0:
        parser.error("--history-rounds must be at least 0")
    if args.pair_rounds < 0:
        parser.error("--pair-rounds must be at least 0")
    try:
        args.selected = select_workloads(args.workloads)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _create_schema(dsn: str, schema_name: str) -> None:
    store = await Store.connect(dsn, schema=schema_name, pool_min_size=1, pool_max_size=1)
    try:
        await store.init_schema()
    finally:
        await store.close()


async def _drop_schema(dsn: str, schema_name: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema_name))
        )


def _done(result: harness.Result) -> None:
    batch = f" ({result.records_per_sec:,.0f} records/s)" if result.records_per_op > 1 else ""
    _log(
        f"    {result.ops_per_sec:,.0f} ops/s{batch}, p50 {result.p50_ms or 0:.3f} ms, "
        f"p99 {result.p99_ms or 0:.3f} ms, peak RSS {result.peak_rss_mib or 0:.0f} MiB"
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
            _done(result)
    return results


async def _run_pairs(
    bench: Bench, selected: Sequence[Workload], level: int, rounds: int
) -> dict[tuple[str, str], list[tuple[harness.Result, harness.Result]]]:
    """Each paired target whose two workloads were selected: ``rounds`` rounds of the
    two back to back, alternating which goes first."""
    names = {w.name for w in selected}
    targets = [t for t in report.TARGETS if t.paired and {t.workload, t.baseline} <= names]
    pairs: dict[tuple[str, str], list[tuple[harness.Result, harness.Result]]] = {}
    for round in range(rounds):
        for target in targets:
            ran: dict[str, harness.Result] = {}
            order = [target.workload, target.baseline]
            for name in order if round % 2 else order[::-1]:
                workload = BY_NAME[name]
                _log(f"[pair {round + 1}/{rounds}] {workload.label}, concurrency {level} ...")
                ran[name] = await workload.run(bench, level, seed=3000 + round)
                _done(ran[name])
            key = (target.workload, target.baseline)
            pairs.setdefault(key, []).append((ran[target.workload], ran[target.baseline]))
    return pairs


async def _run_history(bench: Bench, levels: Sequence[int], rounds: int) -> list[harness.Result]:
    """The version history comparison: its workloads in turn, ``rounds`` times per level,
    each round starting with another one, so that drift (checkpoints, the disk, other
    load, the dead rows a run leaves to the next) hits every side alike."""
    results: list[harness.Result] = []
    total = len(levels) * rounds * len(HISTORY_WORKLOADS)
    for level in levels:
        for round in range(rounds):
            turn = round % len(HISTORY_WORKLOADS)
            for name in HISTORY_WORKLOADS[turn:] + HISTORY_WORKLOADS[:turn]:
                workload = BY_NAME[name]
                _log(
                    f"[history {len(results) + 1}/{total}] {workload.label}, concurrency "
                    f"{level}, round {round + 1} ..."
                )
                result = await workload.run(bench, level, seed=2000 + len(results))
                results.append(result)
                _done(result)
    return results


async def _run_scale(
    args: argparse.Namespace, make_bench: Callable[[int], Awaitable[Bench]]
) -> list[ScalePoint]:
    """For each size: a fresh schema of that many records, pgactors save and load."""
    points: list[ScalePoint] = []
    for index, size in enumerate(args.scale_sizes):
        bench = await make_bench(size)
        try:
            _log(f"scale {size:,} records: preloading ...")
            preload_s = await bench.preload()
            relation_bytes = await bench.relation_bytes()
            _log(f"    preloaded in {preload_s:.1f} s, {relation_bytes / 2**20:,.0f} MiB")
            results = []
            for name in SCALE_WORKLOADS:
                workload = BY_NAME[name]
                _log(
                    f"scale {size:,} records: {workload.label}, concurrency {args.concurrency} ..."
                )
                result = await workload.run(bench, args.concurrency, seed=1000 + index)
                results.append(result)
                _done(result)
            points.append(ScalePoint(size, preload_s, relation_bytes, tuple(results)))
        finally:
            await _drop_schema(bench.dsn, bench.schema)
    return points


def _markdown(
    meta: dict[str, Any],
    results: Sequence[harness.Result],
    checks: Sequence[dict[str, Any]],
    scale: Sequence[ScalePoint],
    history: Sequence[harness.Result] = (),
    server: dict[str, Any] | None = None,
) -> str:
    parts = [
        f"# pgactors benchmarks, {meta['date']}",
        "",
        f"PostgreSQL {meta['postgresql_version']} | Python {meta['python']} | "
        f"{meta['cpu_count']} CPUs | {meta['records']} records of {meta['payload_bytes']} B "
        f"JSON | {meta['duration_s']} s per workload | pool {meta['pool_size']} | "
        f"pgbench payload: {meta['pgbench_payload']}",
        "",
        report.markdown_table(results),
    ]
    notes = report.conflict_notes(results)
    if notes:
        parts += ["", "Compare-and-set conflicts:", "", *notes]

    parts += [
        "",
        f"## Targets (c={meta['target_concurrency']})",
        "",
        *[f"- {line}" for line in report.target_lines(checks)],
    ]
    if history:
        parts += [
            "",
            "## Version history: what saves of the bench type cost (medians of "
            f"{meta['history_rounds']} alternating rounds)",
            "",
            report.history_table(report.history_rows(history)),
        ]
    if server:
        parts += [
            "",
            f"Server side, the same comparison without client or commit: one DO block of "
            f"{server['updates_per_block']:,} UPDATEs of the bench type per run, "
            f"{meta['history_rounds']} alternating rounds:",
            "",
            history_bench.server_table(server),
        ]
    if scale:
        parts += [
            "",
            f"## Scale curve (pgactors at c={meta['target_concurrency']}, "
            f"{meta['duration_s']} s per run)",
            "",
            report.scale_table(scale),
        ]
    return "\n".join(parts) + "\n"


@dataclass(frozen=True)
class Run:
    """Everything one invocation measured."""

    meta: dict[str, Any]
    results: list[harness.Result]
    checks: list[dict[str, Any]]
    scale: list[ScalePoint]
    history: list[harness.Result]
    server: dict[str, Any] | None


async def measure(args: argparse.Namespace, dsn: str, workdir: Path) -> Run:
    """Create the schemas, preload, run every workload (and the scale curve), clean up."""
    started = dt.datetime.now(dt.UTC)
    levels = sorted({1, args.concurrency})
    pool_size = max(levels)
    schema_name = f"bench_{secrets.token_hex(4)}"
    payload = harness.make_payload()
    warmup = min(0.5, args.duration / 10)
    async with contextlib.AsyncExitStack() as stack:
        admin = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        stack.push_async_callback(admin.close)
        cur = await admin.execute("SELECT current_setting('server_version')")
        row = await cur.fetchone()
        server_version = str(row[0]) if row else "unknown"

        async def make_bench(records: int, name: str) -> Bench:
            # Registered before init_schema so a failure anywhere still drops the schema.
            stack.push_async_callback(_drop_schema, dsn, name)
            await _create_schema(dsn, name)
            return Bench(
                dsn=dsn,
                schema=name,
                records=records,
                duration=args.duration,
                warmup=warmup,
                pool_size=pool_size,
                workdir=workdir / "pgbench" / name,
                payload=payload,
                admin=admin,
                pgbench_payload=args.pgbench_payload,
            )

        bench = await make_bench(args.records, schema_name)
        _log(f"schema {schema_name}: preloading {args.records} records ...")
        _log(f"preloaded in {await bench.preload():.1f} s")
        results = await _run_all(bench, args.selected, levels)
        pairs = await _run_pairs(bench, args.selected, args.concurrency, args.pair_rounds)
        history = await _run_history(bench, levels, args.history_rounds)
        server = None
        if args.history_rounds:
            _log("history, server side: DO blocks of UPDATEs ...")
            server = await history_bench.server_rounds(bench, args.history_rounds)
            _log(f"    µs per UPDATE (medians): {server['medians']}")
        scale: list[ScalePoint] = []
        if args.scale:
            scale = await _run_scale(args, lambda size: make_bench(size, f"{schema_name}_s{size}"))

    meta: dict[str, Any] = {
        "date": started.astimezone().date().isoformat(),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "postgresql_version": server_version,
        "server": "embedded (temp dir)" if args.dsn is None else redact(dsn),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "duration_s": args.duration,
        "warmup_s": warmup,
        "concurrency_levels": levels,
        "target_concurrency": args.concurrency,
        "pool_size": pool_size,
        "records": args.records,
        "batch_size": harness.BATCH_SIZE,
        "payload_bytes": harness.payload_bytes(payload),
        "pgbench_payload": args.pgbench_payload,
        "checkpoint_between_workloads": bench.checkpoints,
        "peak_rss": "VmHWM of the process that ran the workload (ru_maxrss off Linux): a "
        "fresh spawn subprocess per Python run, the pgbench process for pgbench",
        "scale_sizes": args.scale_sizes if args.scale else [],
        "history_rounds": args.history_rounds,
        "pair_rounds": args.pair_rounds,
        "workloads": [w.name for w in args.selected],
    }
    checks = report.check_targets(results, args.concurrency, pairs)
    return Run(meta, results, checks, scale, history, server)


def publish(args: argparse.Namespace, run: Run) -> list[Path]:
    """Print the tables and targets; write the JSON, markdown and charts; return the paths."""
    # matplotlib (and numpy) only now: the parent stays small while children are spawned.
    from benchmarks import charts

    meta, date = run.meta, run.meta["date"]
    markdown = _markdown(meta, run.results, run.checks, run.scale, run.history, run.server)
    print()
    print(markdown, end="")
    print()
    print("\n".join(report.target_lines(run.checks)))

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    doc = report.document(meta, run.results, run.checks, run.scale, run.history)
    doc["history"]["server"] = run.server
    written = [out / f"{date}.json", out / f"{date}.md", out / f"{date}.png"]
    report.write_json(written[0], doc)
    report.write_atomic(written[1], markdown)
    charts.results_chart(
        run.results,
        written[2],
        f"pgactors benchmarks {date}: PostgreSQL {meta['postgresql_version']}, "
        f"{meta['cpu_count']} CPUs, {meta['records']} records of {meta['payload_bytes']} B, "
        f"{meta['duration_s']} s per run",
    )
    if run.scale:
        written.append(out / f"{date}-scale.png")
        charts.scale_chart(
            run.scale,
            written[-1],
            f"pgactors scale curve {date}: c={meta['target_concurrency']}, "
            f"{meta['duration_s']} s per run",
        )
    if args.json is not None:
        report.write_json(args.json, doc)
        written.append(args.json)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Every system's writes stay out of the change log (the measuring subprocesses
    # inherit this; pgbench gets it explicitly); benchmarks.feed measures the feed.
    os.environ["PGOPTIONS"] = FEED_OFF
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
        run = asyncio.run(measure(args, dsn, workdir))
    finally:
        if server is not None:
            _log("stopping the embedded PostgreSQL ...")
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    written = publish(args, run)
    print()
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
