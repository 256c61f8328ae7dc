"""The read cache: records by ``(type, id)`` in this process, kept coherent by the change feed.

``RecordCache`` is the data structure: least recently used first out, bounded by
records and by bytes. It holds each record's data serialized with ``marshal`` and
decodes it afresh on every hit, so callers may change what they get (``marshal`` is
C and about 2.5x faster than ``json.loads``; its bytes never leave this process, and
only ever come from values it serialized itself). Coherence rests on three rules:

- every change the feed delivers, and every write of this store, invalidates the key
  (``invalidate``, ``forget``) before anything else can read it;
- a value read from the database is cached only if its key was not invalidated, or
  written by this store, since the read began (``token`` before the read, ``put``
  after): a slow read can never bring back a version older than one the cache has been
  told of, or than one this store's own writes returned;
- while the feed is not live (not yet connected, reconnecting, or failed) nothing is
  served or cached, and losing it clears everything (``stop``).
"""

from __future__ import annotations

import marshal
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from .record import Record

ENTRY_OVERHEAD: Final = 200
"""Bytes counted per entry beside its serialized data or payload: key, times, bookkeeping."""

TOUCHED_LIMIT: Final = 100_000
"""Recent invalidations remembered per key; older ones are remembered as one watermark."""

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class CacheStats:
    """The read cache's counters (``store.metrics().cache``).

    ``position`` is the change-feed position the cache is coherent with: every change
    up to it has been applied. ``serving`` is False while the feed is not live.
    """

    entries: int
    bytes: int
    max_entries: int
    max_bytes: int
    hits: int
    misses: int
    evictions: int
    invalidations: int
    serving: bool
    position: int | None

    @property
    def hit_ratio(self) -> float:
        """Hits over lookups (0.0 before the first)."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


@dataclass(slots=True)
class _Entry:
    record: Record  # with data None when ``data`` holds it, serialized
    data: bytes | None
    size: int


class RecordCache:
    """An LRU map of records with versions; see the module for the coherence rules."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._bytes = 0
        self._gen = 0
        self._touched: OrderedDict[Key, int] = OrderedDict()
        self._floor = 0
        self.serving = False
        self.position: int | None = None
        # Added to this machine's clock to never pass the server's (see ``clock_offset``).
        self._offset = timedelta(0)
        self.hits = self.misses = self.evictions = self.invalidations = 0

    # -- reading ----------------------------------------------------------------------------

    def get(self, key: Key) -> Record | None:
        """The cached record (a fresh copy of its data), or None (a miss)."""
        entry = self._entries.get(key) if self.serving else None
        if entry is None:
            self.misses += 1
            return None
        record = entry.record
        expires_at = record.expires_at
        if expires_at is not None and expires_at <= datetime.now(UTC) + self._offset:
            self._drop(key)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        if entry.data is None:
            return record
        return Record(
            record.type,
            record.id,
            marshal.loads(entry.data),  # noqa: S302 (bytes this process serialized)
            record.version,
            record.created_at,
            record.updated_at,
            None,
            None,
            expires_at,
        )

    def token(self) -> int:
        """Take before reading from the database; pass to :meth:`put` after."""
        return self._gen

    def clock_offset(self, offset: timedelta) -> None:
        """How far the server's clock may be ahead of ours (so expiry is never late)."""
        self._offset = offset

    # -- filling ----------------------------------------------------------------------------

    def put(self, record: Record, token: int) -> None:
        """Cache ``record``, read or written after ``token`` was taken, unless its key was
        invalidated since then or a newer version is cached."""
        key = (record.type, record.id)
        old = self._entries.get(key)
        if old is not None:
            if old.record.version >= record.version:
                return
            self._drop(key)  # older than a version known to exist: never served again
        if not self.serving or token < self._floor or self._touched.get(key, -1) > token:
            return
        if record.payload is None:
            data = marshal.dumps(record.data)
            stored = Record(
                record.type,
                record.id,
                None,
                record.version,
                record.created_at,
                record.updated_at,
                None,
                None,
                record.expires_at,
            )
            entry = _Entry(stored, data, len(data) + ENTRY_OVERHEAD)
        else:
            entry = _Entry(record, None, len(record.payload) + ENTRY_OVERHEAD)
        if entry.size > self.max_bytes:
            return
        self._entries[key] = entry
        self._bytes += entry.size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.size
            self.evictions += 1

    def written(self, record: Record, token: int) -> None:
        """This store wrote ``record`` (``token`` taken before the write): cache it as
        :meth:`put` would, and refuse every read begun before the write returned. Such a
        read may hold an older version, and nothing else would stop it once this one is
        not cached (refused, or evicted) until the feed brings the write's change."""
        self.put(record, token)
        self._touch((record.type, record.id))

    # -- invalidating -----------------------------------------------------------------------

    def invalidate(self, key: Key, version: int, deleted: bool) -> None:
        """A committed change of ``key`` to ``version`` (or its deletion), from the feed."""
        self._touch(key)
        entry = self._entries.get(key)
        if entry is not None and (deleted or entry.record.version < version):
            self._drop(key)
            self.invalidations += 1

    def forget(self, key: Key) -> None:
        """This store wrote ``key`` (or may have): drop it, and refuse reads begun before."""
        self._touch(key)
        if key in self._entries:
            self._drop(key)
            self.invalidations += 1

    def start(self, position: int | None) -> None:
        """Serve from now on, coherent with the feed from ``position``."""
        self.position = position
        self.serving = True

    def stop(self) -> None:
        """Stop serving and forget everything (the feed is lost: nothing is confirmed)."""
        self.serving = False
        self.clear()

    def clear(self) -> None:
        """Forget everything, and refuse every read begun before."""
        self.invalidations += len(self._entries)
        self._entries.clear()
        self._touched.clear()
        self._bytes = 0
        self._gen += 1
        self._floor = self._gen

    def stats(self) -> CacheStats:
        """A copy of the counters."""
        return CacheStats(
            len(self._entries),
            self._bytes,
            self.max_entries,
            self.max_bytes,
            self.hits,
            self.misses,
            self.evictions,
            self.invalidations,
            self.serving,
            self.position,
        )

    def _touch(self, key: Key) -> None:
        self._gen += 1
        self._touched[key] = self._gen
        self._touched.move_to_end(key)
        if len(self._touched) > TOUCHED_LIMIT:
            _, gen = self._touched.popitem(last=False)
            self._floor = max(self._floor, gen)

    def _drop(self, key: Key) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.size
