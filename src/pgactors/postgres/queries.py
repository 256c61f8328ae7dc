"""The queries role: filtered pages, counts, aggregates, EXPLAIN, and path indexes."""

from __future__ import annotations

import hashlib
import json
import time
from decimal import Decimal
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql

from .. import query as queries
from .. import schema
from ..record import Record
from . import compiler
from .connection import Connections
from .ops import record_from_row

INDEX_CACHE_SECONDS = 30.0


def metric_value(function: str, value: Any) -> Any:
    """An aggregate's value as the in-memory backend gives it (numerics as int or float)."""
    if isinstance(value, Decimal):
        return float(value) if function == "avg" else queries.number(value)
    return value


class PostgresQueries:
    """Queries compiled to SQL for their filter (so none is prepared), and path indexes."""

    def __init__(self, db: Connections) -> None:
        self._db = db
        self._q = db.statements
        self._config = db.config
        self._names = schema.identifiers(db.config)
        self._index_cache: tuple[float, dict[str, frozenset[str]]] | None = None

    async def _query_rows(self, statement: compiler.Statement) -> list[tuple[Any, ...]]:
        query = statement.query.as_bytes(None)  # only fixed SQL and quoted identifiers
        return await self._db.fetch(query, statement.params, idempotent=True, prepare=False)

    async def query(self, q: queries.Query) -> list[tuple[Record, tuple[Any, ...]]]:
        result = []
        for row in await self._query_rows(await self._statement(q)):
            record = record_from_row(q.type, row[0], row[1:8])
            result.append((record, tuple(row[8:])))
        return result

    async def _indexed_paths(self, type: str) -> frozenset[str]:
        """Paths of ``type`` with a b-tree index (cached; other processes' changes show
        within ``INDEX_CACHE_SECONDS``)."""
        now = time.monotonic()
        if self._index_cache is None or now - self._index_cache[0] > INDEX_CACHE_SECONDS:
            found: dict[str, set[str]] = {}
            for index_type, path, _ in await self.indexes():
                found.setdefault(index_type, set()).add(path)
            cache = {t: frozenset(paths) for t, paths in found.items()}
            self._index_cache = (now, cache)
        return self._index_cache[1].get(type, frozenset())

    async def _statement(self, q: queries.Query) -> compiler.Statement:
        columns, source = self._q.composable("query_columns"), self._q.composable("query_from")
        return compiler.query_statement(q, await self._indexed_paths(q.type), columns, source)

    async def count(self, type: str, where: queries.Node) -> int:
        indexed = await self._indexed_paths(type)
        statement = compiler.count_statement(type, where, indexed, self._q.composable("query_from"))
        rows = await self._query_rows(statement)
        return int(rows[0][0])

    async def aggregate(self, spec: queries.Aggregate) -> list[dict[str, Any]]:
        indexed = await self._indexed_paths(spec.type)
        source = self._q.composable("query_from")
        result = []
        for row in await self._query_rows(compiler.aggregate_statement(spec, indexed, source)):
            values = dict(zip([p.text for p in spec.group_by], row, strict=False))
            for metric, value in zip(spec.metrics, row[len(spec.group_by) :], strict=True):
                values[metric.name] = metric_value(metric.function, value)
            result.append(values)
        return result

    async def explain(self, q: queries.Query) -> str:
        rows = await self._query_rows(compiler.explain_statement(await self._statement(q)))
        return "\n".join(row[0] for row in rows)

    def _index_name(self, type: str, path: str) -> str:
        digest = hashlib.sha256(f"{type}\x00{path}".encode()).hexdigest()[:12]
        return f"{self._config.table_prefix}_q_{digest}"

    async def create_index(self, type: str, path: queries.Path) -> str:
        name = self._index_name(type, path.text)
        if path.text == queries.ALL_DATA:
            # jsonb_path_ops: smaller and faster than the default opclass; it serves the
            # containment (data @> ...) that equality filters compile to.
            ddl = sql.SQL(
                "CREATE INDEX {concurrently} IF NOT EXISTS {name} ON {table} "
                "USING gin (data jsonb_path_ops) WHERE type = {type}"
            )
        else:
            # With id second, an equality on the path reads matches in id order (the
            # default ordering), so a page stops after its last row instead of sorting
            # every match.
            ddl = sql.SQL(
                "CREATE INDEX {concurrently} IF NOT EXISTS {name} ON {table} ({expr}, id) "
                "WHERE type = {type}"
            )
        parts = {
            "name": sql.Identifier(name),
            "table": sql.Identifier(self._config.schema, self._names["state"]),
            "expr": compiler.index_expression(path),
            "type": sql.Literal(type),
        }
        comment = sql.SQL("COMMENT ON INDEX {} IS {}").format(
            sql.Identifier(self._config.schema, name),
            sql.Literal(json.dumps({"pgactors_index": {"type": type, "path": path.text}})),
        )
        async with self._db.connection() as conn:
            try:
                await conn.execute(ddl.format(concurrently=sql.SQL("CONCURRENTLY"), **parts))
            except psycopg.errors.FeatureNotSupported:  # a partitioned table
                await conn.execute(ddl.format(concurrently=sql.SQL(""), **parts))
            await conn.execute(comment)
        self._index_cache = None
        return name

    async def drop_index(self, type: str, path: str) -> bool:
        name = self._index_name(type, path)
        async with self._db.connection() as conn:
            cur = await conn.execute(
                self._q.index_exists, {"schema": self._config.schema, "name": name}
            )
            if await cur.fetchone() is None:
                return False
            await conn.execute(
                sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(self._config.schema, name))
            )
        self._index_cache = None
        return True

    async def indexes(self) -> list[tuple[str, str, str]]:
        params = {"schema": self._config.schema, "table": self._names["state"]}
        result = []
        for name, comment in await self._db.read(self._q.list_indexes, params):
            info = json.loads(comment)["pgactors_index"]
            result.append((info["type"], info["path"], name))
        return sorted(result)
