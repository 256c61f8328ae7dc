"""The public API: ``Store``, its transactions, and ``InMemoryStore``.

``Store`` validates every input before anything is written, encodes data to JSON
once, and hands the rest to a backend (``postgres.py`` or ``memory.py``).
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import os
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeAlias

from .backend import (
    Backend,
    CallRequest,
    SaveItem,
    TransactionBackend,
)
from .changes import ChangeFeed, ChangeStream
from .config import StoreConfig
from .errors import InvalidInput, NotFound, VersionConflict
from .memory import MemoryBackend
from .metrics import Metrics, MetricsSnapshot, timed
from .query import (
    Node,
    Page,
    build_aggregate,
    build_query,
    encode_cursor,
    parse_filter,
    parse_path,
)
from .record import (
    JSON,
    MISSING,
    AppliedCall,
    Encoded,
    Record,
    check_binary,
    check_call_id,
    check_id,
    check_ids,
    check_ttl,
    check_type,
    check_version,
    encode_data,
)
from .retry import DEFAULT_MAX_RETRIES, back_off
from .stats import FeedStats, ServerInfo, ServerStats
from .transfer import (
    EXPORT_CHUNK,
    ImportResult,
    OnConflict,
    Parsed,
    check_on_conflict,
    directory_rows,
    in_batches,
    in_thread,
    jsonl_rows,
    jsonl_rows_async,
    run_import,
)

MAX_LIST_LIMIT: Final = 100_000
MAX_PURGE_LIMIT: Final = 1_000_000
MAX_PARTITIONS: Final = 1024
MAX_PURGE_CALLS_LIMIT: Final = 1_000_000


UpdateFn: TypeAlias = Callable[[Any], Any | Awaitable[Any]]


async def _apply(fn: UpdateFn, data: Any) -> Any:
    """Run ``fn`` on ``data``; a None result means ``fn`` changed ``data`` in place."""
    result = fn(data)
    if inspect.isawaitable(result):
        result = await result
    return data if result is None else result


async def _next_state(
    record: Record | None, type: str, id: str, fn: UpdateFn, default: Any, max_bytes: int
) -> tuple[str, int]:
    """The JSON text ``fn`` makes of the record (or of ``default``), and the version to expect."""
    if record is not None:
        data, expected = record.data, record.version
    elif default is MISSING:
        raise NotFound(type, id)
    else:
        data, expected = copy.deepcopy(default), 0
    return encode_data(await _apply(fn, data), max_bytes), expected


class Transaction:
    """Operations inside ``store.transaction()``: applied in order, committed together."""

    def __init__(self, backend: TransactionBackend, max_bytes: int) -> None:
        self._backend = backend
        self._max_bytes = max_bytes

    async def load(self, type: str, id: str, *, lock: bool = False) -> Record | None:
        """Read a record as this transaction sees it; ``lock`` holds its row until the
        transaction ends (another writer of it waits; a missing record is not locked)."""
        return await self._backend.load(check_type(type), check_id(id), for_update=lock)

    async def save(
        self,
        type: str,
        id: str,
        data: JSON | Encoded,
        *,
        expected_version: int | None = None,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        """Write a record (same version and expiry rules as ``Store.save``)."""
        type, id = check_type(type), check_id(id)
        expected = check_version("expected_version", expected_version)
        seconds = check_ttl(ttl, sliding)
        if isinstance(data, Encoded) and data.text is None:
            if seconds is not None:
                raise InvalidInput("a ttl is not supported for a binary state in a transaction")
            assert data.payload is not None and data.manifest is not None
            return await self._backend.save_binary(type, id, data.payload, data.manifest, expected)
        text = _text(data, self._max_bytes)
        return await self._backend.save(type, id, text, expected, seconds, sliding)

    async def save_call(
        self,
        type: str,
        id: str,
        data: JSON | Encoded,
        *,
        expected_version: int,
        call_id: str,
        result: JSON | Encoded = None,
    ) -> Record:
        """``Store.save_call`` inside this transaction."""
        request = _call_request(type, id, data, expected_version, call_id, result, self._max_bytes)
        return await self._backend.save_call(request)

    async def applied_call(self, type: str, id: str, call_id: str) -> AppliedCall | None:
        """``Store.applied_call`` as this transaction sees it."""
        return await self._backend.applied_call(
            check_type(type), check_id(id), check_call_id(call_id)
        )

    async def delete(self, type: str, id: str, *, expected_version: int | None = None) -> bool:
        """Delete a record; False if it did not exist."""
        expected = check_version("expected_version", expected_version)
        return await self._backend.delete(check_type(type), check_id(id), expected)

    async def update(
        self,
        type: str,
        id: str,
        fn: UpdateFn,
        *,
        default: Any = MISSING,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        """Read (locking the record), apply ``fn`` and write, within this transaction."""
        type, id = check_type(type), check_id(id)
        seconds = check_ttl(ttl, sliding)
        record = await self._backend.load(type, id, for_update=True)
        text, expected = await _next_state(record, type, id, fn, default, self._max_bytes)
        return await self._backend.save(type, id, text, expected, seconds, sliding)


class _TransactionContext:
    def __init__(self, backend: Backend, max_bytes: int) -> None:
        self._cm = backend.transaction()
        self._max_bytes = max_bytes

    async def __aenter__(self) -> Transaction:
        return Transaction(await self._cm.__aenter__(), self._max_bytes)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._cm.__aexit__(exc_type, exc, tb)


class Store:
    """Versioned JSON state by ``(type, id)`` in PostgreSQL.

    Create it with :meth:`connect` or :meth:`embedded`; use it as an async context
    manager or call :meth:`close`.
    """

    def __init__(self, backend: Backend, config: StoreConfig) -> None:
        self._backend = backend
        self.config = config
        self._max_bytes = config.max_data_bytes
        self._feed: ChangeFeed | None = None
        self._metrics = Metrics()

    # -- opening and closing --------------------------------------------------------------

    @classmethod
    async def connect(
        cls, dsn_or_config: str | StoreConfig | None = None, /, **overrides: Any
    ) -> Self:
        """Connect to PostgreSQL: a DSN, a ``StoreConfig``, or None (from the environment)."""
        from .postgres import PostgresBackend

        config = StoreConfig.resolve(dsn_or_config, **overrides)
        return cls(await PostgresBackend.open(config), config)

    @classmethod
    async def embedded(
        cls, data_dir: str | os.PathLike[str] | None = None, /, **overrides: Any
    ) -> Self:
        """Start (or reuse) the embedded PostgreSQL server in ``data_dir`` and connect to it."""
        from .target import resolve_target

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
        from .target import resolve_target

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
        if partitions is not None and (
            isinstance(partitions, bool)
            or not isinstance(partitions, int)
            or not 0 <= partitions <= MAX_PARTITIONS
        ):
            raise InvalidInput(
                f"partitions must be an int from 0 to {MAX_PARTITIONS}, got {partitions!r}"
            )
        return await self._backend.init_schema(partitions or None)

    async def schema_version(self) -> int | None:
        """The installed schema version, or None when not installed."""
        return await self._backend.schema_version()

    async def verify_schema(self) -> list[tuple[str, str, bool]]:
        """Each expected table, index and function as ``(kind, name, present)``."""
        return await self._backend.verify()

    async def info(self) -> ServerInfo:
        """Server version, round-trip latency, schema version, records per type, sizes."""
        return await self._backend.server_info()

    async def server_stats(self) -> ServerStats:
        """Sizes, dead rows, last autovacuum, writes in the last minute, connections."""
        return await self._backend.server_stats()

    def metrics(self) -> MetricsSnapshot:
        """This store's operation counts, latencies, conflicts, retries and pool usage."""
        backend = self._backend
        return self._metrics.snapshot(backend.pool_stats(), backend.retry_counts())

    async def drop_schema(self) -> None:
        """Drop every pgactors table and function of this schema and prefix: ALL STATE."""
        await self._backend.drop_schema()

    # -- single records -------------------------------------------------------------------

    @timed("load")
    async def load(self, type: str, id: str) -> Record | None:
        """The record, or None if it does not exist."""
        return await self._backend.load(check_type(type), check_id(id))

    @timed("exists")
    async def exists(self, type: str, id: str) -> bool:
        """True if the record exists."""
        return await self._backend.exists(check_type(type), check_id(id))

    @timed("save")
    async def save(
        self,
        type: str,
        id: str,
        data: JSON | Encoded,
        *,
        expected_version: int | None = None,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        """Write ``data``; return the stored record with its new version.

        ``expected_version``: None writes whatever is stored (last write wins), 0 only
        creates, N only replaces version N. A mismatch raises ``VersionConflict``.

        ``ttl`` (seconds > 0): the record expires that long after this save (server
        time) and is then absent everywhere, as if deleted. A save without ``ttl``
        clears the expiry, unless the record was saved with ``sliding=True``: then
        every save extends it by that ttl again.

        ``data`` may be an ``Encoded`` state from :meth:`encode` or :meth:`encode_binary`.
        """
        type, id = check_type(type), check_id(id)
        expected = check_version("expected_version", expected_version)
        seconds = check_ttl(ttl, sliding)
        if isinstance(data, Encoded) and data.text is None:
            assert data.payload is not None and data.manifest is not None
            return await self._backend.save_binary(
                type, id, data.payload, data.manifest, expected, seconds, sliding
            )
        text = _text(data, self._max_bytes)
        return await self._backend.save(type, id, text, expected, seconds, sliding)

    def encode(self, data: JSON) -> Encoded:
        """Check and encode ``data`` as ``save`` would, once: saving the result, or comparing
        it with an earlier one, costs no second encoding. Raises ``InvalidInput``."""
        return Encoded(encode_data(data, self._max_bytes))

    def encode_binary(self, payload: bytes, manifest: str) -> Encoded:
        """Check a binary state as ``save_binary`` would, for ``save`` and ``save_call``."""
        data, name = check_binary(payload, manifest, self._max_bytes)
        return Encoded(None, data, name)

    @timed("save_call")
    async def save_call(
        self,
        type: str,
        id: str,
        data: JSON | Encoded,
        *,
        expected_version: int,
        call_id: str,
        result: JSON | Encoded = None,
    ) -> Record:
        """Save ``data`` and record that call ``call_id`` produced it, atomically.

        For exactly-once calls: the state and the call's ``result`` (JSON) commit together
        or not at all. ``expected_version`` is required (0 creates the record). If the
        call is already recorded for this record, nothing is saved and
        ``CallAlreadyApplied`` carries the original result; a stale version raises
        ``VersionConflict``. Recorded calls are kept apart from the record's data
        (queries and exports never see them) until :meth:`purge_calls` removes them.
        """
        request = _call_request(type, id, data, expected_version, call_id, result, self._max_bytes)
        return await self._backend.save_call(request)

    async def applied_call(self, type: str, id: str, call_id: str) -> AppliedCall | None:
        """The call recorded by :meth:`save_call` for this record, or None."""
        return await self._backend.applied_call(
            check_type(type), check_id(id), check_call_id(call_id)
        )

    async def purge_calls(self, *, older_than: float, limit: int = 10_000) -> int:
        """Forget the calls recorded more than ``older_than`` seconds ago; return how many.

        A call retried after its record is purged would be applied again.
        """
        if (
            isinstance(older_than, bool)
            or not isinstance(older_than, int | float)
            or not 0 <= older_than < float("inf")
        ):
            raise InvalidInput(f"older_than must be a number of seconds >= 0, got {older_than!r}")
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= MAX_PURGE_CALLS_LIMIT
        ):
            raise InvalidInput(
                f"limit must be an int from 1 to {MAX_PURGE_CALLS_LIMIT}, got {limit!r}"
            )
        return await self._backend.purge_calls(float(older_than), limit)

    @timed("save_binary")
    async def save_binary(
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
        """Write a binary state: ``payload`` bytes and the ``manifest`` naming their format.

        Same version and expiry rules as :meth:`save`. The record's ``data`` is None;
        see ``pgactors.codecs`` for protobuf messages and raw bytes.
        """
        type, id = check_type(type), check_id(id)
        expected = check_version("expected_version", expected_version)
        seconds = check_ttl(ttl, sliding)
        data, name = check_binary(payload, manifest, self._max_bytes)
        return await self._backend.save_binary(type, id, data, name, expected, seconds, sliding)

    @timed("delete")
    async def delete(self, type: str, id: str, *, expected_version: int | None = None) -> bool:
        """Delete the record; False if there was nothing to delete.

        With ``expected_version``, a different stored version raises ``VersionConflict``.
        """
        type, id = check_type(type), check_id(id)
        expected = check_version("expected_version", expected_version)
        return await self._backend.delete(type, id, expected)

    @timed("update")
    async def update(
        self,
        type: str,
        id: str,
        fn: UpdateFn,
        *,
        default: Any = MISSING,
        max_retries: int = DEFAULT_MAX_RETRIES,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        """Atomically replace the data with ``fn(data)``, retrying on concurrent changes.

        ``fn`` gets a private copy; it returns the new data, or None after changing
        its argument in place. It may be re-run, so it should have no side effects.
        A missing (or expired) record starts from ``default``, or raises ``NotFound``.
        The write is a save: ``ttl`` and ``sliding`` work as in :meth:`save`.
        """
        type, id = check_type(type), check_id(id)
        seconds = check_ttl(ttl, sliding)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidInput(f"max_retries must be an int >= 0, got {max_retries!r}")
        if default is not MISSING:
            encode_data(default, self._max_bytes)
        for attempt in range(max_retries + 1):
            record = await self._backend.load(type, id)
            text, expected = await _next_state(record, type, id, fn, default, self._max_bytes)
            try:
                return await self._backend.save(type, id, text, expected, seconds, sliding)
            except VersionConflict as conflict:
                if attempt == max_retries:
                    raise VersionConflict(
                        type, id, conflict.expected, conflict.actual
                    ) from conflict
                self._metrics.retried("update")
            await back_off(attempt)
        raise AssertionError("unreachable")

    # -- batches ----------------------------------------------------------------------------

    @timed("load_many")
    async def load_many(self, type: str, ids: Iterable[str]) -> dict[str, Record]:
        """The existing records among ``ids``, keyed by id (missing ids are absent)."""
        type, id_list = check_type(type), check_ids(ids)
        if not id_list:
            return {}
        return await self._backend.load_many(type, id_list)

    @timed("save_many")
    async def save_many(
        self,
        type: str,
        items: Mapping[str, JSON],
        *,
        expected_versions: Mapping[str, int | None] | None = None,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> dict[str, Record]:
        """Write several records in one atomic round trip.

        ``expected_versions`` maps ids to expected versions (same rules as ``save``);
        one mismatch fails the whole batch with ``VersionConflict`` naming every
        conflicting id, and nothing is written. ``ttl`` and ``sliding`` apply to every
        record, as in ``save``.
        """
        type = check_type(type)
        seconds = check_ttl(ttl, sliding)
        if not isinstance(items, Mapping):
            raise InvalidInput(
                f"items must be a mapping of id to data, got {items.__class__.__name__}"
            )
        expected_versions = expected_versions or {}
        unknown = set(expected_versions) - set(items)
        if unknown:
            raise InvalidInput(f"expected_versions names ids not in items: {sorted(unknown)[:10]}")
        batch = [
            SaveItem(
                check_id(id),
                encode_data(data, self._max_bytes),
                check_version(f"expected_versions[{id!r}]", expected_versions.get(id)),
            )
            for id, data in items.items()
        ]
        if not batch:
            return {}
        batch.sort(key=lambda item: item.id)
        return await self._backend.save_many(type, batch, seconds, sliding)

    @timed("delete_many")
    async def delete_many(self, type: str, ids: Iterable[str]) -> int:
        """Delete several records atomically; return how many existed."""
        type, id_list = check_type(type), check_ids(ids)
        if not id_list:
            return 0
        return await self._backend.delete_many(type, sorted(id_list))

    # -- listing ------------------------------------------------------------------------------

    @timed("list_ids")
    async def list_ids(
        self,
        type: str,
        *,
        prefix: str | None = None,
        after: str | None = None,
        limit: int = 1000,
    ) -> list[str]:
        """Ids of ``type`` in code-point order; page with ``after`` (the last id seen)."""
        type = check_type(type)
        for name, value in (("prefix", prefix), ("after", after)):
            if value is not None and (not isinstance(value, str) or "\x00" in value):
                raise InvalidInput(f"{name} must be a str without NUL, got {value!r}")
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= MAX_LIST_LIMIT
        ):
            raise InvalidInput(f"limit must be an int from 1 to {MAX_LIST_LIMIT}, got {limit!r}")
        return await self._backend.list_ids(
            type, prefix=prefix or "", after=after or "", limit=limit
        )

    @timed("types")
    async def types(self) -> dict[str, int]:
        """Every type that has records, with its record count."""
        return await self._backend.types()

    # -- queries ------------------------------------------------------------------------------

    @timed("query")
    async def query(
        self,
        type: str,
        where: Mapping[str, Any] | None = None,
        *,
        order_by: Sequence[str] | str | None = None,
        limit: int = 100,
        after: str | None = None,
        offset: int | None = None,
    ) -> Page:
        """One page of the records of ``type`` matching ``where`` (see ``pgactors.query``).

        ``order_by``: paths, ``-`` for descending (``["-score", "@id"]``); ties are broken
        by ``@id`` and missing values sort last. ``after=page.next`` continues with the
        next page (keyset pagination); ``offset`` skips rows instead. Raises
        ``InvalidQuery`` for a malformed filter before any SQL runs.
        """
        q = build_query(type, where, order_by, limit, after, offset)
        rows = await self._backend.query(q)
        items = [record for record, _ in rows[: q.limit]]
        next_cursor = None
        if len(rows) > q.limit:
            next_cursor = encode_cursor(q.fingerprint, rows[q.limit - 1][1])
        return Page(items, next_cursor)

    async def query_all(
        self,
        type: str,
        where: Mapping[str, Any] | None = None,
        *,
        order_by: Sequence[str] | str | None = None,
        page_size: int = 1000,
    ) -> AsyncIterator[Record]:
        """Every matching record, fetched a page at a time (memory stays bounded)."""
        after: str | None = None
        while True:
            page = await self.query(type, where, order_by=order_by, limit=page_size, after=after)
            for record in page.items:
                yield record
            if page.next is None:
                return
            after = page.next

    async def explain(
        self,
        type: str,
        where: Mapping[str, Any] | None = None,
        *,
        order_by: Sequence[str] | str | None = None,
        limit: int = 100,
    ) -> str:
        """How the query would run: PostgreSQL's EXPLAIN plan (to check index use)."""
        return await self._backend.explain(build_query(type, where, order_by, limit, None, None))

    async def create_index(self, type: str, path: str) -> str:
        """Index a hot path (``"profile.level"``) of ``type``: equality, ``$in`` and number
        ranges on it can then use a b-tree. Built without blocking writes where the server
        can. Returns the index name."""
        return await self._backend.create_index(check_type(type), parse_path(path))

    async def drop_index(self, type: str, path: str) -> bool:
        """Drop the index made by ``create_index``; False if there was none."""
        return await self._backend.drop_index(check_type(type), parse_path(path).text)

    async def indexes(self) -> list[tuple[str, str, str]]:
        """Every index made by ``create_index``, as ``(type, path, index name)``."""
        return await self._backend.indexes()

    @timed("count")
    async def count(self, type: str, where: Mapping[str, Any] | None = None) -> int:
        """How many records of ``type`` match ``where``."""
        return await self._backend.count(check_type(type), parse_filter(where))

    @timed("aggregate")
    async def aggregate(
        self,
        type: str,
        where: Mapping[str, Any] | None = None,
        *,
        group_by: Sequence[str] | str | None = None,
        metrics: Mapping[str, str | tuple[str, str]] | None = None,
    ) -> list[dict[str, Any]]:
        """Statistics per group, e.g. ``metrics={"n": "count", "best": ("max", "score")}``.

        Functions: ``count`` (rows), ``(count, path)`` (rows where path exists),
        ``sum``/``avg``/``min``/``max`` over the numbers at a path (None if there are
        none). One dict per group, keyed by the group_by paths and the metric names,
        in group order (missing values, shown as None, last).
        """
        spec = build_aggregate(type, where, group_by, metrics)
        return await self._backend.aggregate(spec)

    # -- expiry ---------------------------------------------------------------------------------

    async def purge_expired(self, *, type: str | None = None, limit: int = 10_000) -> int:
        """Delete the expired records (of ``type``) now; return how many.

        Expired records are already invisible; this frees their space. It deletes
        ``limit`` rows per statement, each committed on its own, until none is left
        (rows a writer holds at that moment wait for the next purge). Each purged
        record appears in the change feed as a 'delete'. A store that saved a record
        with a ttl also purges every ``purge_interval`` seconds in the background.
        """
        if type is not None:
            type = check_type(type)
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= MAX_PURGE_LIMIT
        ):
            raise InvalidInput(f"limit must be an int from 1 to {MAX_PURGE_LIMIT}, got {limit!r}")
        return await self._backend.purge_expired(type, limit)

    # -- change feed ----------------------------------------------------------------------------

    def changes(
        self, types: Sequence[str] | str | None = None, *, since: int | str | None = None
    ) -> ChangeStream:
        """Every committed change (of ``types``), in commit order, at least once.

        ``since``: None starts now, 0 at the oldest retained change, a position right
        after that change. ``async for change in store.changes()``; use
        ``async with store.changes() as stream`` to subscribe before the first read.
        A resume point older than the retention raises ``ChangesExpired``.
        """
        if self._feed is None:
            self._feed = ChangeFeed(self._backend)
        return ChangeStream(self._feed, _types_list(types), since)  # type: ignore[arg-type]

    async def feed_stats(self) -> FeedStats:
        """The change log's positions, row count and size."""
        return await self._backend.feed_stats()

    async def sequence_changes(self) -> int:
        """Number (and notify) committed changes now; writes do this by themselves."""
        return await self._backend.sequence_changes()

    async def prune_changes(self) -> int:
        """Delete changes older than ``changes_retention`` now (listeners do this by themselves)."""
        return await self._backend.prune_changes()

    # -- import and export ---------------------------------------------------------------------

    def export(
        self, types: Sequence[str] | str | None = None, *, where: Mapping[str, Any] | None = None
    ) -> AsyncIterator[Record]:
        """Every record (of ``types``, matching the query filter ``where``) in (type, id)
        order, streamed from one snapshot. Memory stays flat whatever the table size."""
        selected, node = self._export_args(types, where)
        return self._export_records(selected, node)

    async def _export_records(
        self, types: list[str] | None, where: Node | None
    ) -> AsyncIterator[Record]:
        async for chunk in self._backend.export_records(types, EXPORT_CHUNK, where):
            for record in chunk:
                yield record

    def export_lines(
        self, types: Sequence[str] | str | None = None, *, where: Mapping[str, Any] | None = None
    ) -> AsyncIterator[str]:
        """The records of :meth:`export` as JSONL lines (no newline): the fast path.

        ``{"type", "id", "version", "data", "created_at", "updated_at"}``, with
        ``"payload"`` (base64) and ``"manifest"`` instead of ``"data"`` for binary states.
        """
        selected, node = self._export_args(types, where)
        return self._export_lines(selected, node)

    async def _export_lines(
        self, types: list[str] | None, where: Node | None
    ) -> AsyncIterator[str]:
        async for block in self._backend.export_jsonl(types, EXPORT_CHUNK, where):
            # JSON text never holds a raw newline, so lines split on it alone.
            for line in block.decode().split("\n")[:-1]:
                yield line

    def export_jsonl(
        self, types: Sequence[str] | str | None = None, *, where: Mapping[str, Any] | None = None
    ) -> AsyncIterator[bytes]:
        """The lines of :meth:`export_lines` as UTF-8 blocks of many, each line ending in
        a newline: the fastest way to write an export to a (binary) file."""
        selected, node = self._export_args(types, where)
        return self._backend.export_jsonl(selected, EXPORT_CHUNK, node)

    def _export_args(
        self, types: Sequence[str] | str | None, where: Mapping[str, Any] | None
    ) -> tuple[list[str] | None, Node | None]:
        node = None if where is None else parse_filter(where)
        selected = _types_list(types)
        return (None if selected is None else [check_type(t) for t in selected]), node

    async def import_jsonl(
        self,
        lines: Iterable[str | bytes] | AsyncIterable[str | bytes],
        *,
        type: str | None = None,
        on_conflict: OnConflict = "skip",
        strict: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> ImportResult:
        """Import JSONL lines (an open file, a list, ``export_lines()`` of another store).

        One transaction. ``type`` overrides each line's type. An existing record is kept
        (``"skip"``), replaced by the line's record with its version and timestamps
        (``"overwrite"``), or aborts the import (``"fail"``, raising ``ImportAborted``).
        A refused line is counted and reported with its number, and the rest imported;
        with ``strict`` it aborts the import and nothing is written. ``progress`` is
        called with the number of lines read so far after every chunk.
        """
        mode = check_on_conflict(on_conflict)
        if type is not None:
            check_type(type)
        if isinstance(lines, AsyncIterable):
            batches = jsonl_rows_async(lines, type, self._max_bytes)
        else:
            batches = in_batches(jsonl_rows(lines, type, self._max_bytes))
        return await self._import(batches, mode, strict, progress)

    async def import_dir(
        self,
        directory: str | os.PathLike[str],
        *,
        type: str,
        on_conflict: OnConflict = "skip",
        strict: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> ImportResult:
        """Import every ``<id>.json`` file of a directory as the data of record ``type/<id>``.

        Same rules as :meth:`import_jsonl`; errors name the file. New records get version
        1, overwritten ones the stored version + 1.
        """
        mode = check_on_conflict(on_conflict)
        path = Path(directory)
        if not await asyncio.to_thread(path.is_dir):
            raise InvalidInput(f"{path} is not a directory")
        rows = directory_rows(path, check_type(type), self._max_bytes)
        return await self._import(in_thread(rows), mode, strict, progress)

    async def _import(
        self,
        batches: AsyncIterator[list[Parsed]],
        on_conflict: OnConflict,
        strict: bool,
        progress: Callable[[int], None] | None,
    ) -> ImportResult:
        async with self._backend.importer(on_conflict) as importer:
            return await run_import(
                importer, batches, on_conflict, strict=strict, progress=progress
            )

    # -- transactions ---------------------------------------------------------------------------

    def transaction(self) -> _TransactionContext:
        """``async with store.transaction() as tx``: commit at exit, roll back on error."""
        return _TransactionContext(self._backend, self._max_bytes)


class InMemoryStore(Store):
    """A ``Store`` whose records live in this process only; same semantics, for tests."""

    def __init__(self, config: StoreConfig | None = None) -> None:
        config = config or StoreConfig()
        super().__init__(MemoryBackend(config.changes_retention, changes=config.changes), config)

    @classmethod
    async def create(cls, config: StoreConfig | None = None) -> InMemoryStore:
        """An empty in-memory store (symmetry with ``Store.connect``)."""
        return cls(config)


def _text(data: JSON | Encoded, max_bytes: int) -> str:
    """The JSON text to store: encoded now, or as ``Store.encode`` made it."""
    if isinstance(data, Encoded):
        if data.text is None:
            raise InvalidInput("a binary state cannot be saved here")
        return data.text
    return encode_data(data, max_bytes)


def _call_request(
    type: str,
    id: str,
    data: JSON | Encoded,
    expected_version: int,
    call_id: str,
    result: JSON | Encoded,
    max_bytes: int,
) -> CallRequest:
    expected = check_version("expected_version", expected_version, allow_none=False)
    assert expected is not None
    if isinstance(result, Encoded) and result.text is None:
        raise InvalidInput("a call's result is stored as JSON: it cannot be a binary state")
    state = data if isinstance(data, Encoded) else Encoded(encode_data(data, max_bytes))
    return CallRequest(
        check_type(type),
        check_id(id),
        state,
        expected,
        check_call_id(call_id),
        _text(result, max_bytes),
    )


def _types_list(types: Sequence[str] | str | None) -> list[str] | None:
    if types is None:
        return None
    return [types] if isinstance(types, str) else list(types)
