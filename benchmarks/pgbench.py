"""pgbench baselines: pgactors' statements as custom pgbench scripts, run by the wheel's pgbench.

Each script is one pgbench "transaction" per logical operation, built from the same
``queries.sql`` text as the store (see :mod:`benchmarks.statements`): ``%(type)s`` becomes
the literal type, ``%(id)s`` becomes ``'k' || :k`` with ``\\set k random(1, N)``, and
``%(data)s`` becomes the payload, either as a SQL literal written into the script
(``literal``, the default) or as a pgbench variable bound as a parameter on every
execution (``param``, set with ``-D data=...``).

Throughput is pgbench's ``tps = ... (without initial connection time)``; per-transaction
latencies come from its ``--log`` files, so p50/p99 are computed exactly as for the
Python workloads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from benchmarks.harness import RECORD_TYPE, Latencies, Result, vm_hwm_kib
from benchmarks.statements import query
from pgactors.embedded import bin_path

PayloadMode = Literal["literal", "param"]

_TPS_RE = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
_LATENCY_RE = re.compile(r"^latency average = ([0-9.]+) ms", re.MULTILINE)
_PROCESSED_RE = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)
_FAILED_RE = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)
_VARIABLE_RE = re.compile(r":[A-Za-z0-9_]")


class PgbenchError(RuntimeError):
    """pgbench failed or printed something this module cannot parse."""


@dataclass(frozen=True)
class Script:
    """A pgbench custom script and the ``-D`` variables it needs."""

    name: str
    text: str
    defines: dict[str, str]


def _one_line(statement: str) -> str:
    return " ".join(statement.split())


def _bind(
    statement: str, payload: dict[str, Any] | None, mode: PayloadMode
) -> tuple[str, dict[str, str]]:
    """Replace psycopg placeholders with pgbench literals and variables."""
    text = _one_line(statement)
    text = text.replace("%(type)s", "'" + RECORD_TYPE + "'")
    text = text.replace("%(id)s", "('k' || :k)")
    text = text.replace("%(expected)s", ":version")
    text = text.replace("%(ttl)s", "NULL").replace("%(sliding)s", "false")  # no expiry
    defines: dict[str, str] = {}
    if "%(data)s" in text:
        if payload is None:
            raise ValueError("this statement writes data: a payload is required")
        if mode == "param":
            text = text.replace("%(data)s", ":data")
            defines["data"] = json.dumps(payload, separators=(",", ":"))
        else:
            # The default ", " and ": " separators matter: pgbench would read ":12345" in
            # compact JSON as a variable reference, even inside a quoted literal.
            literal = json.dumps(payload)
            if _VARIABLE_RE.search(literal):
                raise ValueError("the payload text contains ':<name>', which pgbench substitutes")
            text = text.replace("%(data)s", "'" + literal.replace("'", "''") + "'")
    if "%(" in text:
        raise ValueError(f"unbound placeholder left in {text[:200]!r}")
    return text, defines


def upsert_script(
    schema_name: str, records: int, payload: dict[str, Any], mode: PayloadMode = "literal"
) -> Script:
    """pgactors ``save_lww``: insert or bump the version of a random key."""
    statement, defines = _bind(query("save_lww", schema_name), payload, mode)
    text = f"\\set k random(1, {records})\n{statement};\n"
    return Script("upsert", text, defines)


def select_script(schema_name: str, records: int) -> Script:
    """pgactors ``load``: ``SELECT data, version, created_at, updated_at`` of a random key."""
    statement, defines = _bind(query("load", schema_name), None, "literal")
    text = f"\\set k random(1, {records})\n{statement};\n"
    return Script("select", text, defines)


BARE_TABLE = "bare"
"""A table with a primary key and nothing else: the ceiling for pgactors' writes and reads."""


def bare_upsert_script(
    schema_name: str, records: int, payload: dict[str, Any], mode: PayloadMode = "literal"
) -> Script:
    """A plain upsert of a random key into the bare table (no version, no feed, no index)."""
    statement = (
        f'INSERT INTO "{schema_name}".{BARE_TABLE} (type, id, data) '
        "VALUES (%(type)s, %(id)s, %(data)s) "
        "ON CONFLICT (type, id) DO UPDATE SET data = EXCLUDED.data"
    )
    bound, defines = _bind(statement, payload, mode)
    return Script("bare-upsert", f"\\set k random(1, {records})\n{bound};\n", defines)


def bare_select_script(schema_name: str, records: int) -> Script:
    """A point select of a random key's data from the bare table."""
    statement = (
        f'SELECT data FROM "{schema_name}".{BARE_TABLE} WHERE type = %(type)s AND id = %(id)s'
    )
    bound, defines = _bind(statement, None, "literal")
    return Script("bare-select", f"\\set k random(1, {records})\n{bound};\n", defines)


def cas_script(
    schema_name: str, records: int, payload: dict[str, Any], mode: PayloadMode = "literal"
) -> Script:
    """pgactors ``load`` then ``save_cas`` with the version read (no retry on conflict)."""
    load_statement, _ = _bind(query("load", schema_name), None, mode)
    cas_statement, defines = _bind(query("save_cas", schema_name), payload, mode)
    text = f"\\set k random(1, {records})\n{load_statement} \\gset\n{cas_statement};\n"
    return Script("cas", text, defines)


@dataclass(frozen=True)
class PgbenchRun:
    """What one pgbench run reported."""

    tps: float
    latency_avg_ms: float
    processed: int
    failed: int
    latencies_ns: list[int]
    output: str
    peak_rss_kib: int | None
    """Peak RSS of the pgbench process (Linux only)."""


def parse_output(output: str) -> tuple[float, float, int, int]:
    """``(tps, latency average ms, transactions processed, failed)`` from pgbench's summary."""
    found = [regex.search(output) for regex in (_TPS_RE, _LATENCY_RE, _PROCESSED_RE)]
    if any(match is None for match in found):
        raise PgbenchError(f"cannot parse pgbench output:\n{output}")
    tps, latency, processed = (match.group(1) for match in found if match is not None)
    failed = _FAILED_RE.search(output)
    return float(tps), float(latency), int(processed), int(failed.group(1)) if failed else 0


def read_logs(prefix: Path) -> list[int]:
    """Per-transaction latencies (ns) from pgbench ``--log`` files named ``<prefix>.<pid>*``.

    Each line is ``client transaction time_us script epoch epoch_us``.
    """
    latencies: list[int] = []
    for path in sorted(prefix.parent.glob(prefix.name + ".*")):
        with path.open() as log:
            for line in log:
                fields = line.split()
                if len(fields) >= 3 and fields[2].isdigit():
                    latencies.append(int(fields[2]) * 1000)
    return latencies


FEED_OFF = "-c pgactors.changes=off"
"""Session option that keeps a connection's writes out of the change log (see workloads)."""


def _env() -> dict[str, str]:
    # PGHOST, PGPORT, ... in the caller's environment must not redirect pgbench.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    env["PGOPTIONS"] = FEED_OFF
    return env


def _run_process(argv: list[str], cwd: Path, timeout: float) -> tuple[int, str, int | None]:
    """Run ``argv`` to completion; ``(exit code, output, peak RSS in KiB or None)``.

    The peak RSS is the process's ``VmHWM``, sampled every 0.1 s while it runs (pgbench
    allocates what it needs at startup, so the last samples hold its peak). Not
    ``ru_maxrss``: see :func:`benchmarks.harness.vm_hwm_kib`. Runs in a worker thread.
    """
    with tempfile.TemporaryFile(dir=cwd) as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=_env(),
        )
        deadline = time.monotonic() + timeout
        peak_kib: int | None = None
        try:
            while proc.poll() is None:
                sample = vm_hwm_kib(proc.pid)
                if sample is not None:
                    peak_kib = max(peak_kib or 0, sample)
                if time.monotonic() > deadline:
                    raise PgbenchError(f"pgbench did not finish within {timeout:.0f} s")
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        output = out.read().decode(errors="replace")
    return proc.returncode, output, peak_kib


async def run(
    dsn: str, script: Script, *, concurrency: int, duration: int, workdir: Path
) -> PgbenchRun:
    """Run pgbench with ``script`` for ``duration`` seconds; the DSN is its dbname argument."""
    run_dir = workdir / f"{script.name}-c{concurrency}"
    run_dir.mkdir(parents=True, exist_ok=True)
    script_path = run_dir / "script.sql"
    script_path.write_text(script.text)
    log_prefix = run_dir / "log"
    argv = [
        str(bin_path("pgbench")),
        "-n",
        "-M",
        "prepared",
        "-c",
        str(concurrency),
        "-j",
        str(min(concurrency, 2)),
        "-T",
        str(duration),
        "-f",
        str(script_path),
        "--log",
        f"--log-prefix={log_prefix}",
    ]
    for name, value in script.defines.items():
        argv += ["-D", f"{name}={value}"]
    argv.append(dsn)
    returncode, output, peak_kib = await asyncio.to_thread(
        _run_process, argv, run_dir, duration + 120
    )
    if returncode != 0:
        raise PgbenchError(f"pgbench exited with code {returncode}:\n{output}")
    tps, latency, processed, failed = parse_output(output)
    return PgbenchRun(tps, latency, processed, failed, read_logs(log_prefix), output, peak_kib)


async def measure(
    dsn: str,
    script: Script,
    *,
    kind: str,
    label: str,
    name: str,
    concurrency: int,
    duration: int,
    workdir: Path,
) -> Result:
    """Run pgbench and turn its report into a :class:`~benchmarks.harness.Result`."""
    outcome = await run(dsn, script, concurrency=concurrency, duration=duration, workdir=workdir)
    if outcome.failed:
        raise PgbenchError(f"{outcome.failed} pgbench transactions failed:\n{outcome.output}")
    result = Result.summarise(
        Latencies.of(outcome.latencies_ns),
        system="pgbench",
        kind=kind,
        label=label,
        name=name,
        concurrency=concurrency,
        seconds=outcome.processed / outcome.tps if outcome.tps else float(duration),
        ops_per_sec=outcome.tps,
        mean_ms=outcome.latency_avg_ms,
    )
    if outcome.peak_rss_kib is None:
        return result
    return dataclasses.replace(result, peak_rss_mib=round(outcome.peak_rss_kib / 1024, 1))
