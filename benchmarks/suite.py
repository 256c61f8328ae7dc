"""The workload registry and the shared context every workload runs in.

A :class:`Workload` is either a Python :data:`~benchmarks.harness.Op` factory (measured
in this process by :func:`benchmarks.harness.measure`) or a pgbench script factory (run
as a separate process). Adding a peer (SQLAlchemy, another driver...) is one factory and
one registry entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benchmarks import harness, peers, pgbench, workloads
from benchmarks.harness import Op, Result
from pgactors import Store


@dataclass
class Bench:
    """Everything a workload needs: connections, key space, payload and run settings."""

    dsn: str
    schema: str
    records: int
    duration: int
    warmup: float
    workdir: Path
    payload: dict[str, Any]
    keys: list[str]
    store: Store
    peer_pool: peers.Pool
    admin: psycopg.AsyncConnection[Any]
    pgbench_payload: pgbench.PayloadMode = "literal"
    checkpoints: bool = field(default=True)

    async def checkpoint(self) -> None:
        """Best-effort CHECKPOINT so each workload starts from the same WAL/dirty state."""
        if not self.checkpoints:
            return
        try:
            await self.admin.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            self.checkpoints = False

    async def vacuum_analyze(self) -> None:
        """VACUUM ANALYZE the state table (after the preload)."""
        table = sql.Identifier(self.schema, "pgactors_state")
        await self.admin.execute(sql.SQL("VACUUM ANALYZE {}").format(table))


@dataclass(frozen=True)
class Workload:
    """One named workload: a Python op factory or a pgbench script factory."""

    name: str
    system: str
    kind: str
    label: str
    op: Callable[[Bench], Op] | None = None
    script: Callable[[Bench], pgbench.Script] | None = None
    default: bool = True

    async def run(self, bench: Bench, concurrency: int, seed: int = 0) -> Result:
        """Measure this workload at ``concurrency`` for ``bench.duration`` seconds."""
        await bench.checkpoint()
        if self.script is not None:
            return await pgbench.measure(
                bench.dsn,
                self.script(bench),
                kind=self.kind,
                label=self.label,
                concurrency=concurrency,
                duration=bench.duration,
                workdir=bench.workdir,
            )
        assert self.op is not None
        return await harness.measure(
            self.op(bench),
            system=self.system,
            kind=self.kind,
            label=self.label,
            concurrency=concurrency,
            duration=bench.duration,
            warmup=bench.warmup,
            seed=seed,
        )


WORKLOADS: tuple[Workload, ...] = (
    # Last-write-wins upsert (pgactors' save_lww statement).
    Workload(
        "pgbench-save",
        "pgbench",
        "save",
        "pgbench upsert (save_lww)",
        script=lambda b: pgbench.upsert_script(b.schema, b.records, b.payload, b.pgbench_payload),
    ),
    Workload(
        "psycopg-save",
        "psycopg",
        "save",
        "psycopg peer upsert",
        op=lambda b: peers.upsert(b.peer_pool, b.schema, b.keys, b.payload),
    ),
    Workload(
        "pgactors-save",
        "pgactors",
        "save",
        "pgactors save (LWW)",
        op=lambda b: workloads.save_lww(b.store, b.keys, b.payload),
    ),
    # Point read (pgactors' load statement).
    Workload(
        "pgbench-load",
        "pgbench",
        "load",
        "pgbench select (load)",
        script=lambda b: pgbench.select_script(b.schema, b.records),
    ),
    Workload(
        "psycopg-load",
        "psycopg",
        "load",
        "psycopg peer select",
        op=lambda b: peers.select(b.peer_pool, b.schema, b.keys),
    ),
    Workload(
        "pgactors-load",
        "pgactors",
        "load",
        "pgactors load",
        op=lambda b: workloads.load(b.store, b.keys),
    ),
    # Compare-and-set: read the version, write only if it is unchanged.
    Workload(
        "pgbench-cas",
        "pgbench",
        "cas",
        "pgbench select + save_cas",
        script=lambda b: pgbench.cas_script(b.schema, b.records, b.payload, b.pgbench_payload),
        default=False,
    ),
    Workload(
        "psycopg-cas",
        "psycopg",
        "cas",
        "psycopg peer select + CAS update",
        op=lambda b: peers.cas(b.peer_pool, b.schema, b.keys, b.payload),
    ),
    Workload(
        "pgactors-cas",
        "pgactors",
        "cas",
        "pgactors load + save (CAS)",
        op=lambda b: workloads.save_cas(b.store, b.keys, b.payload),
    ),
)

BY_NAME: dict[str, Workload] = {w.name: w for w in WORKLOADS}


def select_workloads(spec: str | None) -> list[Workload]:
    """The default workloads, ``all``, or a comma-separated list of names (run in registry
    order)."""
    if spec is None or spec == "default":
        return [w for w in WORKLOADS if w.default]
    if spec == "all":
        return list(WORKLOADS)
    names = {name.strip() for name in spec.split(",") if name.strip()}
    unknown = sorted(names - set(BY_NAME))
    if unknown:
        raise ValueError(
            f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(BY_NAME)}"
        )
    return [w for w in WORKLOADS if w.name in names]
