"""The in-memory twin of the PostgreSQL backend, for fast unit tests of higher layers.

It keeps JSON text, so every load returns a private copy, exactly as the database
does. Transactions serialise writers on one lock and apply their writes atomically
at commit. Data lives only as long as the process.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from . import schema
from .backend import SaveItem, ServerInfo, TransactionBackend
from .errors import VersionConflict
from .record import Record


@dataclass(frozen=True, slots=True)
class _Row:
    text: str
    version: int
    created_at: datetime
    updated_at: datetime


_Rows = dict[tuple[str, str], _Row]


def _record(type: str, id: str, row: _Row) -> Record:
    return Record(type, id, json.loads(row.text), row.version, row.created_at, row.updated_at)


def _write(rows: _Rows, type: str, id: str, text: str, expected: int | None) -> Record:
    old = rows.get((type, id))
    actual = old.version if old else 0
    if expected is not None and expected != actual:
        raise VersionConflict(type, id, expected, actual)
    now = datetime.now(UTC)
    row = _Row(text, actual + 1, old.created_at if old else now, now)
    rows[(type, id)] = row
    return _record(type, id, row)


def _remove(rows: _Rows, type: str, id: str, expected: int | None) -> bool:
    old = rows.get((type, id))
    actual = old.version if old else 0
    if expected is not None and expected != actual:
        raise VersionConflict(type, id, expected, actual)
    return rows.pop((type, id), None) is not None


class _MemoryTransaction:
    def __init__(self, rows: _Rows) -> None:
        self.rows = rows

    async def load(self, type: str, id: str, *, for_update: bool = False) -> Record | None:
        row = self.rows.get((type, id))
        return _record(type, id, row) if row else None

    async def save(self, type: str, id: str, text: str, expected: int | None) -> Record:
        return _write(self.rows, type, id, text, expected)

    async def delete(self, type: str, id: str, expected: int | None) -> bool:
        return _remove(self.rows, type, id, expected)


class MemoryBackend:
    """A backend holding records in a dict; same semantics as PostgreSQL."""

    def __init__(self) -> None:
        self._rows: _Rows = {}
        self._write_lock = asyncio.Lock()

    async def load(self, type: str, id: str, *, for_update: bool = False) -> Record | None:
        row = self._rows.get((type, id))
        return _record(type, id, row) if row else None

    async def exists(self, type: str, id: str) -> bool:
        return (type, id) in self._rows

    async def save(self, type: str, id: str, text: str, expected: int | None) -> Record:
        async with self._write_lock:
            return _write(self._rows, type, id, text, expected)

    async def delete(self, type: str, id: str, expected: int | None) -> bool:
        async with self._write_lock:
            return _remove(self._rows, type, id, expected)

    async def load_many(self, type: str, ids: list[str]) -> dict[str, Record]:
        return {i: _record(type, i, r) for i in ids if (r := self._rows.get((type, i)))}

    async def save_many(self, type: str, items: list[SaveItem]) -> dict[str, Record]:
        async with self._write_lock:
            conflicts = {}
            for item in items:
                old = self._rows.get((type, item.id))
                actual = old.version if old else 0
                if item.expected is not None and item.expected != actual:
                    conflicts[item.id] = (item.expected, actual)
            if conflicts:
                first = min(conflicts)
                raise VersionConflict(type, first, *conflicts[first], conflicts=conflicts)
            return {
                item.id: _write(self._rows, type, item.id, item.text, None)
                for item in sorted(items, key=lambda i: i.id)
            }

    async def delete_many(self, type: str, ids: list[str]) -> int:
        async with self._write_lock:
            return sum(self._rows.pop((type, i), None) is not None for i in ids)

    async def list_ids(self, type: str, *, prefix: str, after: str, limit: int) -> list[str]:
        found = sorted(
            id for (t, id) in self._rows if t == type and id > after and id.startswith(prefix)
        )
        return found[:limit]

    async def types(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for type, _ in self._rows:
            counts[type] = counts.get(type, 0) + 1
        return dict(sorted(counts.items()))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[TransactionBackend]:
        async with self._write_lock:
            working = dict(self._rows)
            yield _MemoryTransaction(working)
            self._rows = working

    async def init_schema(self) -> int:
        return 0

    async def schema_version(self) -> int | None:
        return schema.latest_version()

    async def verify(self) -> list[tuple[str, str, bool]]:
        return []

    async def server_info(self) -> ServerInfo:
        return ServerInfo("in-memory", 0.0, schema.latest_version(), await self.types(), 0, 0, 0)

    async def drop_schema(self) -> None:
        self._rows = {}

    async def close(self) -> None:
        pass
