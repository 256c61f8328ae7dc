"""The transfer role: export from one snapshot, and import with COPY."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql

from .. import query as queries
from .. import schema
from ..config import StoreConfig, redact
from ..errors import ImportAborted
from ..history import HistoryPolicy, PastVersion
from ..jsonl import ImportRow
from ..record import Record
from ..transfer import ImportOutcome, OnConflict, conflict_error
from . import compiler
from .connection import Conn, Connections, Statements, json_list
from .history import restore_on
from .ops import record_from_row

# Errors that one bad row causes; the chunk is split to find it and the rest is written.
ROW_ERRORS = (
    psycopg.DataError,
    psycopg.errors.CheckViolation,
    psycopg.errors.NotNullViolation,
    psycopg.errors.ProgramLimitExceeded,
)


# An import's changes are numbered this many per statement (about a quarter second here).
IMPORT_PASS_ROWS = 100_000

_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # the header, no flags, no extension
_COPY_TRAILER = b"\xff\xff"
_COPY_FIELDS = b"\x00\x08"
_NULL_FIELD = b"\xff\xff\xff\xff"
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_int4 = struct.Struct(">i").pack
_int8_field = struct.Struct(">iq").pack


# Rows encoded between two turns of the event loop (about a millisecond): the statement
# of the chunk before, waiting for its next round trip, is not held up longer.
_ENCODE_SLICE = 200


def copy_block(rows: list[ImportRow]) -> bytes:
    """Rows in COPY's binary format: (type, id, version, data, payload, manifest,
    created_at, updated_at)."""
    return b"".join((_COPY_SIGNATURE, copy_rows(rows), _COPY_TRAILER))


async def copy_block_yielding(rows: list[ImportRow]) -> bytes:
    """:func:`copy_block`, letting other tasks run every ``_ENCODE_SLICE`` rows."""
    parts = [_COPY_SIGNATURE]
    for start in range(0, len(rows), _ENCODE_SLICE):
        if start:
            await asyncio.sleep(0)
        parts.append(copy_rows(rows[start : start + _ENCODE_SLICE]))
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


def copy_rows(rows: list[ImportRow]) -> bytes:
    """The rows of a COPY block, without its header and trailer. Nothing is escaped,
    and jsonb's binary form is a version byte (1) then the text, so the data goes as it
    came."""
    parts: list[bytes] = []
    add = parts.append
    for r in rows:
        add(_COPY_FIELDS)
        for text in (r.type, r.id):
            raw = text.encode()
            add(_int4(len(raw)))
            add(raw)
        add(_NULL_FIELD if r.version is None else _int8_field(8, r.version))
        if r.text is None:
            add(_NULL_FIELD)
        else:
            add(_int4(len(r.text) + 1))
            add(b"\x01")
            add(r.text)
        if r.payload is None:
            add(_NULL_FIELD)
            add(_NULL_FIELD)
        else:
            manifest = (r.manifest or "").encode()
            add(_int4(len(r.payload)))
            add(r.payload)
            add(_int4(len(manifest)))
            add(manifest)
        for at in (r.created_at, r.updated_at):
            add(_NULL_FIELD if at is None else _int8_field(8, (at - _PG_EPOCH) // _MICROSECOND))
    return b"".join(parts)


class PostgresImporter:
    """Writes import chunks on one connection, inside the import's transaction."""

    def __init__(
        self, conn: Conn, queries: Statements, on_conflict: OnConflict, config: StoreConfig
    ) -> None:
        self._conn = conn
        self._q = queries
        self._on_conflict = on_conflict
        self._config = config
        # COPY straight into the table is the fast path of a restore into an empty
        # schema; after one conflict, conflicts are likely, so stage from then on.
        self._direct = True
        self._turn = asyncio.Lock()  # FIFO: chunks are written in the order they came

    async def write(self, rows: list[ImportRow]) -> ImportOutcome:
        """Write a chunk; a row the server refuses is isolated by halving and reported.

        The chunk is encoded while the previous one is still being written, so the
        server does not wait for it; chunks are written in call order.
        """
        block = await copy_block_yielding(rows)
        async with self._turn:
            return await self._write_checked(rows, block)

    async def _write_checked(self, rows: list[ImportRow], block: bytes) -> ImportOutcome:
        direct = self._direct and all(r.version and r.created_at and r.updated_at for r in rows)
        try:
            async with self._conn.transaction():  # a savepoint
                if direct:
                    await self._copy(self._q.import_copy_direct, block)
                    return ImportOutcome(imported=len(rows))
                return await self._staged(rows, block)
        except psycopg.errors.UniqueViolation:
            if not direct:
                raise
            self._direct = False  # the savepoint undid the chunk: stage it, and the rest
            return await self._write_checked(rows, block)
        except ROW_ERRORS as exc:
            if len(rows) == 1:
                message = redact(str(exc).strip().splitlines()[0], self._config)
                return ImportOutcome(rejected=[(rows[0], f"PostgreSQL refused it: {message}")])
        first, second = rows[: len(rows) // 2], rows[len(rows) // 2 :]
        return await self._write_checked(first, copy_block(first)) + await self._write_checked(
            second, copy_block(second)
        )

    async def history(self, policies: list[HistoryPolicy], rows: list[PastVersion]) -> None:
        """Set the history settings and append the past versions, in the import's transaction."""
        async with self._turn:
            await restore_on(self._conn, self._q, policies, rows)

    async def _copy(self, query: bytes, block: bytes) -> None:
        async with self._conn.cursor() as cur, cur.copy(query) as copy:
            await copy.write(block)

    async def _staged(self, rows: list[ImportRow], block: bytes) -> ImportOutcome:
        conn, q = self._conn, self._q
        await conn.execute(q.import_clear)
        await self._copy(q.import_copy, block)
        overwritten = 0
        if self._on_conflict == "fail":
            cur = await conn.execute(q.import_conflicts)
            existing = await cur.fetchall()
            if existing:
                raise conflict_error([(t, i) for t, i in existing])
            cur = await conn.execute(q.import_insert_new)
            if cur.rowcount < len(rows):
                raise ImportAborted(
                    "import aborted, nothing was written: a record was created concurrently "
                    "(on_conflict=fail)"
                )
        else:
            if self._on_conflict == "overwrite":
                cur = await conn.execute(q.import_overwrite)
                overwritten = cur.rowcount
            cur = await conn.execute(q.import_insert)
        imported = cur.rowcount
        return ImportOutcome(imported, overwritten, len(rows) - imported - overwritten)


class PostgresTransfer:
    """Exports page through one snapshot; imports write on one connection, in one transaction."""

    def __init__(self, db: Connections) -> None:
        self._db = db
        self._q = db.statements
        self._config = db.config

    async def _export(
        self,
        query: bytes,
        types: list[str] | None,
        chunk: int,
        where: queries.Node | None,
        *,
        binary: bool = False,
    ) -> AsyncIterator[list[tuple[Any, ...]]]:
        selected = None if types is None else json_list(types)
        statement = compiler.export_statement(sql.SQL(query.decode()), selected, where)
        fetch = self._q.compose(schema.queries()["export_fetch"], chunk=sql.Literal(chunk))
        async with self._db.connection() as conn, conn.transaction():
            await conn.execute(self._q.export_utc)
            await conn.execute(statement.query, statement.params, prepare=False)
            # Pipelined: the server computes the next page while this one is used.
            async with conn.pipeline():
                pages = [conn.cursor(binary=binary), conn.cursor(binary=binary)]
                await pages[0].execute(fetch)
                while True:
                    await pages[1].execute(fetch)
                    rows = await pages[0].fetchall()
                    if not rows:
                        break
                    yield rows
                    pages.reverse()

    async def export_records(
        self, types: list[str] | None, chunk: int, where: queries.Node | None = None
    ) -> AsyncIterator[list[Record]]:
        async for rows in self._export(self._q.export_records, types, chunk, where):
            yield [record_from_row(row[0], row[1], (*row[2:], None)) for row in rows]

    async def export_jsonl(
        self, types: list[str] | None, chunk: int, where: queries.Node | None = None
    ) -> AsyncIterator[bytes]:
        query = self._q.export_lines
        async for rows in self._export(query, types, chunk, where, binary=True):
            lines = [row[0] for row in rows]
            lines.append(b"")
            yield b"\n".join(lines)

    async def _number_changes(self, conn: Conn) -> None:
        """Number the import's changes, a pass of ``IMPORT_PASS_ROWS`` at a time."""
        params: dict[str, Any] = {"channel": self._config.channel, "max_rows": IMPORT_PASS_ROWS}
        after: int | None = 0
        while after is not None:
            cur = await conn.execute(self._q.import_changes_number, {**params, "after": after})
            row = await cur.fetchone()
            after = None if row is None else row[0]

    @asynccontextmanager
    async def importer(self, on_conflict: OnConflict) -> AsyncIterator[PostgresImporter]:
        logged = self._config.changes
        async with self._db.connection() as conn:
            async with conn.transaction():
                await conn.execute(self._q.import_stage)
                if logged:  # the import's changes are numbered in bulk, at its end
                    await conn.execute(self._q.import_changes_stage)
                    await conn.execute(self._q.import_changes_on)
                yield PostgresImporter(conn, self._q, on_conflict, self._config)
                if logged:
                    await self._number_changes(conn)
            self._db.changed()
