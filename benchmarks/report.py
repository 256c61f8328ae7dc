"""The markdown table and the JSON file."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import Result


def _baseline(results: Sequence[Result], system: str, kind: str, concurrency: int) -> Result | None:
    for result in results:
        if (result.system, result.kind, result.concurrency) == (system, kind, concurrency):
            return result
    return None


def ratio(result: Result, baseline: Result | None) -> float | None:
    """``result`` ops/s over the baseline's, or None without a usable baseline."""
    if baseline is None or baseline.ops_per_sec <= 0:
        return None
    return result.ops_per_sec / baseline.ops_per_sec


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def markdown_table(results: Sequence[Result]) -> str:
    """One row per result, in run order, with ratios to pgbench and the psycopg peer."""
    lines = [
        "| workload | concurrency | ops/s | p50 ms | p99 ms | ratio vs pgbench "
        "| ratio vs psycopg peer |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        vs_pgbench = ratio(r, _baseline(results, "pgbench", r.kind, r.concurrency))
        vs_peer = ratio(r, _baseline(results, "psycopg", r.kind, r.concurrency))
        lines.append(
            f"| {r.label} | {r.concurrency} | {r.ops_per_sec:,.0f} | {_ms(r.p50_ms)} "
            f"| {_ms(r.p99_ms)} | {_ratio(vs_pgbench)} | {_ratio(vs_peer)} |"
        )
    return "\n".join(lines)


def conflict_notes(results: Sequence[Result]) -> list[str]:
    """One line per compare-and-set run: conflicts retried (pgbench's are not retried)."""
    notes = []
    for r in results:
        if r.kind != "cas":
            continue
        if r.system == "pgbench":
            notes.append(f"- {r.label} c={r.concurrency}: conflicts are not retried or counted")
        else:
            notes.append(
                f"- {r.label} c={r.concurrency}: {r.conflicts} version conflict(s) retried "
                f"over {r.ops} successful operations"
            )
    return notes


def results_rows(results: Sequence[Result]) -> list[dict[str, Any]]:
    """Results as dicts, with the ratios the table shows."""
    rows = []
    for r in results:
        row = dataclasses.asdict(r)
        row["ratio_vs_pgbench"] = ratio(r, _baseline(results, "pgbench", r.kind, r.concurrency))
        row["ratio_vs_psycopg"] = ratio(r, _baseline(results, "psycopg", r.kind, r.concurrency))
        rows.append(row)
    return rows


def write_json(path: Path, meta: Mapping[str, Any], results: Sequence[Result]) -> None:
    """Write ``{"meta": ..., "results": [...]}``."""
    document = {"meta": dict(meta), "results": results_rows(results)}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
