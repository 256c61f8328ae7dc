"""The interface between the public ``Store`` and a storage engine.

``Store`` validates input and encodes data to JSON text; a backend only moves
already-valid records. Two backends exist: ``postgres.PostgresBackend`` (the real
one, the only module that imports the driver) and ``memory.MemoryBackend`` (the
in-memory twin for fast tests). One conformance suite runs against both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from .changes import FeedSource
from .record import Record
from .transfer import Importer, OnConflict


@dataclass(frozen=True)
class ServerInfo:
    """Facts about the server and schema, for ``status``."""

    server_version: str
    latency_ms: float
    schema_version: int | None
    types: dict[str, int]
    table_bytes: int
    index_bytes: int
    database_bytes: int


@dataclass(frozen=True)
class FeedStats:
    """The change log: newest and pruned positions, oldest retained, rows, bytes."""

    last_position: int
    pruned_through: int
    oldest_position: int | None
    rows: int
    bytes: int


@dataclass(frozen=True, slots=True)
class SaveItem:
    """One record of a batch save: its id, JSON text and expected version (None: any)."""

    id: str
    text: str
    expected: int | None


class TransactionBackend(Protocol):
    """Operations bound to one open transaction."""

    async def load(self, type: str, id: str, *, for_update: bool = False) -> Record | None:
        """Read a record; ``for_update`` locks it until the transaction ends."""
        ...

    async def save(self, type: str, id: str, text: str, expected: int | None) -> Record:
        """Write a record; raise ``VersionConflict`` if ``expected`` does not match."""
        ...

    async def delete(self, type: str, id: str, expected: int | None) -> bool:
        """Delete a record; False if it did not exist."""
        ...


class Backend(TransactionBackend, FeedSource, Protocol):
    """A storage engine for the store's records."""

    async def exists(self, type: str, id: str) -> bool:
        """True if the record exists."""
        ...

    async def save_binary(
        self, type: str, id: str, payload: bytes, manifest: str, expected: int | None
    ) -> Record:
        """Write a binary state (bytes plus manifest); same version rules as ``save``."""
        ...

    async def load_many(self, type: str, ids: list[str]) -> dict[str, Record]:
        """Read several records of one type; missing ids are absent from the result."""
        ...

    async def save_many(self, type: str, items: list[SaveItem]) -> dict[str, Record]:
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

    def export_records(self, types: list[str] | None, chunk: int) -> AsyncIterator[list[Record]]:
        """Every record (of ``types``) in (type, id) order, ``chunk`` at a time, from one
        snapshot; memory stays bounded whatever the table size."""
        ...

    def export_jsonl(self, types: list[str] | None, chunk: int) -> AsyncIterator[bytes]:
        """The same records as JSONL (see ``transfer``): UTF-8 blocks of ``chunk`` lines,
        each line ending in a newline."""
        ...

    def importer(self, on_conflict: OnConflict) -> AbstractAsyncContextManager[Importer]:
        """Open an import: one transaction, committed at a normal exit, else rolled back."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[TransactionBackend]:
        """Open a transaction: commit on normal exit, roll back on an exception."""
        ...

    async def init_schema(self) -> int:
        """Create or migrate the schema; return the number of migrations applied."""
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

    async def drop_schema(self) -> None:
        """Drop every record and schema object (``pgactors reset``)."""
        ...

    async def feed_stats(self) -> FeedStats:
        """Size and range of the change log, for ``status``."""
        ...

    async def close(self) -> None:
        """Release every connection."""
        ...
