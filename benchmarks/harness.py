"""The measuring loop, the data every workload shares, and the result of one run.

A workload is an :data:`Op`: an async callable doing one logical operation against the
database and returning how many version conflicts it retried. :func:`measure` runs an op
from ``concurrency`` asyncio tasks in a closed loop for a fixed time and times every call
with ``time.perf_counter_ns``.

This module imports nothing but the standard library: it is loaded by every measuring
subprocess, whichever system that process measures, so it must not add to their memory.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import string
import sys
import time
from array import array
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias

RECORD_TYPE = "bench"
"""The record type every workload reads and writes."""

BATCH_SIZE = 100
"""Distinct random keys per ``load_many``/``save_many`` call."""

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


def payload_text(payload: dict[str, Any]) -> str:
    """The payload as compact JSON (what pgactors sends)."""
    return json.dumps(payload, separators=(",", ":"))


def payload_bytes(payload: dict[str, Any]) -> int:
    """Size of the payload as compact JSON."""
    return len(payload_text(payload).encode())


def bump(data: Any) -> dict[str, Any]:
    """The read-modify-write every CAS workload applies to the document it read."""
    if not isinstance(data, dict):
        raise TypeError(f"expected the benchmark document, got {type(data).__name__}")
    return {**data, "counter": data["counter"] + 1}


@dataclass(frozen=True)
class Params:
    """What a workload factory needs besides its connection: the key space and the data.

    Keys are ``k1`` .. ``k<records>`` (pgbench builds the same ids as ``'k' || :k``) and
    are formatted per call, so no process holds a list of them: a key list would grow the
    client's memory with the key space and distort the scale curve.
    """

    records: int
    payload: dict[str, Any]
    batch: int = BATCH_SIZE

    def key(self, rng: random.Random) -> str:
        """A uniformly random key."""
        return f"k{rng.randrange(self.records) + 1}"

    def keys(self, rng: random.Random) -> list[str]:
        """``batch`` distinct random keys (all of them when the key space is smaller)."""
        count = min(self.batch, self.records)
        return [f"k{i + 1}" for i in rng.sample(range(self.records), count)]


class Latencies:
    """Per-call latencies, counted in 1 µs bins below 100 ms and kept exactly above.

    Memory is fixed (800 KB) whatever the throughput: a list of every latency would grow
    with the number of calls and make the faster systems look heavier in peak RSS.
    Percentiles are exact to the microsecond.
    """

    CAP_US = 100_000

    __slots__ = ("count", "counts", "overflow_ns", "total_ns")

    def __init__(self) -> None:
        self.counts = array("q", bytes(8 * self.CAP_US))
        self.overflow_ns: list[int] = []
        self.count = 0
        self.total_ns = 0

    def add(self, ns: int) -> None:
        """Record one latency in nanoseconds."""
        us = ns // 1000
        if us < self.CAP_US:
            self.counts[us] += 1
        else:
            self.overflow_ns.append(ns)
        self.count += 1
        self.total_ns += ns

    @classmethod
    def of(cls, values_ns: Iterable[int]) -> Latencies:
        """A histogram of already-collected latencies (pgbench's log files)."""
        histogram = cls()
        for ns in values_ns:
            histogram.add(ns)
        return histogram

    def mean_ms(self) -> float | None:
        return self.total_ns / self.count / 1e6 if self.count else None

    def percentile_ms(self, pct: float) -> float | None:
        """Nearest-rank percentile in milliseconds (microsecond resolution below 100 ms)."""
        if not self.count:
            return None
        rank = max(1, math.ceil(pct / 100 * self.count))
        seen = 0
        for us, n in enumerate(self.counts):
            if n:
                seen += n
                if seen >= rank:
                    return us / 1000
        return sorted(self.overflow_ns)[rank - seen - 1] / 1e6


@dataclass(frozen=True)
class Sample:
    """Raw timings of one closed-loop run."""

    latencies: Latencies
    elapsed_ns: int
    conflicts: int


@dataclass(frozen=True)
class Result:
    """One row of the report: a workload at one concurrency."""

    system: str  # "pgbench", "psycopg", "sqlalchemy" or "pgactors"
    kind: str  # "save" (last-write-wins), "load", "cas" (read, then conditional write)
    label: str
    concurrency: int
    ops: int
    seconds: float
    ops_per_sec: float
    mean_ms: float | None
    p50_ms: float | None
    p99_ms: float | None
    conflicts: int = 0
    name: str = ""
    records_per_op: int = 1
    peak_rss_mib: float | None = None

    @property
    def records_per_sec(self) -> float:
        """Records read or written per second (ops/s for single-record workloads)."""
        return self.ops_per_sec * self.records_per_op

    @classmethod
    def summarise(
        cls,
        latencies: Latencies,
        *,
        system: str,
        kind: str,
        label: str,
        name: str,
        concurrency: int,
        seconds: float,
        conflicts: int = 0,
        records_per_op: int = 1,
        ops_per_sec: float | None = None,
        mean_ms: float | None = None,
    ) -> Result:
        """Summarise a run; ``ops_per_sec``/``mean_ms`` override the computed ones."""
        if ops_per_sec is None:
            ops_per_sec = latencies.count / seconds if seconds > 0 else 0.0
        return cls(
            system=system,
            kind=kind,
            label=label,
            concurrency=concurrency,
            ops=latencies.count,
            seconds=seconds,
            ops_per_sec=ops_per_sec,
            mean_ms=latencies.mean_ms() if mean_ms is None else mean_ms,
            p50_ms=latencies.percentile_ms(50),
            p99_ms=latencies.percentile_ms(99),
            conflicts=conflicts,
            name=name,
            records_per_op=records_per_op,
        )


async def closed_loop(op: Op, *, concurrency: int, duration: float, seed: int = 0) -> Sample:
    """Run ``op`` back to back from ``concurrency`` tasks until ``duration`` seconds pass.

    Calls in flight at the deadline finish and count; elapsed time runs until the last
    task stops.
    """
    latencies = Latencies()
    conflicts = 0
    clock = time.perf_counter_ns
    started = clock()
    deadline = started + int(duration * 1e9)

    async def worker(index: int) -> None:
        nonlocal conflicts
        rng = random.Random(seed * 100_003 + index)
        record = latencies.add
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
    name: str,
    concurrency: int,
    duration: float,
    warmup: float,
    seed: int = 0,
    records_per_op: int = 1,
) -> Result:
    """Warm up (unrecorded: fills pools, prepares statements), then run and summarise."""
    if warmup > 0:
        await closed_loop(op, concurrency=concurrency, duration=warmup, seed=seed + 1)
    sample = await closed_loop(op, concurrency=concurrency, duration=duration, seed=seed)
    return Result.summarise(
        sample.latencies,
        system=system,
        kind=kind,
        label=label,
        name=name,
        concurrency=concurrency,
        seconds=sample.elapsed_ns / 1e9,
        conflicts=sample.conflicts,
        records_per_op=records_per_op,
    )


def vm_hwm_kib(pid: int | str = "self") -> int | None:
    """Peak resident set size of a live process since its ``exec``, in KiB (Linux only).

    ``ru_maxrss`` is no use for a child started by fork/vfork + exec: Linux carries the
    parent's high-water mark across the exec, so every child would report at least the
    parent's RSS. ``VmHWM`` belongs to the memory map that ``exec`` created.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mib() -> float:
    """Peak RSS of this process in MiB: ``VmHWM`` on Linux, else ``ru_maxrss``."""
    kib = vm_hwm_kib()
    if kib is not None:
        return kib / 1024
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # KiB on Linux and the BSDs, bytes on macOS.
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024
