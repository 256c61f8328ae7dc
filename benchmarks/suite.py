"""The workload registry and the shared context every workload runs in.

A :class:`Workload` is either a pgbench script factory (run by the parent as a separate
pgbench process) or the name of an op factory in one Python system's module (run in a
fresh subprocess by :mod:`benchmarks.runner`). Adding a workload or a peer is one
factory and one registry entry.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benchmarks import harness, peers, pgbench, runner
from benchmarks.harness import Result
from benchmarks.statements import query
from pgactors import Store, StoreConfig
from pgactors.postgres.feed import listener_name

HISTORY_OTHER_TYPE = "bench-history"
"""The type whose history is enabled while ``history="other"`` workloads run."""


@dataclass
class Bench:
    """Everything a workload needs: server, schema, key space, payload and run settings."""

    dsn: str
    schema: str
    records: int
    duration: int
    warmup: float
    pool_size: int
    workdir: Path
    payload: dict[str, Any]
    admin: psycopg.AsyncConnection[Any]
    pgbench_payload: pgbench.PayloadMode = "literal"
    batch: int = harness.BATCH_SIZE
    checkpoints: bool = field(default=True)

    def statements(self) -> dict[str, str]:
        """The psycopg peer's SQL text for this schema."""
        return {name: query(name, self.schema) for name in peers.STATEMENTS}

    async def checkpoint(self) -> None:
        """Best-effort CHECKPOINT so each workload starts from the same WAL/dirty state."""
        if not self.checkpoints:
            return
        try:
            await self.admin.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            self.checkpoints = False

    async def preload(self) -> float:
        """Insert ``k1`` .. ``k<records>`` server side, VACUUM ANALYZE; return the seconds.

        One ``INSERT ... SELECT generate_series`` writes the rows a ``save_many`` would
        (version 1, the same JSONB) in a fraction of the time: 1M records take ~20 s.
        """
        table = sql.Identifier(self.schema, "pgactors_state")
        started = time.perf_counter()
        await self.admin.execute(
            sql.SQL(
                "INSERT INTO {} (type, id, version, data) "
                "SELECT %s, 'k' || g, 1, %s::jsonb FROM generate_series(1, %s::bigint) g"
            ).format(table),
            (harness.RECORD_TYPE, json.dumps(self.payload), self.records),
        )
        await self.admin.execute(sql.SQL("VACUUM ANALYZE {}").format(table))
        bare = sql.Identifier(self.schema, pgbench.BARE_TABLE)
        await self.admin.execute(
            sql.SQL(
                'CREATE TABLE IF NOT EXISTS {} (type text COLLATE "C", id text COLLATE "C", '
                "data jsonb, PRIMARY KEY (type, id))"
            ).format(bare)
        )
        await self.admin.execute(
            sql.SQL(
                "INSERT INTO {} (type, id, data) "
                "SELECT %s, 'k' || g, %s::jsonb FROM generate_series(1, %s::bigint) g "
                "ON CONFLICT DO NOTHING"
            ).format(bare),
            (harness.RECORD_TYPE, json.dumps(self.payload), self.records),
        )
        await self.admin.execute(sql.SQL("VACUUM ANALYZE {}").format(bare))
        return time.perf_counter() - started

    async def relation_bytes(self) -> int:
        """``pg_total_relation_size`` of the state table: heap, TOAST and indexes."""
        cur = await self.admin.execute(
            "SELECT pg_total_relation_size(%s::regclass)",
            (sql.Identifier(self.schema, "pgactors_state").as_string(),),
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0


@dataclass(frozen=True)
class Workload:
    """One named workload: a pgbench script factory or a Python op factory name."""

    name: str
    system: str
    kind: str
    label: str
    factory: str = ""
    script: Callable[[Bench], pgbench.Script] | None = None
    default: bool = True
    coalesce: bool = True
    changes: bool = False
    batched: bool = False
    # Version history during the run: "" none, "other" another type keeps history (the
    # bench type pays only the trigger's WHEN), "own" the bench type keeps history.
    history: str = ""
    # A change-feed listener connected during the run: the writers number their changes
    # as promptly as they do for a consumer (every 2 ms, against 50 ms with none).
    listener: bool = False

    async def run(self, bench: Bench, concurrency: int, seed: int = 0) -> Result:
        """Measure this workload at ``concurrency`` for ``bench.duration`` seconds."""
        await bench.checkpoint()
        async with history_enabled(bench, self.history), listener_connected(bench, self.listener):
            return await self._run(bench, concurrency, seed)

    async def _run(self, bench: Bench, concurrency: int, seed: int) -> Result:
        if self.script is not None:
            return await pgbench.measure(
                bench.dsn,
                self.script(bench),
                kind=self.kind,
                label=self.label,
                name=self.name,
                concurrency=concurrency,
                duration=bench.duration,
                workdir=bench.workdir,
            )
        task = runner.Task(
            name=self.name,
            system=self.system,
            kind=self.kind,
            label=self.label,
            factory=self.factory,
            dsn=bench.dsn,
            schema=bench.schema,
            records=bench.records,
            concurrency=concurrency,
            pool_size=bench.pool_size,
            duration=bench.duration,
            warmup=bench.warmup,
            seed=seed,
            batch=bench.batch,
            records_per_op=min(bench.batch, bench.records) if self.batched else 1,
            coalesce=self.coalesce,
            changes=self.changes,
            statements=bench.statements() if self.system == "psycopg" else {},
        )
        return await runner.run_isolated(task)


@asynccontextmanager
async def listener_connected(bench: Bench, connected: bool) -> AsyncIterator[None]:
    """A connection that LISTENs on the change feed's channel under the name pgactors'
    own listeners take, for the duration of the block (nothing if not ``connected``):
    to the writers, a consumer. It reads nothing, so its own work is not measured."""
    if not connected:
        yield
        return
    config = StoreConfig.resolve(bench.dsn, schema=bench.schema)
    async with await psycopg.AsyncConnection.connect(
        bench.dsn, autocommit=True, application_name=listener_name(config)
    ) as conn:
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(config.channel)))
        yield


@asynccontextmanager
async def history_enabled(bench: Bench, which: str) -> AsyncIterator[None]:
    """Enable version history of the bench type ("own") or another one ("other") for the
    duration of the block; nothing for ""."""
    if not which:
        yield
        return
    kept = harness.RECORD_TYPE if which == "own" else HISTORY_OTHER_TYPE
    async with await Store.connect(bench.dsn, schema=bench.schema, pool_max_size=1) as store:
        await store.enable_history(kept, keep_versions=10)
        try:
            yield
        finally:
            await store.disable_history(kept)


WORKLOADS: tuple[Workload, ...] = (
    # Writes: last-write-wins upsert of one record (pgactors' save_lww statement).
    Workload(
        "pgbench-save",
        "pgbench",
        "save",
        "pgbench upsert (save_lww)",
        script=lambda b: pgbench.upsert_script(b.schema, b.records, b.payload, b.pgbench_payload),
    ),
    Workload(
        "pgbench-bare-save",
        "pgbench",
        "save",
        "pgbench upsert, bare table (primary key only)",
        script=lambda b: pgbench.bare_upsert_script(
            b.schema, b.records, b.payload, b.pgbench_payload
        ),
    ),
    Workload("psycopg-save", "psycopg", "save", "psycopg peer upsert", "upsert"),
    Workload("sqlalchemy-save", "sqlalchemy", "save", "SQLAlchemy ORM get+modify+commit", "save"),
    Workload(
        "sqlalchemy-upsert",
        "sqlalchemy",
        "save",
        "SQLAlchemy on_conflict_do_update",
        "upsert",
        default=False,
    ),
    Workload("pgactors-save", "pgactors", "save", "pgactors save (LWW)", "save_lww"),
    Workload(
        "pgactors-save-history-other",
        "pgactors",
        "save",
        "pgactors save (LWW), another type keeps history",
        "save_lww",
        history="other",
        default=False,
    ),
    Workload(
        "pgactors-save-history",
        "pgactors",
        "save",
        "pgactors save (LWW), its type keeps history",
        "save_lww",
        history="own",
        default=False,
    ),
    Workload(
        "pgactors-save-nocoalesce",
        "pgactors",
        "save",
        "pgactors save (LWW), coalesce=False",
        "save_lww",
        coalesce=False,
    ),
    Workload(
        "pgactors-save-feed",
        "pgactors",
        "save",
        "pgactors save (LWW), change feed on",
        "save_lww",
        changes=True,
    ),
    Workload(
        "pgactors-save-listened",
        "pgactors",
        "save",
        "pgactors save (LWW), change feed on, a listener connected",
        "save_lww",
        changes=True,
        listener=True,
    ),
    Workload(
        "pgactors-save-many",
        "pgactors",
        "save",
        "pgactors save_many (100/call)",
        "save_many",
        batched=True,
    ),
    # Point reads (pgactors' load statement).
    Workload(
        "pgbench-load",
        "pgbench",
        "load",
        "pgbench select (load)",
        script=lambda b: pgbench.select_script(b.schema, b.records),
    ),
    Workload(
        "pgbench-bare-load",
        "pgbench",
        "load",
        "pgbench select, bare table",
        script=lambda b: pgbench.bare_select_script(b.schema, b.records),
    ),
    Workload("psycopg-load", "psycopg", "load", "psycopg peer select", "select"),
    Workload("sqlalchemy-load", "sqlalchemy", "load", "SQLAlchemy ORM session.get", "load"),
    Workload("pgactors-load", "pgactors", "load", "pgactors load", "load"),
    Workload(
        "pgactors-load-nocoalesce",
        "pgactors",
        "load",
        "pgactors load, coalesce=False",
        "load",
        coalesce=False,
    ),
    Workload(
        "pgactors-load-many",
        "pgactors",
        "load",
        "pgactors load_many (100/call)",
        "load_many",
        batched=True,
    ),
    # Read-modify-write: read the record, write it back only if it is unchanged.
    Workload(
        "pgbench-cas",
        "pgbench",
        "cas",
        "pgbench select + save_cas",
        script=lambda b: pgbench.cas_script(b.schema, b.records, b.payload, b.pgbench_payload),
    ),
    Workload("psycopg-cas", "psycopg", "cas", "psycopg peer select + CAS update", "cas"),
    Workload(
        "sqlalchemy-update",
        "sqlalchemy",
        "cas",
        "SQLAlchemy ORM get FOR UPDATE+commit",
        "update",
    ),
    Workload("pgactors-cas", "pgactors", "cas", "pgactors load + save (CAS)", "save_cas"),
    Workload("pgactors-update", "pgactors", "cas", "pgactors update", "update"),
)

BY_NAME: dict[str, Workload] = {w.name: w for w in WORKLOADS}

SCALE_WORKLOADS = ("pgactors-save", "pgactors-load")
"""What the scale curve runs at every size."""

HISTORY_WORKLOADS = ("pgactors-save", "pgactors-save-history-other", "pgactors-save-history")
"""What the version history comparison alternates: no history, another type's, its own."""


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
