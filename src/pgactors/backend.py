"""The interface between the public ``Store`` and a storage engine.

``Store`` validates input and encodes data to JSON text; a backend only moves
already-valid records. A backend is a set of roles (records, queries, the change
feed's source, transfer, admin), each a small protocol. Two backends exist:
``postgres.PostgresBackend`` (the real one; its package is the only one that imports
the driver) and ``memory.MemoryBackend`` (the in-memory twin for fast tests, one
object playing every role). One conformance suite runs against both.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from .changes import FeedListener, FeedSource
from .history import HistoryInfo, PastVersion
from .query import Aggregate, Node, Path, Query
from .record import AppliedCall, Encoded, Record
from .reminders import Reminder, ReminderRequest, ReminderStats
from .stats import FeedStats, Overview, PoolStats, ServerInfo, ServerStats
from .transfer import Importer, OnConflict


@dataclass(frozen=True, slots=True)
class SaveItem:
    """One record of a batch save: its id, JSON text and expected version (None: any)."""

    id: str
    text: str
    expected: int | None


def stale(items: Sequence[SaveItem], current: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """``(expected, actual)`` by id, for each item whose expected version is not the
    ``current`` one (a missing id is version 0)."""
    return {
        i.id: (i.expected, current.get(i.id, 0))
        for i in items
        if i.expected is not None and i.expected != current.get(i.id, 0)
    }


@dataclass(frozen=True, slots=True)
class CallRequest:
    """A state to save together with the call that produced it (``Store.save_call``)."""

    type: str
    id: str
    state: Encoded
    expected: int
    call_id: str
    result: str
    # A fired reminder to move on with it (``Store.save_call(advance=...)``).
    advance: Reminder | None = None

    def record(self, row: Sequence[Any]) -> Record:
        version, created_at, updated_at, expires_at = row
        state = self.state
        data = None if state.text is None else json.loads(state.text)
        return Record(
            self.type,
            self.id,
            data,
            version,
            created_at,
            updated_at,
            state.payload,
            state.manifest,
            expires_at,
        )


class RecordOps(Protocol):
    """Operations on single records, in a transaction or not.

    An expired record (``expires_at`` passed) is absent to every operation.
    """

    async def load(self, type: str, id: str, *, for_update: bool = False) -> Record | None:
        """Read a record; ``for_update`` locks it until the transaction ends."""
        ...

    async def save(
        self,
        type: str,
        id: str,
        text: str,
        expected: int | None,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        """Write a record; raise ``VersionConflict`` if ``expected`` does not match.

        ``ttl`` (seconds) sets an expiry; ``sliding`` keeps it for later saves.
        """
        ...

    async def delete(self, type: str, id: str, expected: int | None) -> bool:
        """Delete a record; False if it did not exist."""
        ...

    async def save_binary(
        self, type: str, id: str, payload: bytes, manifest: str, expected: int | None
    ) -> Record:
        """Write a binary state (bytes plus manifest); same version rules as ``save``."""
        ...

    async def save_call(self, request: CallRequest) -> Record:
        """Save the state and record its call atomically; raise ``CallAlreadyApplied`` if
        the call is recorded already, ``VersionConflict`` on a stale version."""
        ...

    async def applied_call(self, type: str, id: str, call_id: str) -> AppliedCall | None:
        """The recorded call, or None."""
        ...


class TransactionBackend(RecordOps, Protocol):
    """Operations bound to one open transaction: records and reminders."""

    async def set_reminder(self, request: ReminderRequest) -> Reminder:
        """Set or replace a reminder."""
        ...

    async def cancel_reminder(self, type: str, id: str, name: str) -> bool:
        """Delete a reminder; False if there was none."""
        ...


class RecordsBackend(RecordOps, Protocol):
    """Records: single, batched, listed, expired; transactions; recorded calls."""

    async def exists(self, type: str, id: str) -> bool:
        """True if the record exists."""
        ...

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
        """Write a binary state (bytes plus manifest); same version rules as ``save``."""
        ...

    async def load_many(self, type: str, ids: list[str]) -> dict[str, Record]:
        """Read several records of one type; missing ids are absent from the result."""
        ...

    async def save_many(
        self,
        type: str,
        items: list[SaveItem],
        ttl: float | None = None,
        sliding: bool = False,
    ) -> dict[str, Record]:
        """Write several records atomically; any stale version fails the whole batch."""
        ...

    async def delete_many(self, type: str, ids: list[str]) -> int:
        """Delete several records atomically; return how many existed."""
        ...

    async def list_ids(self, type: str, *, prefix: str, after: str, limit: int) -> list[str]:
        """Ids of one type in code-point order, starting with ``prefix``, after ``after``."""
        ...

    async def types(self) -> dict[str, int]:
        """Every type with its record count."""
        ...

    async def purge_calls(self, older_than: float, limit: int, prefix: str | None = None) -> int:
        """Forget calls recorded more than ``older_than`` seconds ago; return how many."""
        ...

    async def purge_expired(self, type: str | None, limit: int) -> int:
        """Delete expired records (of ``type``), ``limit`` at a time; return how many."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[TransactionBackend]:
        """Open a transaction: commit on normal exit, roll back on an exception."""
        ...


class QueryBackend(Protocol):
    """Queries over the records' JSON, and the indexes that serve them."""

    async def query(self, query: Query) -> list[tuple[Record, tuple[Any, ...]]]:
        """Up to ``query.limit + 1`` matching records in order, each with its sort values."""
        ...

    async def count(self, type: str, where: Node) -> int:
        """How many records of ``type`` match."""
        ...

    async def aggregate(self, spec: Aggregate) -> list[dict[str, Any]]:
        """One row per group: the group_by values and the metrics."""
        ...

    async def explain(self, query: Query) -> str:
        """How the backend would run ``query`` (PostgreSQL: its EXPLAIN)."""
        ...

    async def create_index(self, type: str, path: Path) -> str:
        """Index ``path`` for records of ``type``; return the index name."""
        ...

    async def drop_index(self, type: str, path: str) -> bool:
        """Drop the index on ``path`` for ``type``; False if there was none."""
        ...

    async def indexes(self) -> list[tuple[str, str, str]]:
        """Every path index as ``(type, path, index name)``."""
        ...


class TransferBackend(Protocol):
    """Export and import of records in bulk."""

    def export_records(
        self, types: list[str] | None, chunk: int, where: Node | None = None
    ) -> AsyncIterator[list[Record]]:
        """Every live record (of ``types``, matching ``where``) in (type, id) order, up to
        ``chunk`` at a time, from one snapshot; memory stays bounded whatever the size."""
        ...

    def export_jsonl(
        self, types: list[str] | None, chunk: int, where: Node | None = None
    ) -> AsyncIterator[bytes]:
        """The same records as JSONL (see ``transfer``): UTF-8 blocks of ``chunk`` lines,
        each line ending in a newline."""
        ...

    def importer(self, on_conflict: OnConflict) -> AbstractAsyncContextManager[Importer]:
        """Open an import: one transaction, committed at a normal exit, else rolled back."""
        ...


class AdminBackend(Protocol):
    """The schema, and figures about the server, the change log and the pool."""

    async def init_schema(self, partitions: int | None = None) -> int:
        """Create or migrate the schema; return the number of migrations applied.

        ``partitions``: create a new state table hash-partitioned by id in this many
        partitions; refuse an existing table partitioned otherwise.
        """
        ...

    async def schema_version(self) -> int | None:
        """The newest applied migration, or None when the schema is not installed."""
        ...

    async def verify(self) -> list[tuple[str, str, bool]]:
        """Each expected schema object as ``(kind, name, present)``."""
        ...

    async def server_info(self) -> ServerInfo:
        """Server version, latency, schema version, counts and sizes."""
        ...

    async def server_stats(self) -> ServerStats:
        """Sizes, vacuum state, write rate, connections, listeners, NOTIFY queue."""
        ...

    async def feed_stats(self) -> FeedStats:
        """Size and range of the change log, for ``status``."""
        ...

    async def overview(self) -> Overview:
        """The dashboard's figures; per-type counts may be estimates on a large table."""
        ...

    def pool_stats(self) -> PoolStats | None:
        """The connection pool's usage now (None: no pool)."""
        ...

    def retry_counts(self) -> dict[str, int]:
        """Statements retried so far, by reason."""
        ...

    async def drop_schema(self) -> None:
        """Drop every record and schema object (``pgactors reset``)."""
        ...

    async def server_time(self) -> datetime:
        """The server's clock now (the one ``expires_at`` is set by)."""
        ...


class ReminderBackend(Protocol):
    """Reminders outside a transaction, and the listener that hears of new ones."""

    async def set_reminder(self, request: ReminderRequest) -> Reminder:
        """Set or replace a reminder."""
        ...

    async def cancel_reminder(self, type: str, id: str, name: str) -> bool:
        """Delete a reminder; False if there was none."""
        ...

    async def reminders(
        self, type: str | None, id: str | None, due_before: datetime | None, limit: int
    ) -> list[Reminder]:
        """Reminders (of ``type``, ``id``, due before ``due_before``), soonest first."""
        ...

    async def due(self, types: list[str], limit: int, after: Reminder | None) -> list[Reminder]:
        """Due reminders of ``types``, oldest first (by due time, then key), after
        ``after`` (not locked)."""
        ...

    async def lease(self, types: list[str], limit: int, seconds: float) -> list[Reminder]:
        """Due reminders of ``types`` no other instance holds, taken for ``seconds``."""
        ...

    async def advance(self, reminder: Reminder) -> None:
        """After a firing: delete a one-shot, move a periodic reminder past now (only if
        it is still as it was fired)."""
        ...

    async def retry(self, reminder: Reminder, delay: float) -> None:
        """After a failed firing: due again in ``delay`` seconds (if unchanged)."""
        ...

    async def next_due(self, types: list[str]) -> float | None:
        """Seconds until the next reminder of ``types`` is due (negative: overdue)."""
        ...

    async def stats(self) -> ReminderStats:
        """Counts, and the oldest overdue due time."""
        ...

    def listener(self) -> FeedListener:
        """Hears (space-separated type names) of reminders set to be due soon."""
        ...


class HistoryBackend(Protocol):
    """Past versions of the types with history enabled, and their retention."""

    async def enable(self, type: str, keep_versions: int | None, keep_days: float | None) -> None:
        """Keep the versions that writes of ``type`` replace, within these limits."""
        ...

    async def disable(self, type: str) -> bool:
        """Record no more past versions of ``type``; False if it was not enabled."""
        ...

    async def versions(
        self, type: str, id: str, limit: int, version: int | None = None
    ) -> list[PastVersion]:
        """A record's kept past versions (only those numbered ``version``), newest first."""
        ...

    async def purge(self) -> int:
        """Delete the past versions beyond their type's limits; return how many."""
        ...

    async def info(self) -> list[HistoryInfo]:
        """Each type with a history setting or kept rows."""
        ...

    def export(self, types: list[str] | None, chunk: int) -> AsyncIterator[list[PastVersion]]:
        """Every kept past version (of ``types``), oldest first, ``chunk`` at a time."""
        ...


class Backend(Protocol):
    """A storage engine: one object per role, and ``close``."""

    @property
    def records(self) -> RecordsBackend:
        """Records, batches, transactions."""
        ...

    @property
    def queries(self) -> QueryBackend:
        """Queries and indexes."""
        ...

    @property
    def feed(self) -> FeedSource:
        """The change log, for the change feed."""
        ...

    @property
    def reminders(self) -> ReminderBackend:
        """Reminders."""
        ...

    @property
    def transfer(self) -> TransferBackend:
        """Bulk export and import."""
        ...

    @property
    def admin(self) -> AdminBackend:
        """Schema and statistics."""
        ...

    @property
    def history(self) -> HistoryBackend:
        """Version history."""
        ...

    async def close(self) -> None:
        """Release every connection."""
        ...
