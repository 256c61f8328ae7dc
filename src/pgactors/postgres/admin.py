"""The admin role: migrations and partitions, verification, server and pool figures."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.errors import DeadlockDetected

from .. import schema
from ..errors import SchemaMismatch
from ..stats import FeedStats, Overview, PoolStats, ServerInfo, ServerStats
from .connection import RETRIES, Conn, Connections, read_schema_version, too_new, translated
from .feed import listener_name

EXACT_COUNT_BELOW = 100_000
"""``overview`` counts each type's records exactly while the table holds fewer rows."""

_NOT_PARTITIONED = sql.SQL("")
_PARTITION_BY = sql.SQL(" PARTITION BY HASH (id)")


class PostgresAdmin:
    """The schema (created and migrated under an advisory lock), and statistics."""

    def __init__(self, db: Connections) -> None:
        self._db = db
        self._q = db.statements
        self._config = db.config
        self._names = schema.identifiers(db.config)

    def pool_stats(self) -> PoolStats:
        """The pool's usage now."""
        return self._db.pool_stats()

    def retry_counts(self) -> dict[str, int]:
        """Statements retried so far, by reason."""
        return self._db.retry_counts()

    async def init_schema(self, partitions: int | None = None) -> int:
        """Apply missing migrations under an advisory lock; safe from many processes."""
        q = self._q
        lock_key = f"pgactors:{self._config.schema}.{self._config.table_prefix}"
        applied_now = 0
        async with self._db.connection() as conn, conn.transaction():
            await conn.execute(q.advisory_lock, {"key": lock_key})
            await conn.execute(q.create_schema)
            await conn.execute(q.create_migrations_table)
            cur = await conn.execute(q.applied_migrations)
            applied = {row[0] for row in await cur.fetchall()}
            newest = max(applied, default=0)
            if newest > schema.latest_version():
                raise too_new(newest, self._config)
            create_partitions = await self._check_partitioning(conn, partitions, 1 in applied)
            partition_by = _PARTITION_BY if create_partitions else _NOT_PARTITIONED
            for migration in schema.migrations():
                if migration.version in applied:
                    continue
                await conn.execute(q.compose(migration.text, partition_by=partition_by))
                if create_partitions and migration.version == 1:
                    await self._create_partitions(conn, create_partitions)
                await conn.execute(
                    q.record_migration, {"version": migration.version, "name": migration.name}
                )
                applied_now += 1
        return applied_now

    async def _check_partitioning(self, conn: Conn, partitions: int | None, installed: bool) -> int:
        """How many partitions to create (0: none); refuse a table partitioned otherwise."""
        if not partitions:
            return 0
        params = {"schema": self._config.schema, "table": self._names["state"]}
        cur = await conn.execute(self._q.state_partitioning, params)
        row = await cur.fetchone()
        table = f"{self._config.schema}.{self._names['state']}"
        if row is None and installed:
            raise SchemaMismatch(
                f"{table} is missing although its migration is recorded: restore it, or "
                "drop the schema (`pgactors reset`) and initialise again"
            )
        if row is None:
            return partitions
        if row[0] is None:
            raise SchemaMismatch(
                f"cannot partition {table}: it exists and is not partitioned; a table "
                "cannot be partitioned in place (create a new schema with partitions and "
                "copy the records into it)"
            )
        if row[0] != partitions:
            raise SchemaMismatch(
                f"{table} already has {row[0]} hash partitions, not {partitions}; the "
                "partition count cannot be changed in place"
            )
        return 0

    async def _create_partitions(self, conn: Conn, count: int) -> None:
        template = schema.queries()["create_state_partition"]
        for remainder in range(count):
            await conn.execute(
                self._q.compose(
                    template,
                    partition=sql.Identifier(schema.partition_name(self._config, remainder)),
                    modulus=sql.Literal(count),
                    remainder=sql.Literal(remainder),
                )
            )

    async def schema_version(self) -> int | None:
        async with self._db.connection() as conn:
            return await read_schema_version(conn, self._q, self._config)

    async def verify(self) -> list[tuple[str, str, bool]]:
        async with self._db.connection() as conn:
            cur = await conn.execute(self._q.schema_objects, {"schema": self._config.schema})
            present = {(kind, name) for kind, name in await cur.fetchall()}
        return [
            (obj.kind, obj.name, (obj.kind, obj.name) in present)
            for obj in schema.expected_objects(self._config)
        ]

    async def _server_facts(self, conn: Conn) -> tuple[float, str, int]:
        """The round trip of a ``SELECT 1`` (ms), the server's version, the database's size."""
        started = time.perf_counter()
        await conn.execute(self._q.ping)
        latency = (time.perf_counter() - started) * 1000
        cur = await conn.execute(self._q.server_facts)
        server_version, database_bytes = await cur.fetchone() or ("?", 0)
        return latency, server_version, int(database_bytes)

    async def server_info(self) -> ServerInfo:
        q = self._q
        async with self._db.connection() as conn:
            latency, server_version, database_bytes = await self._server_facts(conn)
            version = await read_schema_version(conn, q, self._config)
            types: dict[str, int] = {}
            table_bytes = index_bytes = 0
            if version is not None:
                cur = await conn.execute(q.types)
                types = {name: int(count) for name, count in await cur.fetchall()}
                cur = await conn.execute(
                    q.state_sizes, {"schema": self._config.schema, "table": self._names["state"]}
                )
                table_bytes, index_bytes = await cur.fetchone() or (0, 0)
        return ServerInfo(
            server_version,
            latency,
            version,
            types,
            int(table_bytes),
            int(index_bytes),
            int(database_bytes),
        )

    async def server_stats(self) -> ServerStats:
        q = self._q
        table = {"schema": self._config.schema, "table": self._names["state"]}
        listener = {"listener": listener_name(self._config)}
        async with self._db.connection() as conn:
            cur = await conn.execute(q.types)
            types = {name: int(count) for name, count in await cur.fetchall()}
            cur = await conn.execute(q.state_stats, table)
            row = await cur.fetchone()
            assert row is not None
            partitions, table_bytes, toast, index, live, dead, vacuum, analyze, writes = row
            cur = await conn.execute(q.activity_stats, listener)
            connections, active, listeners, queue = await cur.fetchone() or (0, 0, 0, 0.0)
            recent = None
            if self._config.changes:
                cur = await conn.execute(q.writes_last_minute)
                recent_row = await cur.fetchone()
                recent = int(recent_row[0]) if recent_row else 0
            cur = await conn.execute(q.reminder_stats)
            reminders, overdue, oldest_overdue = await cur.fetchone() or (0, 0, None)
        feed = await self.feed_stats()
        return ServerStats(
            types=types,
            partitions=int(partitions),
            heap_bytes=int(table_bytes) - int(toast),
            toast_bytes=int(toast),
            index_bytes=int(index),
            live_rows=int(live),
            dead_rows=int(dead),
            last_autovacuum=vacuum,
            last_autoanalyze=analyze,
            writes_total=int(writes),
            writes_last_minute=recent,
            changes_rows=feed.rows,
            changes_bytes=feed.bytes,
            connections=int(connections),
            active_connections=int(active),
            listeners=int(listeners),
            notification_queue_usage=float(queue),
            reminders=int(reminders),
            reminders_overdue=int(overdue),
            oldest_overdue_reminder=oldest_overdue,
        )

    async def overview(self) -> Overview:
        """The dashboard's figures: catalog statistics, index probes, no table scans."""
        q = self._q
        table = {"schema": self._config.schema, "table": self._names["state"]}
        async with self._db.connection() as conn:
            latency, server_version, database_bytes = await self._server_facts(conn)
            cur = await conn.execute(q.state_stats, table)
            row = await cur.fetchone()
            assert row is not None
            _, table_bytes, _, index_bytes, live, _, _, _, writes = row
            cur = await conn.execute(q.activity_stats, {"listener": listener_name(self._config)})
            connections, active, _, _ = await cur.fetchone() or (0, 0, 0, 0.0)
            types, estimated = await self._type_counts(conn, int(live))
            cur = await conn.execute(q.feed_position)
            last_position, last_at, pending = await cur.fetchone() or (0, None, 0)
            cur = await conn.execute(q.reminder_stats)
            reminders, overdue, oldest_overdue = await cur.fetchone() or (0, 0, None)
        return Overview(
            server_version=server_version,
            latency_ms=latency,
            database_bytes=int(database_bytes),
            table_bytes=int(table_bytes),
            index_bytes=int(index_bytes),
            connections=int(connections),
            active_connections=int(active),
            live_rows=int(live),
            writes_total=int(writes),
            types=types,
            types_estimated=estimated,
            last_position=int(last_position),
            last_change_at=last_at,
            pending_changes=int(pending),
            reminders=int(reminders),
            reminders_overdue=int(overdue),
            oldest_overdue_reminder=oldest_overdue,
        )

    async def _type_counts(self, conn: Conn, live_rows: int) -> tuple[dict[str, int], bool]:
        """Exact counts for a small table; else estimates from the planner's statistics."""
        q = self._q
        if live_rows < EXACT_COUNT_BELOW:
            cur = await conn.execute(q.types)
            return {name: int(count) for name, count in await cur.fetchall()}, False
        cur = await conn.execute(q.type_names)
        names = [name for (name,) in await cur.fetchall()]
        params = {"schema": self._config.schema, "table": self._names["state"]}
        cur = await conn.execute(q.type_statistics, params)
        stats = await cur.fetchone()
        return estimate_counts(names, stats, live_rows), True

    async def server_time(self) -> datetime:

        rows = await self._db.read(self._q.server_time, {})
        value: datetime = rows[0][0]
        return value

    async def drop_schema(self) -> None:
        # Dropping locks the tables in one order; writers, triggers and the sequencer
        # (perhaps this store's own, still numbering its last writes) take them in
        # another, so the drop may be a deadlock victim: it is atomic, so run it again.
        for attempt in range(RETRIES + 1):
            with translated(self._config):
                try:
                    async with self._db.pool.connection() as conn, conn.transaction():
                        await conn.execute(self._q.drop_schema)
                    return
                except DeadlockDetected:
                    if attempt == RETRIES:
                        raise
                    self._db.retries["deadlock"] += 1

    async def feed_stats(self) -> FeedStats:
        params = {"schema": self._config.schema, "table": self._names["changes"]}
        rows = await self._db.read(self._q.feed_stats, params)
        last, pruned, oldest, count, size = rows[0]
        return FeedStats(int(last), int(pruned), oldest, int(count), int(size or 0))


def estimate_counts(
    names: list[str], stats: tuple[Any, ...] | None, live_rows: int
) -> dict[str, int]:
    """Each type's share of ``live_rows`` as the planner would estimate it.

    ``stats``: ``(most common types, their frequencies, n_distinct)`` from ``pg_stats``,
    or None before the table was first analyzed (then every type gets an equal share).
    """
    if not names:
        return {}
    if stats is None or stats[0] is None:
        share = live_rows / len(names)
        return {name: max(1, round(share)) for name in names}
    common = dict(zip(stats[0], stats[1], strict=True))
    n_distinct = float(stats[2])
    distinct = -n_distinct * live_rows if n_distinct < 0 else n_distinct
    others = max(distinct, len(names)) - len(common)
    rest = max(0.0, 1.0 - sum(common.values())) / max(others, 1.0)
    return {name: max(1, round(common.get(name, rest) * live_rows)) for name in names}
