"""The measuring loop, the data every workload shares, and the result of one run.

A workload is an :data:`Op`: an async callable doing one logical operation against the
database and returning how many version conflicts it retried. :func:`measure` runs an op
from ``concurrency`` asyncio tasks in a closed loop for a fixed time and times every call
with ``time.perf_counter_ns``.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import string
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

RECORD_TYPE = "bench"
"""The record type every workload reads and writes."""

Op: TypeAlias = Callable[[random.Random], Awaitable[int]]
"""One logical operation: gets the calling task's RNG, returns the conflicts it retried."""


def make_payload(blob_chars: int = 900, seed: int = 42) -> dict[str, Any]:
    """The ~1 KB JSON document written by every write workload."""
    rng = random.Random(seed)
    return {
        "name": "benchmark-actor",
        "counter": 12345,
        "active": True,
        "score": 0.75,
        "tags": ["alpha", "beta", "gamma"],
        "blob": "".join(rng.choices(string.ascii_letters + string.digits, k=blob_chars)),
    }


def payload_bytes(payload: dict[str, Any]) -> int:
    """Size of the payload as compact JSON (what pgactors sends)."""
    return len(json.dumps(payload, separators=(",", ":")).encode())


def make_keys(records: int) -> list[str]:
    """The key space: ids ``k1`` .. ``kN`` (pgbench builds the same ids as ``'k' || :k``)."""
    return [f"k{i}" for i in range(1, records + 1)]


@dataclass(frozen=True)
class Sample:
    """Raw timings of one closed-loop run."""

    latencies_ns: list[int]
    elapsed_ns: int
    conflicts: int


@dataclass(frozen=True)
class Result:
    """One row of the report: a workload at one concurrency."""

    system: str  # "pgactors", "psycopg" or "pgbench"
    kind: str  # "save" (last-write-wins upsert), "cas" (read + conditional write), "load"
    label: str
    concurrency: int
    ops: int
    seconds: float
    ops_per_sec: float
    mean_ms: float | None
    p50_ms: float | None
    p99_ms: float | None
    conflicts: int = 0

    @classmethod
    def from_latencies(
        cls,
        *,
        system: str,
        kind: str,
        label: str,
        concurrency: int,
        latencies_ns: Sequence[int],
        seconds: float,
        conflicts: int = 0,
        ops_per_sec: float | None = None,
        mean_ms: float | None = None,
    ) -> Result:
        """Summarise per-op latencies; ``ops_per_sec``/``mean_ms`` override the computed ones."""
        ordered = sorted(latencies_ns)
        ops = len(ordered)
        if ops_per_sec is None:
            ops_per_sec = ops / seconds if seconds > 0 else 0.0
        if mean_ms is None and ops:
            mean_ms = sum(ordered) / ops / 1e6
        return cls(
            system=system,
            kind=kind,
            label=label,
            concurrency=concurrency,
            ops=ops,
            seconds=seconds,
            ops_per_sec=ops_per_sec,
            mean_ms=mean_ms,
            p50_ms=_percentile_ms(ordered, 50),
            p99_ms=_percentile_ms(ordered, 99),
            conflicts=conflicts,
        )


def _percentile_ms(ordered: Sequence[int], pct: float) -> float | None:
    """Nearest-rank percentile of sorted nanosecond latencies, in milliseconds."""
    if not ordered:
        return None
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1] / 1e6


async def closed_loop(op: Op, *, concurrency: int, duration: float, seed: int = 0) -> Sample:
    """Run ``op`` back to back from ``concurrency`` tasks until ``duration`` seconds pass.

    Calls in flight at the deadline finish and count; elapsed time runs until the last
    task stops.
    """
    latencies: list[int] = []
    conflicts = 0
    clock = time.perf_counter_ns
    started = clock()
    deadline = started + int(duration * 1e9)

    async def worker(index: int) -> None:
        nonlocal conflicts
        rng = random.Random(seed * 100_003 + index)
        record = latencies.append
        while clock() < deadline:
            begin = clock()
            conflicts += await op(rng)
            record(clock() - begin)

    async with asyncio.TaskGroup() as group:
        for index in range(concurrency):
            group.create_task(worker(index))
    return Sample(latencies, clock() - started, conflicts)


async def measure(
    op: Op,
    *,
    system: str,
    kind: str,
    label: str,
    concurrency: int,
    duration: float,
    warmup: float,
    seed: int = 0,
) -> Result:
    """Warm up (unrecorded: fills pools, prepares statements), then run and summarise."""
    if warmup > 0:
        await closed_loop(op, concurrency=concurrency, duration=warmup, seed=seed + 1)
    sample = await closed_loop(op, concurrency=concurrency, duration=duration, seed=seed)
    return Result.from_latencies(
        system=system,
        kind=kind,
        label=label,
        concurrency=concurrency,
        latencies_ns=sample.latencies_ns,
        seconds=sample.elapsed_ns / 1e9,
        conflicts=sample.conflicts,
    )
