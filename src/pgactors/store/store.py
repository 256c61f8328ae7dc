"""``Store``: the public API, and ``InMemoryStore``.

``Store`` validates every input before anything is written, encodes data to JSON
once, and hands the rest to a backend (``postgres`` or ``memory``). Its methods
are grouped by role: records (``records.py``), queries (``queries.py``), export
and import (``transfer.py``), transactions (``transaction.py``), version history
(``history.py``); this module opens
and closes it, and holds the schema, statistics and change feed methods.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import (
    Sequence,
)
from typing import Any, Final, Self

from ..backend import (
    Backend,
)
from ..cache import RecordCache
from ..cached import CachedBackend, CacheWatch
from ..changes import ChangeFeed, ChangeStream
from ..checks import int_in_range
from ..config import StoreConfig
from ..errors import InvalidInput
from ..memory import MemoryBackend
from ..metrics import Metrics, MetricsSnapshot
from ..stats import FeedStats, Overview, ServerInfo, ServerStats
from .base import types_list
from .history import HistoryMethods
from .queries import QueryMethods
from .records import RecordMethods
from .reminders import ReminderMethods
from .transaction import TransactionContext
from .transfer import TransferMethods

MAX_PARTITIONS: Final = 1024


class Store(RecordMethods, QueryMethods, ReminderMethods, TransferMethods, HistoryMethods):
    """Versioned JSON state by ``(type, id)`` in PostgreSQL.

    Create it with :meth:`connect` or :meth:`embedded`; use it as an async context
    manager or call :meth:`close`.
    """

    def __init__(self, backend: Backend, config: StoreConfig) -> None:
        self.config = config
        self._max_bytes = config.max_data_bytes
        self._feed: ChangeFeed | None = None
        self._metrics = Metrics()
        self._cached: CachedBackend | None = None
        if config.cache_size:
            backend.feed.check_listen()  # the cache is kept coherent by the change feed
            watch = CacheWatch(
                RecordCache(config.cache_size, config.cache_bytes), self._change_feed, backend.admin
            )
            backend = self._cached = CachedBackend(backend, watch)
        self._backend = backend

    # -- opening and closing --------------------------------------------------------------

    @classmethod
    async def connect(
        cls, dsn_or_config: str | StoreConfig | None = None, /, **overrides: Any
    ) -> Self:
        """Connect to PostgreSQL: a DSN, a ``StoreConfig``, or None (from the environment)."""
        from ..postgres import PostgresBackend

        config = StoreConfig.resolve(dsn_or_config, **overrides)
        backend = await PostgresBackend.open(config)
        try:
            return cls(backend, config)
        except BaseException:
            await backend.close()
            raise

    @classmethod
    async def embedded(
        cls, data_dir: str | os.PathLike[str] | None = None, /, **overrides: Any
    ) -> Self:
        """Start (or reuse) the embedded PostgreSQL server in ``data_dir`` and connect to it."""
        from ..target import resolve_target

        config = await asyncio.to_thread(resolve_target, StoreConfig(), data_dir)
        return await cls.connect(config, **overrides)

    @classmethod
    async def open(
        cls, data_dir: str | os.PathLike[str] | None = None, /, **overrides: Any
    ) -> Self:
        """Connect as the environment says (``PGACTORS_DSN``, ...), else to the embedded server.

        The same rule as the ``pgactors`` command: with no server configured, the
        embedded one in ``data_dir`` (default ``$PGACTORS_DATA_DIR`` or ``./.pgactors``).
        """
        from ..target import resolve_target

        config = StoreConfig.resolve(None, **overrides)
        return await cls.connect(await asyncio.to_thread(resolve_target, config, data_dir))

    async def close(self) -> None:
        """Release every connection."""
        if self._feed is not None:
            await self._feed.close()
        await self._backend.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.config!r}>"

    # -- schema ---------------------------------------------------------------------------

    async def init_schema(self, *, partitions: int | None = None) -> int:
        """Create or migrate the schema (idempotent); return how many migrations ran.

        ``partitions=N`` creates the state table hash-partitioned by id into N tables
        (for very large deployments); it must match an existing table. 0 or None:
        not partitioned.
        """
        if partitions is not None and not int_in_range(partitions, 0, MAX_PARTITIONS):
            raise InvalidInput(
                f"partitions must be an int from 0 to {MAX_PARTITIONS}, got {partitions!r}"
            )
        return await self._backend.admin.init_schema(partitions or None)

    async def schema_version(self) -> int | None:
        """The installed schema version, or None when not installed."""
        return await self._backend.admin.schema_version()

    async def verify_schema(self) -> list[tuple[str, str, bool]]:
        """Each expected table, index and function as ``(kind, name, present)``."""
        return await self._backend.admin.verify()

    async def info(self) -> ServerInfo:
        """Server version, round-trip latency, schema version, records per type, sizes."""
        return await self._backend.admin.server_info()

    async def server_stats(self) -> ServerStats:
        """Sizes, dead rows, last autovacuum, writes in the last minute, connections."""
        return await self._backend.admin.server_stats()

    async def overview(self) -> Overview:
        """Figures for a dashboard, quick at any size: server, sizes, connections, records
        per type (estimated from the planner's statistics on a large table, as
        ``types_estimated`` says), the change log's position, reminders."""
        return await self._backend.admin.overview()

    def metrics(self) -> MetricsSnapshot:
        """This store's operation counts, latencies, conflicts, retries and pool usage."""
        admin = self._backend.admin
        snapshot = self._metrics.snapshot(admin.pool_stats(), admin.retry_counts())
        if self._cached is not None:
            snapshot = dataclasses.replace(snapshot, cache=self._cached.watch.stats())
        return snapshot

    def observe(self, operation: str, seconds: float) -> None:
        """Record one ``operation`` taking ``seconds`` in this store's metrics (for the
        runtimes built on it: ``reminder_fired`` records each firing's lateness)."""
        self._metrics.observe(operation, seconds)

    async def drop_schema(self) -> None:
        """Drop every pgactors table and function of this schema and prefix: ALL STATE."""
        await self._backend.admin.drop_schema()
        self._cache_clear()

    # -- change feed ----------------------------------------------------------------------------

    def changes(
        self, types: Sequence[str] | str | None = None, *, since: int | str | None = None
    ) -> ChangeStream:
        """Every committed change (of ``types``), in commit order, at least once.

        ``since``: None starts now, 0 at the oldest retained change, a position right
        after that change. ``async for change in store.changes()``; use
        ``async with store.changes() as stream`` to subscribe before the first read.
        A resume point older than the retention raises ``ChangesExpired``. Behind a
        transaction pooler (``pooler``) it needs ``listen_dsn``, else ``ConfigError``.
        """
        self._backend.feed.check_listen()
        return ChangeStream(self._change_feed(), types_list(types), since)  # type: ignore[arg-type]

    def _change_feed(self) -> ChangeFeed:
        if self._feed is None:
            self._feed = ChangeFeed(self._backend.feed)
        return self._feed

    async def feed_stats(self) -> FeedStats:
        """The change log's positions, row count and size."""
        return await self._backend.admin.feed_stats()

    async def sequence_changes(self) -> int:
        """Number (and notify) committed changes now; writes do this by themselves."""
        return await self._backend.feed.sequence_changes()

    async def prune_changes(self) -> int:
        """Delete changes older than ``changes_retention`` now (listeners do this by themselves)."""
        return await self._backend.feed.prune_changes()

    # -- transactions ---------------------------------------------------------------------------

    def transaction(self) -> TransactionContext:
        """``async with store.transaction() as tx``: commit at exit, roll back on error."""
        return TransactionContext(self._backend, self._max_bytes)


class InMemoryStore(Store):
    """A ``Store`` whose records live in this process only; same semantics, for tests."""

    def __init__(self, config: StoreConfig | None = None) -> None:
        config = config or StoreConfig()
        super().__init__(MemoryBackend(config.changes_retention, changes=config.changes), config)

    @classmethod
    async def create(cls, config: StoreConfig | None = None) -> InMemoryStore:
        """An empty in-memory store (symmetry with ``Store.connect``)."""
        return cls(config)
