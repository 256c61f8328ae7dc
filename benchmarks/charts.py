"""PNG charts (matplotlib, Agg): throughput and latency per workload, and the scale curve.

Figures are built with ``matplotlib.figure.Figure`` directly, without pyplot, so no GUI
backend or global state is involved; saving a PNG uses the Agg renderer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from benchmarks.harness import Result
from benchmarks.report import ScalePoint

_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")


def _save(figure: Figure, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    figure.savefig(tmp, format="png", dpi=110)
    os.replace(tmp, path)


def _workloads(results: Sequence[Result]) -> list[tuple[str, str]]:
    """``(name, axis label)`` per workload, in run order."""
    seen: dict[str, str] = {}
    for r in results:
        if r.name not in seen:
            unit = " [records/s]" if r.records_per_op > 1 else ""
            seen[r.name] = r.label + unit
    return list(seen.items())


def _grouped_barh(
    axes: Axes,
    names: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
) -> None:
    height = 0.8 / max(1, len(series))
    for index, (legend, values) in enumerate(series):
        positions = [row + (index - (len(series) - 1) / 2) * height for row in range(len(names))]
        axes.barh(
            positions, values, height=height, label=legend, color=_COLORS[index % len(_COLORS)]
        )
    axes.set_yticks(range(len(names)), names, fontsize=8)
    axes.grid(axis="x", alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")


def results_chart(results: Sequence[Result], path: Path, title: str) -> None:
    """Grouped bars: records/s (= ops/s) per workload at each concurrency, and p50/p99."""
    workloads = _workloads(results)
    levels = sorted({r.concurrency for r in results})
    by_key = {(r.name, r.concurrency): r for r in results}
    labels = [label for _, label in workloads]

    def column(level: int, attr: str) -> list[float]:
        values = []
        for name, _ in workloads:
            r = by_key.get((name, level))
            value = getattr(r, attr) if r is not None else None
            values.append(float(value) if value is not None else 0.0)
        return values

    figure = Figure(figsize=(15, 0.42 * len(workloads) + 2.2), layout="constrained")
    throughput, latency = figure.subplots(1, 2, sharey=True)
    _grouped_barh(
        throughput, labels, [(f"c={level}", column(level, "records_per_sec")) for level in levels]
    )
    throughput.set_xlabel("ops/s (records/s for batch calls), higher is better")
    throughput.set_title("Throughput")
    series = [
        (f"{pct} c={level}", column(level, f"{pct}_ms"))
        for level in levels
        for pct in ("p50", "p99")
    ]
    _grouped_barh(latency, labels, series)
    latency.set_xscale("log")
    latency.set_xlabel("latency per call, ms (log scale), lower is better")
    latency.set_title("Latency")
    throughput.invert_yaxis()  # once: the axes share y, so a second call would undo it
    figure.suptitle(title, fontsize=10)
    _save(figure, path)


def scale_chart(points: Sequence[ScalePoint], path: Path, title: str) -> None:
    """ops/s, p99 and memory (client peak RSS, table+index size) against the record count."""
    sizes = [p.records for p in points]
    figure = Figure(figsize=(15, 4.6), layout="constrained")
    throughput, latency, memory = figure.subplots(1, 3)
    for index, (name, legend) in enumerate(
        (("pgactors-save", "save (LWW)"), ("pgactors-load", "load"))
    ):
        runs = [p.get(name) for p in points]
        xs = [size for size, r in zip(sizes, runs, strict=True) if r is not None]
        done = [r for r in runs if r is not None]
        color = _COLORS[index]
        throughput.plot(xs, [r.ops_per_sec for r in done], "o-", color=color, label=legend)
        latency.plot(xs, [r.p99_ms or 0.0 for r in done], "o-", color=color, label=legend)
        memory.plot(
            xs,
            [r.peak_rss_mib or 0.0 for r in done],
            "o-",
            color=color,
            label=f"client peak RSS, {legend}",
        )
    memory.plot(
        sizes,
        [p.relation_bytes / 2**20 for p in points],
        "s--",
        color=_COLORS[2],
        label="table + indexes (server)",
    )
    for axes, ylabel, heading in (
        (throughput, "ops/s", "Throughput"),
        (latency, "p99 ms", "p99 latency"),
        (memory, "MiB (log scale)", "Memory"),
    ):
        axes.set_xscale("log")
        axes.set_xlabel("records in the table")
        axes.set_ylabel(ylabel)
        axes.set_title(heading)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    throughput.set_ylim(bottom=0)
    latency.set_ylim(bottom=0)
    memory.set_yscale("log")
    figure.suptitle(title, fontsize=10)
    _save(figure, path)
