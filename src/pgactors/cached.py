"""The read cache wired in: a records backend that reads through a ``RecordCache``, and
the change-feed watcher that keeps it coherent.

``CachedBackend`` is the store's backend with its ``records`` role replaced by
``CachedRecords``; every other role is the backend's own. Loads outside transactions
are served from the cache; every write through it updates or drops what it wrote.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta

from .backend import (
    AdminBackend,
    Backend,
    CallRequest,
    HistoryBackend,
    QueryBackend,
    RecordsBackend,
    ReminderBackend,
    SaveItem,
    TransactionBackend,
    TransferBackend,
)
from .cache import CacheStats, Key, RecordCache
from .changes import Change, ChangeFeed, FeedSource, Subscriber
from .record import AppliedCall, Record
from .reminders import Reminder, ReminderRequest

logger = logging.getLogger("pgactors.cache")

RETRY_AFTER = 5.0
"""Seconds after the change feed failed (not a reconnect: it gave up) before the cache
subscribes again; loads read PostgreSQL meanwhile."""


class CacheWatch:
    """Keeps a ``RecordCache`` coherent with one ``ChangeFeed``; starts at the first read."""

    def __init__(self, cache: RecordCache, feed: Callable[[], ChangeFeed], admin: AdminBackend):
        self.cache = cache
        self._feed = feed
        self._admin = admin
        self._watching: Subscriber | None = None
        self._starting = asyncio.Lock()
        self._closed = False
        self._retry_at = 0.0  # after the feed failed: not before then
        self._registered = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def ensure(self) -> None:
        """Subscribe to the feed unless subscribed (the cache serves once it is live)."""
        if self._watching is not None or self._closed or time.monotonic() < self._retry_at:
            return
        async with self._starting:
            if self._watching is not None or self._closed:
                return
            feed = self._feed()
            if not self._registered:
                feed.on_live(self._live)
                self._registered = True
            await self._measure_clock()
            self._watching = await feed.watch(self._deliver)
            if feed.live:
                self.cache.start(self._watching.last)

    def stats(self) -> CacheStats:
        """The cache's counters, with the feed position it is coherent with."""
        stats = self.cache.stats()
        if self._watching is not None and stats.serving:
            stats = dataclasses.replace(stats, position=self._watching.last)
        return stats

    def close(self) -> None:
        """Stop serving for good."""
        self._closed = True
        self.cache.stop()
        for task in self._tasks:
            task.cancel()

    def _deliver(self, item: Change | BaseException) -> None:
        if isinstance(item, BaseException):
            # Expired, lost, or the feed closed: nothing cached is confirmed any more.
            self._watching = None
            self.cache.stop()
            self._retry_at = time.monotonic() + RETRY_AFTER
            if not isinstance(item, StopAsyncIteration):
                logger.warning("read cache cleared, the change feed failed: %s", item)
            return
        self.cache.invalidate((item.type, item.id), item.version, item.op == "delete")

    def _live(self, live: bool) -> None:
        if not live:
            self.cache.stop()
        elif self._watching is not None and not self._closed:
            self.cache.start(self._watching.last)
            task = asyncio.get_running_loop().create_task(self._measure_clock())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _measure_clock(self) -> None:
        try:
            before = time.time()
            server = await self._admin.server_time()
            after = time.time()
        except Exception as exc:  # only a measurement: keep the last one
            logger.warning("read cache: could not read the server's clock: %s", exc)
            return
        # Ahead by at most this much: the server read its clock between before and after.
        ahead = server.timestamp() - before
        self.cache.clock_offset(timedelta(seconds=max(0.0, ahead) + (after - before)))


class _TrackedTransaction:
    """A transaction's records role that notes every key it may write."""

    def __init__(self, inner: TransactionBackend, written: set[Key]) -> None:
        self._inner = inner
        self._written = written

    async def load(self, type: str, id: str, *, for_update: bool = False) -> Record | None:
        return await self._inner.load(type, id, for_update=for_update)

    async def save(
        self,
        type: str,
        id: str,
        text: str,
        expected: int | None,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        self._written.add((type, id))
        return await self._inner.save(type, id, text, expected, ttl, sliding)

    async def delete(self, type: str, id: str, expected: int | None) -> bool:
        self._written.add((type, id))
        return await self._inner.delete(type, id, expected)

    async def save_binary(
        self, type: str, id: str, payload: bytes, manifest: str, expected: int | None
    ) -> Record:
        self._written.add((type, id))
        return await self._inner.save_binary(type, id, payload, manifest, expected)

    async def save_call(self, request: CallRequest) -> Record:
        self._written.add((request.type, request.id))
        return await self._inner.save_call(request)

    async def applied_call(self, type: str, id: str, call_id: str) -> AppliedCall | None:
        return await self._inner.applied_call(type, id, call_id)

    async def set_reminder(self, request: ReminderRequest) -> Reminder:
        return await self._inner.set_reminder(request)

    async def cancel_reminder(self, type: str, id: str, name: str) -> bool:
        return await self._inner.cancel_reminder(type, id, name)


class CachedRecords:
    """``RecordsBackend`` reading through the cache; writes keep it current."""

    def __init__(self, inner: RecordsBackend, watch: CacheWatch) -> None:
        self._inner = inner
        self._watch = watch
        self._cache = watch.cache

    async def load(self, type: str, id: str, *, for_update: bool = False) -> Record | None:
        if for_update:
            return await self._inner.load(type, id, for_update=True)
        hit = self.lookup(type, id)
        if hit is not None:
            return hit
        return await self.load_fresh(type, id)

    def lookup(self, type: str, id: str) -> Record | None:
        """The cached record, or None (a miss)."""
        return self._cache.get((type, id))

    async def load_fresh(self, type: str, id: str) -> Record | None:
        """Read from the database, and cache what was read."""
        if not self._cache.serving:
            await self._watch.ensure()
        token = self._cache.token()
        record = await self._inner.load(type, id)
        if record is None:
            self._cache.forget((type, id))
        else:
            self._cache.put(record, token)
        return record

    async def load_many(self, type: str, ids: list[str]) -> dict[str, Record]:
        found: dict[str, Record] = {}
        if self._cache.serving:
            for id in ids:
                hit = self._cache.get((type, id))
                if hit is not None:
                    found[id] = hit
        else:
            await self._watch.ensure()
        missing = [id for id in ids if id not in found]
        if missing:
            token = self._cache.token()
            read = await self._inner.load_many(type, missing)
            for record in read.values():
                self._cache.put(record, token)
            found.update(read)
        return found

    async def exists(self, type: str, id: str) -> bool:
        return await self._inner.exists(type, id)

    async def save(
        self,
        type: str,
        id: str,
        text: str,
        expected: int | None,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        async with self._writing([id], type) as token:
            record = await self._inner.save(type, id, text, expected, ttl, sliding)
        self._cache.written(record, token)
        return record

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
        async with self._writing([id], type) as token:
            record = await self._inner.save_binary(
                type, id, payload, manifest, expected, ttl, sliding
            )
        self._cache.written(record, token)
        return record

    async def save_call(self, request: CallRequest) -> Record:
        async with self._writing([request.id], request.type) as token:
            record = await self._inner.save_call(request)
        self._cache.written(record, token)
        return record

    async def applied_call(self, type: str, id: str, call_id: str) -> AppliedCall | None:
        return await self._inner.applied_call(type, id, call_id)

    async def delete(self, type: str, id: str, expected: int | None) -> bool:
        try:
            return await self._inner.delete(type, id, expected)
        finally:
            self._cache.forget((type, id))

    async def save_many(
        self,
        type: str,
        items: list[SaveItem],
        ttl: float | None = None,
        sliding: bool = False,
    ) -> dict[str, Record]:
        async with self._writing([i.id for i in items], type) as token:
            saved = await self._inner.save_many(type, items, ttl, sliding)
        for record in saved.values():
            self._cache.written(record, token)
        return saved

    async def delete_many(self, type: str, ids: list[str]) -> int:
        try:
            return await self._inner.delete_many(type, ids)
        finally:
            for id in ids:
                self._cache.forget((type, id))

    async def list_ids(self, type: str, *, prefix: str, after: str, limit: int) -> list[str]:
        return await self._inner.list_ids(type, prefix=prefix, after=after, limit=limit)

    async def types(self) -> dict[str, int]:
        return await self._inner.types()

    async def purge_calls(self, older_than: float, limit: int, prefix: str | None = None) -> int:
        return await self._inner.purge_calls(older_than, limit, prefix)

    async def purge_expired(self, type: str | None, limit: int) -> int:
        # Expired records are never served from the cache, so nothing to drop.
        return await self._inner.purge_expired(type, limit)

    def transaction(self) -> AbstractAsyncContextManager[TransactionBackend]:
        return self._transaction()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[TransactionBackend]:
        written: set[Key] = set()
        try:
            async with self._inner.transaction() as tx:
                yield _TrackedTransaction(tx, written)
        finally:
            # Committed or not (an unknown outcome counts as written): read afresh.
            for key in written:
                self._cache.forget(key)

    @asynccontextmanager
    async def _writing(self, ids: Iterable[str], type: str) -> AsyncIterator[int]:
        """The token for caching what a write returns; on failure (a conflict, or an
        unknown outcome) the keys are dropped, so the caller's next read is fresh."""
        token = self._cache.token()
        try:
            yield token
        except BaseException:
            for id in ids:
                self._cache.forget((type, id))
            raise


class CachedBackend:
    """A backend whose records role reads through the cache; the other roles are its own."""

    def __init__(self, inner: Backend, watch: CacheWatch) -> None:
        self._inner = inner
        self.watch = watch
        self._records = CachedRecords(inner.records, watch)

    @property
    def records(self) -> CachedRecords:
        return self._records

    @property
    def queries(self) -> QueryBackend:
        return self._inner.queries

    @property
    def feed(self) -> FeedSource:
        return self._inner.feed

    @property
    def reminders(self) -> ReminderBackend:
        return self._inner.reminders

    @property
    def transfer(self) -> TransferBackend:
        return self._inner.transfer

    @property
    def admin(self) -> AdminBackend:
        return self._inner.admin

    @property
    def history(self) -> HistoryBackend:
        return self._inner.history

    async def close(self) -> None:
        self.watch.close()
        await self._inner.close()
