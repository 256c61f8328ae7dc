"""The records role: single records, batches, listing, expiry, transactions."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import psycopg

from ..backend import CallRequest, SaveItem, TransactionBackend, stale
from ..config import StoreConfig
from ..errors import VersionConflict
from ..record import AppliedCall, Record
from .coalesced import Coalesced
from .connection import Conn, Connections, json_list, translated
from .ops import Ops, PostgresTransaction, SaveRequest, decode, record_from_row, reminder_channel

logger = logging.getLogger("pgactors.postgres")
# Raised by save_many's statement when a concurrent writer created one of its records.
BATCH_RACE_SQLSTATE = "PA409"
PURGE_BATCH = 10_000


class PostgresRecords:
    """Records in the state table; single loads and saves are coalesced (``Coalesced``)."""

    def __init__(self, db: Connections) -> None:
        self._db = db
        self._q = db.statements
        self._config: StoreConfig = db.config
        self._ops = Ops(db, reminder_channel(db.config))
        self.coalesced = Coalesced(db, self._ops, enabled=db.config.coalesce)
        self._purger: asyncio.Task[None] | None = None
        self._also_purge: Callable[[], Awaitable[int]] | None = None
        self._closed = False

    async def close(self) -> None:
        """Stop the background purger."""
        self._closed = True
        if self._purger is not None:
            self._purger.cancel()
            # gather: the purger's cancellation is its result, while a cancellation
            # of close() itself still propagates.
            await asyncio.gather(self._purger, return_exceptions=True)

    def load(
        self, type: str, id: str, *, for_update: bool = False
    ) -> Coroutine[Any, Any, Record | None]:
        # The coalescer's own coroutine, not one more around it: one frame less per load.
        return self.coalesced.load(type, id)

    async def exists(self, type: str, id: str) -> bool:
        rows = await self._db.read(self._q.exists, {"type": type, "id": id})
        return bool(rows[0][0])

    async def save(
        self,
        type: str,
        id: str,
        text: str,
        expected: int | None,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        if ttl is not None:
            self._expiring()
        return await self.coalesced.save(SaveRequest(type, id, text, expected, ttl, sliding))

    async def save_binary(
        self,
        type: str,
        id: str,
        payload: bytes,
        manifest: str,
        expected: int | None,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        if ttl is not None:
            self._expiring()
        async with self._db.connection() as conn:
            record = await self._ops.save_binary_on(
                conn, type, id, payload, manifest, expected, ttl, sliding
            )
        self._db.changed()
        return record

    async def save_call(self, request: CallRequest) -> Record:
        return await self.coalesced.save_call(request)

    async def applied_call(self, type: str, id: str, call_id: str) -> AppliedCall | None:
        async with self._db.connection() as conn:
            return await self._ops.applied_call_on(conn, type, id, call_id)

    async def purge_calls(self, older_than: float, limit: int, prefix: str | None = None) -> int:
        """Delete calls recorded before ``older_than`` seconds ago (with ids starting with
        ``prefix``), ``limit`` per statement."""
        purged = 0
        params = {"older_than": older_than, "limit": limit, "prefix": prefix}
        while True:
            async with self._db.connection() as conn:
                count = await self._db.count_on(conn, self._q.purge_calls, params)
            purged += count
            if count < limit:
                return purged

    async def delete(self, type: str, id: str, expected: int | None) -> bool:
        async with self._db.connection() as conn:
            deleted = await self._ops.delete_on(conn, type, id, expected)
        if deleted:
            self._db.changed()
        return deleted

    async def load_many(self, type: str, ids: list[str]) -> dict[str, Record]:
        params = {"type": type, "ids": json_list(ids)}
        rows = await self._db.read(self._q.load_many, params)
        return {row[0]: record_from_row(type, row[0], row[1:]) for row in rows}

    async def save_many(
        self,
        type: str,
        items: list[SaveItem],
        ttl: float | None = None,
        sliding: bool = False,
    ) -> dict[str, Record]:
        if ttl is not None:
            self._expiring()
        params = {
            "type": type,
            "ids": json_list([i.id for i in items]),
            "datas": "[" + ",".join(i.text for i in items) + "]",
            "expected": json.dumps([i.expected for i in items]),
            "ttl": ttl,
            "sliding": sliding,
        }
        async with self._db.connection() as conn:
            try:
                rows = await self._db.rows_on(conn, self._q.save_many, params)
            except psycopg.Error as exc:
                if exc.sqlstate != BATCH_RACE_SQLSTATE:
                    raise
                raced = await self._versions_on(conn, type, items)
                if raced:
                    raise VersionConflict.in_batch(type, raced) from None
                raise VersionConflict(type, items[0].id, 0, 0) from None
        conflicts = {row[1]: (row[3], row[2]) for row in rows if not row[0]}
        if conflicts:
            raise VersionConflict.in_batch(type, conflicts)
        self._db.changed()
        texts = {i.id: i.text for i in items}
        return {
            id: Record(
                type, id, decode(texts[id]), version, created_at, updated_at, None, None, expires
            )
            for _, id, version, _, created_at, updated_at, _, expires in rows
        }

    async def _versions_on(
        self, conn: Conn, type: str, items: list[SaveItem]
    ) -> dict[str, tuple[int, int]]:
        params = {"type": type, "ids": json_list([i.id for i in items])}
        return stale(items, dict(await self._db.rows_on(conn, self._q.current_versions, params)))

    async def delete_many(self, type: str, ids: list[str]) -> int:
        async with self._db.connection() as conn:
            params = {"type": type, "ids": json_list(ids)}
            count = await self._db.count_on(conn, self._q.delete_many, params)
        if count:
            self._db.changed()
        return count

    async def list_ids(self, type: str, *, prefix: str, after: str, limit: int) -> list[str]:
        params = {"type": type, "prefix": prefix, "after": after, "limit": limit}
        return [row[0] for row in await self._db.read(self._q.list_ids, params)]

    async def types(self) -> dict[str, int]:
        return {row[0]: int(row[1]) for row in await self._db.read(self._q.types, {})}

    async def purge_expired(self, type: str | None, limit: int) -> int:
        """Delete expired rows, ``limit`` per statement, until a batch comes back short."""
        purged = 0
        params = {"type": type, "limit": limit}
        while True:
            async with self._db.connection() as conn:
                count = await self._db.count_on(conn, self._q.purge_expired, params)
            purged += count
            if count:
                self._db.changed()
            if count < limit:
                return purged

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[TransactionBackend]:
        async with self._db.connection() as conn:
            with translated(self._config):
                async with conn.transaction():
                    yield PostgresTransaction(conn, self._ops, self._config, self._expiring)
        self._db.changed()

    def _expiring(self) -> None:
        """A record is being saved with a ttl: make sure the background purger runs."""
        if self._purger is None and not self._closed:
            self._purger = asyncio.get_running_loop().create_task(
                self._purge_forever(), name="pgactors-purger"
            )

    def purge_also(self, purge: Callable[[], Awaitable[int]]) -> None:
        """Run ``purge`` at each background purge too (history retention); start the purger."""
        self._also_purge = purge
        self._expiring()

    async def _purge_forever(self) -> None:
        interval = self._config.purge_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.purge_expired(None, PURGE_BATCH)
            except Exception as exc:
                # Expired records stay invisible meanwhile; only the disk space waits.
                logger.warning("purging expired records failed, retrying in %gs: %s", interval, exc)
            if self._also_purge is None:
                continue
            try:
                await self._also_purge()
            except Exception as exc:
                # Reads apply the retention limits anyway; only the disk space waits.
                logger.warning("purging past versions failed, retrying in %gs: %s", interval, exc)
