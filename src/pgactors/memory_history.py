"""The in-memory twin of the history table and its trigger.

``Rows`` is the record dict of ``memory.MemoryBackend``: replacing or deleting a row
of a type with history enabled notes the old row (``pending``), exactly where
PostgreSQL's row trigger fires. The backend hands the pending rows to
``MemoryHistory.keep`` when the write commits; a rolled-back transaction drops its
copy of the rows, and its pending rows with it.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from typing import TypeVar

from .history import HistoryInfo, HistoryPolicy, PastVersion

V = TypeVar("V")
Key = tuple[str, str]


class Rows(dict[Key, V]):
    """Rows by ``(type, id)``; each row a write replaces of a type with history enabled
    is noted in ``pending`` (as ``to_past`` makes it) until the write commits."""

    def __init__(
        self,
        history: MemoryHistory,
        to_past: Callable[[Key, V, bool], PastVersion],
        items: Iterable[tuple[Key, V]] = (),
    ) -> None:
        super().__init__(items)
        self.history = history
        self.to_past = to_past
        self.pending: list[PastVersion] = []

    def __setitem__(self, key: Key, value: V) -> None:
        old = self.get(key)
        if old is not None and self.history.recording(key[0]):
            self.pending.append(self.to_past(key, old, False))
        super().__setitem__(key, value)

    def __delitem__(self, key: Key) -> None:
        if self.history.recording(key[0]):
            self.pending.append(self.to_past(key, self[key], True))
        super().__delitem__(key)

    def copy(self) -> Rows[V]:
        """A copy of the rows, with nothing pending (a transaction's or an import's)."""
        return Rows(self.history, self.to_past, self.items())


class MemoryHistory:
    """Past versions by record, in the order they were kept; the history role."""

    def __init__(self, lock: asyncio.Lock) -> None:
        self._lock = lock
        self._policies: dict[str, HistoryPolicy] = {}
        # Per record, (sequence number, past version), oldest first.
        self._kept: dict[Key, list[tuple[int, PastVersion]]] = {}
        self._seq = 0

    def recording(self, type: str) -> bool:
        """True if writes of ``type`` keep the versions they replace."""
        policy = self._policies.get(type)
        return policy is not None and policy.enabled

    def keep(self, rows: Rows[V]) -> None:
        """Keep the rows' pending past versions (their write has committed)."""
        for past in rows.pending:
            self._seq += 1
            self._kept.setdefault((past.type, past.id), []).append((self._seq, past))
        rows.pending = []

    def clear(self) -> None:
        """Forget every setting and past version (``drop_schema``)."""
        self._policies.clear()
        self._kept.clear()

    async def enable(self, type: str, keep_versions: int | None, keep_days: float | None) -> None:
        async with self._lock:
            self._policies[type] = HistoryPolicy(type, True, keep_versions, keep_days)

    async def disable(self, type: str) -> bool:
        async with self._lock:
            policy = self._policies.get(type)
            if policy is None or not policy.enabled:
                return False
            self._policies[type] = HistoryPolicy(
                type, False, policy.keep_versions, policy.keep_days
            )
            return True

    def _retained(self, key: Key, now: datetime) -> list[tuple[int, PastVersion]]:
        """The record's past versions within its type's limits, newest first."""
        newest_first = list(reversed(self._kept.get(key, [])))
        policy = self._policies.get(key[0])
        if policy is None:
            return newest_first
        return [
            (seq, past)
            for rank, (seq, past) in enumerate(newest_first, 1)
            if policy.keeps(rank, past.replaced_at, now)
        ]

    async def versions(
        self, type: str, id: str, limit: int, version: int | None = None
    ) -> list[PastVersion]:
        kept = self._retained((type, id), datetime.now(UTC))
        found = [_copy(p) for _, p in kept if version is None or p.version == version]
        return found[:limit]

    async def purge(self) -> int:
        async with self._lock:
            now = datetime.now(UTC)
            purged = 0
            for key in list(self._kept):
                before = len(self._kept[key])
                kept = self._retained(key, now)
                purged += before - len(kept)
                if kept:
                    self._kept[key] = list(reversed(kept))
                else:
                    del self._kept[key]
            return purged

    async def info(self) -> list[HistoryInfo]:
        counts: dict[str, tuple[int, int]] = {}
        for (type, _), kept in self._kept.items():
            rows, size = counts.get(type, (0, 0))
            size += sum(_size(p) for _, p in kept)
            counts[type] = (rows + len(kept), size)
        infos = []
        for type in sorted(set(self._policies) | set(counts)):
            policy = self._policies.get(type) or HistoryPolicy(type, False, None, None)
            rows, size = counts.get(type, (0, 0))
            limits = (policy.keep_versions, policy.keep_days)
            infos.append(HistoryInfo(type, policy.enabled, *limits, rows, size))
        return infos

    async def export(self, types: list[str] | None, chunk: int) -> AsyncIterator[list[PastVersion]]:
        every = sorted(
            (seq, past)
            for (type, _), kept in self._kept.items()
            if types is None or type in types
            for seq, past in kept
        )
        for start in range(0, len(every), chunk):
            yield [_copy(past) for _, past in every[start : start + chunk]]

    def restore(self, policies: list[HistoryPolicy], rows: list[PastVersion]) -> None:
        """Set these settings and append these past versions (an import's, at commit)."""
        for p in policies:
            self._policies[p.type] = p
        for past in rows:
            self._seq += 1
            self._kept.setdefault((past.type, past.id), []).append((self._seq, past))


def _copy(past: PastVersion) -> PastVersion:
    """A private copy, as each read from the database is."""
    return dataclasses.replace(past, data=copy.deepcopy(past.data))


def _size(past: PastVersion) -> int:
    """A rough size in bytes: the data's JSON text or the payload."""
    if past.payload is not None:
        return len(past.payload)
    return len(repr(past.data))
