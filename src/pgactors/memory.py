"""The in-memory twin of the PostgreSQL backend, for fast unit tests of higher layers.

It keeps JSON text, so every load returns a private copy, exactly as the database
does. Transactions serialise writers on one lock and apply their writes atomically
at commit. Data lives only as long as the process.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import takewhile
from typing import Any, Literal

from . import query as querying
from . import schema
from .backend import CallRequest, SaveItem, TransactionBackend, stale
from .changes import Change, FeedListener, range_payload
from .errors import CallAlreadyApplied, VersionConflict
from .history import HistoryPolicy, PastVersion
from .jsonl import ImportRow, json_error, record_line
from .memory_history import MemoryHistory, Rows
from .memory_reminders import (
    Entries,
    MemoryListener,
    MemoryReminders,
    advance_entry,
    set_entry,
)
from .record import AppliedCall, Record
from .reminders import Reminder, ReminderRequest
from .stats import FeedStats, Overview, ServerInfo, ServerStats
from .transfer import ImportOutcome, OnConflict, conflict_error


@dataclass(frozen=True, slots=True)
class _Row:
    text: str | None
    version: int
    created_at: datetime
    updated_at: datetime
    payload: bytes | None = None
    manifest: str | None = None
    expires_at: datetime | None = None
    sliding_ttl: float | None = None

    def live(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


_Rows = Rows[_Row]


def _past(key: tuple[str, str], row: _Row, deleted: bool) -> PastVersion:
    """A replaced row as a past version; a row replaced after it expired was deleted."""
    data = None if row.text is None else json.loads(row.text)
    now = datetime.now(UTC)
    return PastVersion(
        *key,
        data,
        row.version,
        row.created_at,
        row.updated_at,
        row.payload,
        row.manifest,
        row.expires_at,
        replaced_at=now,
        deleted=deleted or not row.live(now),
    )


def _get(rows: _Rows, type: str, id: str) -> _Row | None:
    """The row, unless it is missing or expired (an expired row is absent)."""
    row = rows.get((type, id))
    return row if row is not None and row.live(datetime.now(UTC)) else None


def _record(type: str, id: str, row: _Row) -> Record:
    data = None if row.text is None else json.loads(row.text)
    return Record(
        type,
        id,
        data,
        row.version,
        row.created_at,
        row.updated_at,
        row.payload,
        row.manifest,
        row.expires_at,
    )


def _write(
    rows: _Rows,
    type: str,
    id: str,
    text: str | None,
    expected: int | None,
    binary: tuple[bytes, str] | None = None,
    ttl: float | None = None,
    sliding: bool = False,
) -> Record:
    old = _get(rows, type, id)
    actual = old.version if old else 0
    VersionConflict.check(type, id, expected, actual)
    now = datetime.now(UTC)
    payload, manifest = binary or (None, None)
    if ttl is None and old is not None and old.sliding_ttl is not None:
        ttl, sliding = old.sliding_ttl, True
    expires_at = None if ttl is None else now + timedelta(seconds=ttl)
    row = _Row(
        text,
        actual + 1,
        old.created_at if old else now,
        now,
        payload,
        manifest,
        expires_at,
        ttl if sliding else None,
    )
    rows[(type, id)] = row
    return _record(type, id, row)


def _remove(rows: _Rows, type: str, id: str, expected: int | None) -> int:
    """Delete; return the deleted version, 0 if nothing was there."""
    old = _get(rows, type, id)
    actual = old.version if old else 0
    VersionConflict.check(type, id, expected, actual)
    if old is not None:
        del rows[(type, id)]
    return actual


_Event = tuple[str, str, int, Literal["save", "delete"]]
_Calls = dict[tuple[str, str, str], AppliedCall]


def _save_call(rows: _Rows, calls: _Calls, request: CallRequest) -> Record:
    applied = calls.get((request.type, request.id, request.call_id))
    if applied is not None:
        raise CallAlreadyApplied(request.type, request.id, applied)
    state = request.state
    binary = None
    if state.payload is not None and state.manifest is not None:
        binary = (state.payload, state.manifest)
    record = _write(rows, request.type, request.id, state.text, request.expected, binary)
    calls[(request.type, request.id, request.call_id)] = AppliedCall(
        request.call_id, json.loads(request.result), record.updated_at
    )
    return record


class _MemoryTransaction:
    def __init__(self, rows: _Rows, calls: _Calls, reminders: Entries) -> None:
        self.rows = rows
        self.calls = calls
        self.reminders = reminders
        self.events: list[_Event] = []
        self.set: list[Reminder] = []

    async def set_reminder(self, request: ReminderRequest) -> Reminder:
        reminder = set_entry(self.reminders, request)
        self.set.append(reminder)
        return reminder

    async def cancel_reminder(self, type: str, id: str, name: str) -> bool:
        return self.reminders.pop((type, id, name), None) is not None

    async def save_binary(
        self, type: str, id: str, payload: bytes, manifest: str, expected: int | None
    ) -> Record:
        record = _write(self.rows, type, id, None, expected, (payload, manifest))
        self.events.append((type, id, record.version, "save"))
        return record

    async def save_call(self, request: CallRequest) -> Record:
        record = _save_call(self.rows, self.calls, request)
        self.events.append((request.type, request.id, record.version, "save"))
        return record

    async def applied_call(self, type: str, id: str, call_id: str) -> AppliedCall | None:
        return self.calls.get((type, id, call_id))

    async def load(self, type: str, id: str, *, for_update: bool = False) -> Record | None:
        row = _get(self.rows, type, id)
        return _record(type, id, row) if row else None

    async def save(
        self,
        type: str,
        id: str,
        text: str,
        expected: int | None,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        record = _write(self.rows, type, id, text, expected, None, ttl, sliding)
        self.events.append((type, id, record.version, "save"))
        return record

    async def delete(self, type: str, id: str, expected: int | None) -> bool:
        version = _remove(self.rows, type, id, expected)
        if version:
            self.events.append((type, id, version, "delete"))
        return bool(version)


class _MemoryImporter:
    """An import applied to a copy of the rows, swapped in at commit."""

    def __init__(self, rows: _Rows, on_conflict: OnConflict) -> None:
        self.rows = rows
        self.on_conflict = on_conflict
        self.events: list[_Event] = []
        self.policies: list[HistoryPolicy] = []
        self.past: list[PastVersion] = []

    async def history(self, policies: list[HistoryPolicy], rows: list[PastVersion]) -> None:
        self.policies += policies
        self.past += rows

    async def write(self, rows: list[ImportRow]) -> ImportOutcome:
        if self.on_conflict == "fail":
            existing = sorted((r.type, r.id) for r in rows if _get(self.rows, r.type, r.id))
            if existing:
                raise conflict_error(existing)
        outcome = ImportOutcome()
        now = datetime.now(UTC)
        for row in sorted(rows, key=lambda r: (r.type, r.id)):
            # PostgreSQL parses the data text as it receives it; so does its twin.
            error = None if row.text is None else json_error(row.text)
            if error is not None:
                outcome.rejected.append((row, error))
                continue
            old = _get(self.rows, row.type, row.id)  # an expired record is absent
            if old is not None and self.on_conflict == "skip":
                outcome.skipped += 1
                continue
            text = None if row.text is None else row.text.decode()
            version = row.version or (old.version + 1 if old else 1)
            created_at = row.created_at or (old.created_at if old else now)
            self.rows[(row.type, row.id)] = _Row(
                text, version, created_at, row.updated_at or now, row.payload, row.manifest
            )
            self.events.append((row.type, row.id, version, "save"))
            if old is None:
                outcome.imported += 1
            else:
                outcome.overwritten += 1
        return outcome


class MemoryBackend:
    """A backend holding records in a dict; same semantics as PostgreSQL.

    One object plays every role (records, queries, feed, transfer, admin).
    """

    def __init__(self, retention: float = 86400.0, *, changes: bool = True) -> None:
        self._write_lock = asyncio.Lock()
        self._history = MemoryHistory(self._write_lock)
        self._rows: _Rows = Rows(self._history, _past)
        self._calls: _Calls = {}
        self._indexes: set[tuple[str, str]] = set()
        self._log: list[Change] = []
        self._position = 0
        self._pruned = 0
        self._retention = retention
        self._changes = changes
        self._listeners: set[MemoryListener] = set()
        self._reminders = MemoryReminders(self._write_lock)

    @property
    def records(self) -> MemoryBackend:
        """Records, batches, transactions: this object."""
        return self

    @property
    def queries(self) -> MemoryBackend:
        """Queries and indexes: this object."""
        return self

    @property
    def feed(self) -> MemoryBackend:
        """The change log: this object."""
        return self

    @property
    def reminders(self) -> MemoryReminders:
        """Reminders."""
        return self._reminders

    @property
    def transfer(self) -> MemoryBackend:
        """Export and import: this object."""
        return self

    @property
    def admin(self) -> MemoryBackend:
        """Schema and statistics: this object."""
        return self

    @property
    def history(self) -> MemoryHistory:
        """Version history."""
        return self._history

    def _publish(self, events: list[_Event]) -> None:
        # Every write ends here once applied: its replaced versions are kept now.
        self._history.keep(self._rows)
        if not self._changes or not events:
            return
        now = datetime.now(UTC)
        first = self._position + 1
        for type, id, version, op in events:
            self._position += 1
            self._log.append(Change(type, id, version, op, now, self._position))
        # One notification per batch, naming its range, as PostgreSQL's numbering pass.
        payload = range_payload(first, self._position)
        for listener in self._listeners:
            listener.queue.put_nowait(payload)

    async def load(self, type: str, id: str, *, for_update: bool = False) -> Record | None:
        row = _get(self._rows, type, id)
        return _record(type, id, row) if row else None

    async def exists(self, type: str, id: str) -> bool:
        return _get(self._rows, type, id) is not None

    async def save(
        self,
        type: str,
        id: str,
        text: str,
        expected: int | None,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        async with self._write_lock:
            record = _write(self._rows, type, id, text, expected, None, ttl, sliding)
            self._publish([(type, id, record.version, "save")])
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
        async with self._write_lock:
            record = _write(self._rows, type, id, None, expected, (payload, manifest), ttl, sliding)
            self._publish([(type, id, record.version, "save")])
            return record

    async def save_call(self, request: CallRequest) -> Record:
        async with self._write_lock:
            try:
                record = _save_call(self._rows, self._calls, request)
            except CallAlreadyApplied:
                if request.advance is not None:
                    advance_entry(self._reminders.entries, request.advance)
                raise
            if request.advance is not None:
                advance_entry(self._reminders.entries, request.advance)
            self._publish([(request.type, request.id, record.version, "save")])
            return record

    async def applied_call(self, type: str, id: str, call_id: str) -> AppliedCall | None:
        return self._calls.get((type, id, call_id))

    async def purge_calls(self, older_than: float, limit: int, prefix: str | None = None) -> int:
        async with self._write_lock:
            cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
            doomed = [
                key
                for key, call in self._calls.items()
                if call.applied_at < cutoff and key[2].startswith(prefix or "")
            ]
            for key in doomed:
                del self._calls[key]
            return len(doomed)

    async def delete(self, type: str, id: str, expected: int | None) -> bool:
        async with self._write_lock:
            version = _remove(self._rows, type, id, expected)
            if version:
                self._publish([(type, id, version, "delete")])
            return bool(version)

    async def load_many(self, type: str, ids: list[str]) -> dict[str, Record]:
        return {i: _record(type, i, r) for i in ids if (r := _get(self._rows, type, i))}

    async def save_many(
        self,
        type: str,
        items: list[SaveItem],
        ttl: float | None = None,
        sliding: bool = False,
    ) -> dict[str, Record]:
        async with self._write_lock:
            current = {i.id: row.version for i in items if (row := _get(self._rows, type, i.id))}
            conflicts = stale(items, current)
            if conflicts:
                raise VersionConflict.in_batch(type, conflicts)
            saved = {
                item.id: _write(self._rows, type, item.id, item.text, None, None, ttl, sliding)
                for item in sorted(items, key=lambda i: i.id)
            }
            self._publish([(type, r.id, r.version, "save") for r in saved.values()])
            return saved

    async def delete_many(self, type: str, ids: list[str]) -> int:
        async with self._write_lock:
            events: list[_Event] = []
            for id in sorted(ids):
                version = _remove(self._rows, type, id, None)
                if version:
                    events.append((type, id, version, "delete"))
            self._publish(events)
            return len(events)

    async def list_ids(self, type: str, *, prefix: str, after: str, limit: int) -> list[str]:
        now = datetime.now(UTC)
        found = sorted(
            id
            for (t, id), row in self._rows.items()
            if t == type and id > after and id.startswith(prefix) and row.live(now)
        )
        return found[:limit]

    def _of_type(self, type: str, where: querying.Node) -> list[Record]:
        now = datetime.now(UTC)
        records = (
            _record(t, id, row)
            for (t, id), row in self._rows.items()
            if t == type and row.live(now)
        )
        return [r for r in records if querying.matches(where, r)]

    async def query(self, q: querying.Query) -> list[tuple[Record, tuple[Any, ...]]]:
        found = [(r, querying.sort_values(q.order, r)) for r in self._of_type(q.type, q.where)]
        if q.after is not None:
            cursor = q.after
            found = [(r, v) for r, v in found if querying.after_cursor(q.order, v, cursor)]
        ordered = querying.sort_records(q.order, [r for r, _ in found])
        values = {id(r): v for r, v in found}
        page = ordered[q.offset : q.offset + q.limit + 1]
        return [(r, values[id(r)]) for r in page]

    async def count(self, type: str, where: querying.Node) -> int:
        return len(self._of_type(type, where))

    async def aggregate(self, spec: querying.Aggregate) -> list[dict[str, Any]]:
        return querying.aggregate_records(spec, self._of_type(spec.type, spec.where))

    async def explain(self, q: querying.Query) -> str:
        return "in-memory scan of every record of the type"

    async def create_index(self, type: str, path: querying.Path) -> str:
        self._indexes.add((type, path.text))
        return f"memory:{type}:{path.text}"

    async def drop_index(self, type: str, path: str) -> bool:
        found = (type, path) in self._indexes
        self._indexes.discard((type, path))
        return found

    async def indexes(self) -> list[tuple[str, str, str]]:
        return sorted((t, p, f"memory:{t}:{p}") for t, p in self._indexes)

    async def types(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        now = datetime.now(UTC)
        for (type, _), row in self._rows.items():
            if row.live(now):
                counts[type] = counts.get(type, 0) + 1
        return dict(sorted(counts.items()))

    async def purge_expired(self, type: str | None, limit: int) -> int:
        async with self._write_lock:
            now = datetime.now(UTC)
            doomed = sorted(
                key
                for key, row in self._rows.items()
                if not row.live(now) and (type is None or key[0] == type)
            )
            events: list[_Event] = []
            for key in doomed:
                events.append((*key, self._rows[key].version, "delete"))
                del self._rows[key]
            self._publish(events)
            return len(events)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[TransactionBackend]:
        async with self._write_lock:
            reminders = self._reminders
            tx = _MemoryTransaction(self._rows.copy(), dict(self._calls), dict(reminders.entries))
            yield tx
            self._rows, self._calls, reminders.entries = tx.rows, tx.calls, tx.reminders
            self._publish(tx.events)
        reminders.woken(tx.set)

    async def export_records(
        self, types: list[str] | None, chunk: int, where: querying.Node | None = None
    ) -> AsyncIterator[list[Record]]:
        rows = dict(self._rows)  # a snapshot: rows are immutable, the dict is not
        now = datetime.now(UTC)
        keys = sorted(
            k for k, row in rows.items() if (types is None or k[0] in types) and row.live(now)
        )
        for start in range(0, len(keys), chunk):
            records = [_record(t, i, rows[(t, i)]) for t, i in keys[start : start + chunk]]
            if where is not None:
                records = [r for r in records if querying.matches(where, r)]
            if records:
                yield records

    async def export_jsonl(
        self, types: list[str] | None, chunk: int, where: querying.Node | None = None
    ) -> AsyncIterator[bytes]:
        async for records in self.export_records(types, chunk, where):
            yield "".join(record_line(r) + "\n" for r in records).encode()

    @asynccontextmanager
    async def importer(self, on_conflict: OnConflict) -> AsyncIterator[_MemoryImporter]:
        async with self._write_lock:
            importer = _MemoryImporter(self._rows.copy(), on_conflict)
            yield importer
            self._rows = importer.rows
            self._publish(importer.events)
            self._history.restore(importer.policies, importer.past)

    # -- change feed: positions are given at write time, which is commit time here

    async def sequence_changes(self) -> int:
        return 0

    async def feed_state(self) -> tuple[int, int]:
        return self._position, self._pruned

    async def fetch_changes(
        self, after: int, types: Sequence[str] | None, limit: int
    ) -> list[Change]:
        start = max(0, after - self._pruned)
        found = [
            c
            for c in self._log[start:]
            if c.position > after and (types is None or c.type in types)
        ]
        return found[:limit]

    async def prune_changes(self) -> int:
        cutoff = datetime.now(UTC) - timedelta(seconds=self._retention)
        expired = 0
        while expired < len(self._log) and self._log[expired].at < cutoff:
            expired += 1
        if expired:
            self._pruned = self._log[expired - 1].position
            del self._log[:expired]
        return expired

    async def feed_stats(self) -> FeedStats:
        oldest = self._log[0].position if self._log else None
        return FeedStats(self._position, self._pruned, oldest, len(self._log), 0)

    def feed_listener(self) -> FeedListener:
        return MemoryListener(self._listeners)

    def check_listen(self) -> None:
        pass

    async def init_schema(self, partitions: int | None = None) -> int:
        return 0

    async def schema_version(self) -> int | None:
        return schema.latest_version()

    async def verify(self) -> list[tuple[str, str, bool]]:
        return []

    async def server_info(self) -> ServerInfo:
        return ServerInfo("in-memory", 0.0, schema.latest_version(), await self.types(), 0, 0, 0)

    async def server_stats(self) -> ServerStats:
        # A reduced report: no storage, vacuum or connections to speak of.
        recent = None
        if self._changes:
            cutoff = datetime.now(UTC) - timedelta(minutes=1)
            newest_first = reversed(self._log)
            recent = sum(1 for _ in takewhile(lambda change: change.at >= cutoff, newest_first))
        reminders = await self._reminders.stats()
        return ServerStats(
            types=await self.types(),
            partitions=0,
            heap_bytes=0,
            toast_bytes=0,
            index_bytes=0,
            live_rows=len(self._rows),
            dead_rows=0,
            last_autovacuum=None,
            last_autoanalyze=None,
            writes_total=self._position,
            writes_last_minute=recent,
            changes_rows=len(self._log),
            changes_bytes=0,
            connections=0,
            active_connections=0,
            listeners=len(self._listeners),
            notification_queue_usage=0.0,
            reminders=reminders.total,
            reminders_overdue=reminders.overdue,
            oldest_overdue_reminder=reminders.oldest_overdue,
        )

    async def overview(self) -> Overview:
        reminders = await self._reminders.stats()
        last_at = self._log[-1].at if self._log else None
        return Overview(
            server_version="in-memory",
            latency_ms=0.0,
            database_bytes=0,
            table_bytes=0,
            index_bytes=0,
            connections=0,
            active_connections=0,
            live_rows=len(self._rows),
            writes_total=self._position,
            types=await self.types(),
            types_estimated=False,
            last_position=self._position,
            last_change_at=last_at,
            pending_changes=0,
            reminders=reminders.total,
            reminders_overdue=reminders.overdue,
            oldest_overdue_reminder=reminders.oldest_overdue,
        )

    def pool_stats(self) -> None:
        return None

    def retry_counts(self) -> dict[str, int]:
        return {}

    async def server_time(self) -> datetime:
        return datetime.now(UTC)

    async def drop_schema(self) -> None:
        self._rows = Rows(self._history, _past)
        self._history.clear()
        self._calls = {}

    async def close(self) -> None:
        pass
