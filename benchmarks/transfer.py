"""Import and export throughput and memory, through the real ``pgactors`` command.

    python -m benchmarks.transfer [--records 1000000] [--dsn DSN] [--verify]

Writes a JSONL file of ``--records`` records (about 1 KB of JSON data each, the
document of the main suite) in a temp dir, then runs, each in its own process:

1. ``pgactors import FILE`` into an empty schema (and again with the change log off);
2. ``pgactors export -o FILE`` of that schema;
3. ``pgactors import FILE`` into a schema that already holds ``--records`` other records
   (change feed on, the default), beside psql's ``\\copy`` of the same rows (type, id,
   data) into a bare table (primary key only) that holds as many other rows: the
   ceiling an import is measured against.

Reports records/s (wall time of the command, start-up included) and the peak RSS of
that process (``wait4``'s ``ru_maxrss``). ``--verify`` also imports the export into a
second empty schema and exports it again, and checks the two exports are identical.

A script, never a timed test; quote the figures from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import csv
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

import pgactors
from pgactors import Store
from pgactors.embedded import bin_path

from .harness import make_payload
from .server import server_dsn

IMPORT_TARGET = 100_000
COPY_RATIO_TARGET = 0.5  # import into a store with records, against psql's \\copy
EXPORT_TARGET = 150_000
RSS_TARGET_MB = 200


@dataclass(frozen=True)
class Run:
    """One command: what it did, its wall time and the peak RSS of its process."""

    name: str
    records: int
    seconds: float
    peak_rss_mb: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def write_jsonl(path: Path, records: int) -> None:
    """``records`` lines of type ``bench``, ids ``k1``..``kN``, a ~1 KB document each."""
    payload = make_payload()
    stamp = "2026-01-02T03:04:05.123456+00:00"
    with path.open("w", encoding="utf-8") as out:
        for n in range(1, records + 1):
            payload["counter"] = n
            data = json.dumps(payload, separators=(",", ":"))
            out.write(
                f'{{"type":"bench","id":"k{n}","version":1,"data":{data},'
                f'"created_at":"{stamp}","updated_at":"{stamp}"}}\n'
            )


def write_csv(source: Path, path: Path) -> None:
    """The same rows as (type, id, data) CSV, for psql's ``\\copy``."""
    with source.open(encoding="utf-8") as lines, path.open("w", newline="") as out:
        writer = csv.writer(out)
        for line in lines:
            row = json.loads(line)
            writer.writerow([row["type"], row["id"], json.dumps(row["data"])])


def preload_other(dsn: str, schema: str, state: bool, records: int) -> None:
    """``records`` rows of type ``other`` (the same document) already in ``table``: a
    store's state table (``state``: with version 1, and their changes numbered into the
    log, as a running store's writers would have done long before) or the bare table."""
    table = sql.Identifier(schema, "pgactors_state" if state else "bare")
    columns = "type, id, version, data" if state else "type, id, data"
    values = "'other', 'o' || g, 1, %s::jsonb" if state else "'other', 'o' || g, %s::jsonb"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM generate_series(1, %s) g").format(
                table, sql.SQL(columns), sql.SQL(values)
            ),
            (json.dumps(make_payload()), records),
        )
        if state:
            number = sql.SQL("SELECT {}.pgactors_sequence_changes('bench_preload', 100000)")
            while conn.execute(number.format(sql.Identifier(schema))).fetchone() != (0,):
                pass
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(table))


def copy_into_bare(dsn: str, schema: str, csv_path: Path, records: int) -> Run:
    """psql's ``\\copy`` of the rows into a bare table that holds ``records`` others."""
    table = sql.Identifier(schema, "bare")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                'CREATE TABLE {} (type text COLLATE "C", id text COLLATE "C", data jsonb, '
                "PRIMARY KEY (type, id))"
            ).format(table)
        )
        target = table.as_string(conn)
    preload_other(dsn, schema, False, records)
    command = f"\\copy {target} (type, id, data) FROM '{csv_path}' WITH (FORMAT csv)"
    started = time.perf_counter()
    subprocess.run([str(bin_path("psql")), "-q", "-c", command, dsn], check=True)
    return Run("copy", records, time.perf_counter() - started, 0.0)


def pgactors_command() -> str:
    """The ``pgactors`` script next to this interpreter."""
    found = shutil.which("pgactors", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("the pgactors command is not installed next to this Python")
    return found


def compile_package() -> None:
    """Write pgactors' bytecode, as an installed package has it. A machine may set
    PYTHONDONTWRITEBYTECODE (ours does): every command would then compile pgactors from
    source as it starts, about 0.4 s here, which no installed copy pays."""
    compileall.compile_dir(Path(pgactors.__file__).parent, quiet=1)


def run_command(name: str, records: int, args: list[str], env: dict[str, str]) -> Run:
    """Run the CLI once; its wall time and its own peak RSS (not the server's)."""
    started = time.perf_counter()
    process = subprocess.Popen([pgactors_command(), *args], env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{name} failed with exit code {process.returncode}")
    # ru_maxrss is in KiB on Linux.
    return Run(name, records, seconds, usage.ru_maxrss / 1024)


async def init_schema(dsn: str, schema: str) -> None:
    async with await Store.connect(dsn, schema=schema) as store:
        await store.init_schema()


async def drop_schema(dsn: str, schema: str) -> None:
    async with await Store.connect(dsn, schema=schema) as store:
        await store.drop_schema()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--dsn", default=None, help="server to use (default: a new embedded one)")
    parser.add_argument("--verify", action="store_true", help="check export-import-export")
    args = parser.parse_args()

    compile_package()
    workdir = Path(tempfile.mkdtemp(prefix="pgactors-transfer-"))
    try:
        source = workdir / "in.jsonl"
        print(f"writing {args.records} records to {source}", file=sys.stderr)
        write_jsonl(source, args.records)
        size_mb = source.stat().st_size / 2**20
        runs: list[Run] = []
        with server_dsn(args.dsn, "pgactors-transfer-") as dsn:
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            asyncio.run(init_schema(dsn, schema))
            env = {**os.environ, "PGACTORS_DSN": dsn, "PGACTORS_SCHEMA": schema}
            try:
                print("import ...", file=sys.stderr)
                runs.append(run_command("import", args.records, ["import", str(source)], env))
                # The same into a second schema without the change log (a bulk restore
                # nobody watches): the feed's per-record cost, shown apart.
                quiet = f"bench_{uuid.uuid4().hex[:8]}"
                asyncio.run(init_schema(dsn, quiet))
                quiet_env = {**env, "PGACTORS_SCHEMA": quiet, "PGACTORS_CHANGES": "off"}
                try:
                    print("import, change log off ...", file=sys.stderr)
                    import_args = ["import", str(source)]
                    runs.append(run_command("import ", args.records, import_args, quiet_env))
                finally:
                    asyncio.run(drop_schema(dsn, quiet))
                exported = workdir / "out.jsonl"
                print("export ...", file=sys.stderr)
                export_args = ["export", "-o", str(exported)]
                runs.append(run_command("export", args.records, export_args, env))
                identical = None
                if args.verify:
                    identical = verify(dsn, exported, workdir, args.records)
                runs += into_existing(dsn, source, workdir, args.records, env)
            finally:
                asyncio.run(drop_schema(dsn, schema))
        print(report(runs, args.records, size_mb, identical))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def into_existing(
    dsn: str, source: Path, workdir: Path, records: int, env: dict[str, str]
) -> list[Run]:
    """Import into a store holding ``records`` other records, and psql's ``\\copy`` of the
    same rows into a bare table holding as many."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(init_schema(dsn, schema))
    try:
        preload_other(dsn, schema, True, records)
        print("import into a store that holds records ...", file=sys.stderr)
        into = {**env, "PGACTORS_SCHEMA": schema}
        imported = run_command("import into", records, ["import", str(source)], into)
        csv_path = workdir / "in.csv"
        write_csv(source, csv_path)
        print("psql \\copy into a bare table that holds rows ...", file=sys.stderr)
        copied = copy_into_bare(dsn, schema, csv_path, records)
        return [imported, copied]
    finally:
        asyncio.run(drop_schema(dsn, schema))


def verify(dsn: str, exported: Path, workdir: Path, records: int) -> bool:
    """Import the export into a new schema, export again, compare the files."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(init_schema(dsn, schema))
    env = {**os.environ, "PGACTORS_DSN": dsn, "PGACTORS_SCHEMA": schema}
    try:
        again = workdir / "again.jsonl"
        print("verify: import the export, export again ...", file=sys.stderr)
        run_command("import", records, ["import", str(exported)], env)
        run_command("export", records, ["export", "-o", str(again)], env)
        return filecmp.cmp(exported, again, shallow=False)
    finally:
        asyncio.run(drop_schema(dsn, schema))


def report(runs: list[Run], records: int, size_mb: float, identical: bool | None) -> str:
    """The markdown table and the target checks."""
    lines = [
        f"{records} records, {size_mb:.0f} MiB of JSONL (`python -m benchmarks.transfer`)",
        "",
        "| command | records/s | seconds | peak RSS (MB) | target |",
        "|---|---:|---:|---:|---|",
    ]
    copy = next((r for r in runs if r.name == "copy"), None)
    into = next((r for r in runs if r.name == "import into"), None)
    runs = [r for r in runs if r not in (copy, into)]
    for run in runs:
        target = EXPORT_TARGET if run.name == "export" else IMPORT_TARGET
        ok = run.rate >= target and run.peak_rss_mb < RSS_TARGET_MB
        name = f"`pgactors {run.name.strip()}`"
        if run.name == "import ":
            name = "`PGACTORS_CHANGES=off pgactors import`"
        lines.append(
            f"| {name} | {run.rate:,.0f} | {run.seconds:.1f} | "
            f"{run.peak_rss_mb:.0f} | >= {target:,}/s, < {RSS_TARGET_MB} MB: "
            f"{'PASS' if ok else 'FAIL'} |"
        )
    if copy is not None and into is not None:
        ratio = into.rate / copy.rate
        verdict = "PASS" if ratio >= COPY_RATIO_TARGET else "FAIL"
        lines += [
            "",
            f"Into tables that already hold {records:,} other rows:",
            "",
            "| command | records/s | seconds | vs \\copy |",
            "|---|---:|---:|---:|",
            f"| `pgactors import` (change feed on) | {into.rate:,.0f} | {into.seconds:.1f} | "
            f"{ratio:.2f}x |",
            f"| psql `\\copy` into a bare table | {copy.rate:,.0f} | {copy.seconds:.1f} | 1.00x |",
            "",
            f"{verdict} import >= {COPY_RATIO_TARGET}x of \\copy into a bare table: {ratio:.2f}x",
        ]
    if identical is not None:
        lines += ["", f"export -> import -> export identical: {identical}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
