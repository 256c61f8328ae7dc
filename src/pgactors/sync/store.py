"""``SyncStore``: the blocking twin of ``Store`` for scripts, notebooks and WSGI apps.

It runs a ``Store`` on a private event loop in a background thread, so both share
one implementation and cannot drift. Safe to call from several threads.
"""

from __future__ import annotations

import os
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
from typing import Any, Self

from ..config import StoreConfig
from ..metrics import MetricsSnapshot
from ..query import Page
from ..record import JSON, MISSING, AppliedCall, Encoded, Record
from ..reminders import Reminder
from ..retry import DEFAULT_MAX_RETRIES
from ..stats import FeedStats, Overview, ServerInfo, ServerStats
from ..store import InMemoryStore, Store
from ..transfer import ImportResult, OnConflict
from .history import SyncHistoryMethods
from .loop import LoopThread, T
from .reminders import SyncReminderMethods
from .stream import SyncChangeStream
from .transaction import SyncTransaction


class SyncStore(SyncReminderMethods, SyncHistoryMethods):
    """Blocking ``Store``: the same operations and semantics, without ``await``."""

    def __init__(self, store: Store, runner: LoopThread) -> None:
        self._store = store
        self._runner = runner
        self._run = runner.run
        self.config = store.config

    @classmethod
    def _open(cls, opener: Callable[[], Coroutine[Any, Any, Store]]) -> Self:
        runner = LoopThread()
        try:
            return cls(runner.run(opener()), runner)
        except BaseException:
            runner.stop()
            raise

    @classmethod
    def connect(cls, dsn_or_config: str | StoreConfig | None = None, /, **overrides: Any) -> Self:
        """Connect to PostgreSQL (see ``Store.connect``)."""
        return cls._open(lambda: Store.connect(dsn_or_config, **overrides))

    @classmethod
    def embedded(cls, data_dir: str | os.PathLike[str] | None = None, /, **overrides: Any) -> Self:
        """Start or reuse the embedded server and connect (see ``Store.embedded``)."""
        return cls._open(lambda: Store.embedded(data_dir, **overrides))

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str] | None = None, /, **overrides: Any) -> Self:
        """Connect as the environment says, else to the embedded server (``Store.open``)."""
        return cls._open(lambda: Store.open(data_dir, **overrides))

    @classmethod
    def in_memory(cls, config: StoreConfig | None = None) -> Self:
        """A blocking in-memory store, for tests."""
        return cls._open(lambda: InMemoryStore.create(config))

    def close(self) -> None:
        """Release every connection and the background thread."""
        try:
            self._run(self._store.close())
        finally:
            self._runner.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SyncStore {self.config!r}>"

    @property
    def store(self) -> Store:
        """The async store underneath."""
        return self._store

    def init_schema(self, *, partitions: int | None = None) -> int:
        """Create or migrate the schema (idempotent; see ``Store.init_schema``)."""
        return self._run(self._store.init_schema(partitions=partitions))

    def schema_version(self) -> int | None:
        """The installed schema version, or None when not installed."""
        return self._run(self._store.schema_version())

    def verify_schema(self) -> list[tuple[str, str, bool]]:
        """Each expected table, index and function as ``(kind, name, present)``."""
        return self._run(self._store.verify_schema())

    def drop_schema(self) -> None:
        """Drop every pgactors table and function of this schema and prefix: ALL STATE."""
        self._run(self._store.drop_schema())

    def info(self) -> ServerInfo:
        """Server version, latency, schema version, records per type, sizes."""
        return self._run(self._store.info())

    def server_stats(self) -> ServerStats:
        """Sizes, dead rows, vacuum, writes in the last minute, connections."""
        return self._run(self._store.server_stats())

    def metrics(self) -> MetricsSnapshot:
        """This store's operation counts, latencies, conflicts, retries and pool usage."""
        return self._store.metrics()

    def encode(self, data: JSON) -> Encoded:
        """Check and encode ``data`` once (see ``Store.encode``)."""
        return self._store.encode(data)

    def encode_binary(self, payload: bytes, manifest: str) -> Encoded:
        """Check a binary state once (see ``Store.encode_binary``)."""
        return self._store.encode_binary(payload, manifest)

    def explain(
        self,
        type: str,
        where: Mapping[str, Any] | None = None,
        *,
        order_by: Sequence[str] | str | None = None,
        limit: int = 100,
    ) -> str:
        """How the query would run: PostgreSQL's EXPLAIN plan."""
        return self._run(self._store.explain(type, where, order_by=order_by, limit=limit))

    def create_index(self, type: str, path: str) -> str:
        """Index a hot path of ``type`` (see ``Store.create_index``); the index name."""
        return self._run(self._store.create_index(type, path))

    def drop_index(self, type: str, path: str) -> bool:
        """Drop the index made by ``create_index``; False if there was none."""
        return self._run(self._store.drop_index(type, path))

    def indexes(self) -> list[tuple[str, str, str]]:
        """Every index made by ``create_index``, as ``(type, path, index name)``."""
        return self._run(self._store.indexes())

    def changes(
        self, types: Sequence[str] | str | None = None, *, since: int | str | None = None
    ) -> SyncChangeStream:
        """Every committed change (of ``types``), in commit order, at least once, as a
        blocking iterator (see ``Store.changes``)."""
        return SyncChangeStream(self._store.changes(types, since=since), self._runner)

    def overview(self) -> Overview:
        """Figures for a dashboard (see ``Store.overview``)."""
        return self._run(self._store.overview())

    def feed_stats(self) -> FeedStats:
        """The change log's positions, row count and size."""
        return self._run(self._store.feed_stats())

    def sequence_changes(self) -> int:
        """Number (and notify) committed changes now."""
        return self._run(self._store.sequence_changes())

    def prune_changes(self) -> int:
        """Delete changes older than ``changes_retention`` now."""
        return self._run(self._store.prune_changes())

    def load(
        self, type: str, id: str, *, version: int | None = None, fresh: bool = False
    ) -> Record | None:
        """The record (or that version of it), or None (``fresh``: not from the read cache)."""
        return self._run(self._store.load(type, id, version=version, fresh=fresh))

    def exists(self, type: str, id: str) -> bool:
        """True if the record exists."""
        return self._run(self._store.exists(type, id))

    def save(
        self,
        type: str,
        id: str,
        data: JSON | Encoded,
        *,
        expected_version: int | None = None,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        """Write ``data`` (see ``Store.save``)."""
        return self._run(
            self._store.save(
                type, id, data, expected_version=expected_version, ttl=ttl, sliding=sliding
            )
        )

    def save_call(
        self,
        type: str,
        id: str,
        data: JSON | Encoded,
        *,
        expected_version: int,
        call_id: str,
        result: JSON | Encoded = None,
        advance: Reminder | None = None,
    ) -> Record:
        """Save and record the call that produced the state (see ``Store.save_call``)."""
        return self._run(
            self._store.save_call(
                type,
                id,
                data,
                expected_version=expected_version,
                call_id=call_id,
                result=result,
                advance=advance,
            )
        )

    def applied_call(self, type: str, id: str, call_id: str) -> AppliedCall | None:
        """The call recorded by ``save_call``, or None."""
        return self._run(self._store.applied_call(type, id, call_id))

    def purge_calls(
        self, *, older_than: float, limit: int = 10_000, prefix: str | None = None
    ) -> int:
        """Forget calls recorded more than ``older_than`` seconds ago (``Store.purge_calls``)."""
        return self._run(self._store.purge_calls(older_than=older_than, limit=limit, prefix=prefix))

    def save_binary(
        self,
        type: str,
        id: str,
        payload: bytes,
        manifest: str,
        *,
        expected_version: int | None = None,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        """Write bytes plus manifest (see ``Store.save_binary``)."""
        return self._run(
            self._store.save_binary(
                type,
                id,
                payload,
                manifest,
                expected_version=expected_version,
                ttl=ttl,
                sliding=sliding,
            )
        )

    def delete(self, type: str, id: str, *, expected_version: int | None = None) -> bool:
        """Delete the record (see ``Store.delete``)."""
        return self._run(self._store.delete(type, id, expected_version=expected_version))

    def update(
        self,
        type: str,
        id: str,
        fn: Callable[[Any], Any],
        *,
        default: Any = MISSING,
        max_retries: int = DEFAULT_MAX_RETRIES,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        """Atomic read-modify-write (see ``Store.update``)."""
        return self._run(
            self._store.update(
                type,
                id,
                fn,
                default=default,
                max_retries=max_retries,
                ttl=ttl,
                sliding=sliding,
            )
        )

    def load_many(self, type: str, ids: Iterable[str]) -> dict[str, Record]:
        """Several records of one type (see ``Store.load_many``)."""
        return self._run(self._store.load_many(type, list(ids)))

    def save_many(
        self,
        type: str,
        items: Mapping[str, JSON],
        *,
        expected_versions: Mapping[str, int | None] | None = None,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> dict[str, Record]:
        """Atomic batch write (see ``Store.save_many``)."""
        return self._run(
            self._store.save_many(
                type, items, expected_versions=expected_versions, ttl=ttl, sliding=sliding
            )
        )

    def delete_many(self, type: str, ids: Iterable[str]) -> int:
        """Atomic batch delete (see ``Store.delete_many``)."""
        return self._run(self._store.delete_many(type, list(ids)))

    def list_ids(
        self, type: str, *, prefix: str | None = None, after: str | None = None, limit: int = 1000
    ) -> list[str]:
        """Ids of one type (see ``Store.list_ids``)."""
        return self._run(self._store.list_ids(type, prefix=prefix, after=after, limit=limit))

    def types(self) -> dict[str, int]:
        """Every type with its record count."""
        return self._run(self._store.types())

    def query(
        self,
        type: str,
        where: Mapping[str, Any] | None = None,
        *,
        order_by: Sequence[str] | str | None = None,
        limit: int = 100,
        after: str | None = None,
        offset: int | None = None,
    ) -> Page:
        """One page of matching records (see ``Store.query``)."""
        return self._run(
            self._store.query(
                type, where, order_by=order_by, limit=limit, after=after, offset=offset
            )
        )

    def query_all(
        self,
        type: str,
        where: Mapping[str, Any] | None = None,
        *,
        order_by: Sequence[str] | str | None = None,
        page_size: int = 1000,
    ) -> Iterator[Record]:
        """Every matching record, a page at a time (see ``Store.query_all``)."""
        after: str | None = None
        while True:
            page = self.query(type, where, order_by=order_by, limit=page_size, after=after)
            yield from page.items
            if page.next is None:
                return
            after = page.next

    def count(self, type: str, where: Mapping[str, Any] | None = None) -> int:
        """How many records match (see ``Store.count``)."""
        return self._run(self._store.count(type, where))

    def aggregate(
        self,
        type: str,
        where: Mapping[str, Any] | None = None,
        *,
        group_by: Sequence[str] | str | None = None,
        metrics: Mapping[str, str | tuple[str, str]] | None = None,
    ) -> list[dict[str, Any]]:
        """Statistics per group (see ``Store.aggregate``)."""
        return self._run(self._store.aggregate(type, where, group_by=group_by, metrics=metrics))

    def purge_expired(self, *, type: str | None = None, limit: int = 10_000) -> int:
        """Delete expired records now (see ``Store.purge_expired``)."""
        return self._run(self._store.purge_expired(type=type, limit=limit))

    @contextmanager
    def transaction(self) -> Iterator[SyncTransaction]:
        """``with store.transaction() as tx``: commit at exit, roll back on error."""
        context = self._store.transaction()
        tx = self._run(context.__aenter__())
        try:
            yield SyncTransaction(tx, self._runner)
        except BaseException as exc:
            self._run(context.__aexit__(type(exc), exc, exc.__traceback__))
            raise
        self._run(context.__aexit__(None, None, None))

    # -- import and export -------------------------------------------------------------

    def export(
        self, types: Sequence[str] | str | None = None, *, where: Mapping[str, Any] | None = None
    ) -> Iterator[Record]:
        """Every record (of ``types``, matching ``where``), streamed in (type, id) order
        (see ``Store.export``)."""
        return self._iterate(self._store.export(types, where=where))

    def export_lines(
        self,
        types: Sequence[str] | str | None = None,
        *,
        where: Mapping[str, Any] | None = None,
        history: bool = False,
    ) -> Iterator[str]:
        """The export as JSONL lines, no newline (see ``Store.export_lines``)."""
        return self._iterate(self._store.export_lines(types, where=where, history=history))

    def export_jsonl(
        self,
        types: Sequence[str] | str | None = None,
        *,
        where: Mapping[str, Any] | None = None,
        history: bool = False,
    ) -> Iterator[bytes]:
        """The export as UTF-8 JSONL blocks (see ``Store.export_jsonl``)."""
        return self._iterate(self._store.export_jsonl(types, where=where, history=history))

    def import_jsonl(
        self,
        lines: Iterable[str | bytes],
        *,
        type: str | None = None,
        on_conflict: OnConflict = "skip",
        strict: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> ImportResult:
        """Import JSONL lines in one transaction (see ``Store.import_jsonl``)."""
        return self._run(
            self._store.import_jsonl(
                lines, type=type, on_conflict=on_conflict, strict=strict, progress=progress
            )
        )

    def import_dir(
        self,
        directory: str | os.PathLike[str],
        *,
        type: str,
        on_conflict: OnConflict = "skip",
        strict: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> ImportResult:
        """Import a directory of ``<id>.json`` files (see ``Store.import_dir``)."""
        return self._run(
            self._store.import_dir(
                directory, type=type, on_conflict=on_conflict, strict=strict, progress=progress
            )
        )

    def _iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        async def step() -> list[T]:
            try:
                return [await anext(items)]
            except StopAsyncIteration:
                return []

        try:
            while found := self._run(step()):
                yield found[0]
        finally:
            # Closing releases the connection; a stopped loop has released it already.
            aclose = getattr(items, "aclose", None)
            if aclose is not None and self._runner.loop.is_running():
                self._run(aclose())
