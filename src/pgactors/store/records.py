"""``Store``'s record methods: single records, exactly-once calls, batches, listing, expiry."""

from __future__ import annotations

from collections.abc import (
    Iterable,
    Mapping,
)
from typing import Any, Final

from ..backend import (
    SaveItem,
)
from ..checks import int_in_range
from ..errors import InvalidInput, VersionConflict
from ..metrics import timed
from ..record import (
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
from ..reminders import Reminder
from ..retry import DEFAULT_MAX_RETRIES, LOCK_AFTER, back_off
from .base import StoreBase
from .transaction import UpdateFn, call_request, next_state, text_of

MAX_LIST_LIMIT: Final = 100_000
MAX_PURGE_LIMIT: Final = 1_000_000
MAX_PURGE_CALLS_LIMIT: Final = 1_000_000


class RecordMethods(StoreBase):
    """Reading and writing records by ``(type, id)``."""

    # -- single records -------------------------------------------------------------------

    @timed("load")
    async def load(
        self, type: str, id: str, *, version: int | None = None, fresh: bool = False
    ) -> Record | None:
        """The record, or None if it does not exist.

        ``version=N``: that version, current or kept in the history (see
        ``enable_history``), else None; after a delete and re-create, the newest one
        numbered N. With the read cache on (``cache_size``), from the cache when it
        holds the record; ``fresh=True`` always reads PostgreSQL (and refreshes the cache).
        """
        type, id = check_type(type), check_id(id)
        if not isinstance(fresh, bool):
            raise InvalidInput(f"fresh must be True or False, got {fresh!r}")
        if version is not None:
            return await self._load_version(type, id, version)
        cached = self._cached
        if cached is None:
            return await self._backend.records.load(type, id)
        if not fresh:
            hit = cached.records.lookup(type, id)
            if hit is not None:
                return hit
        return await cached.records.load_fresh(type, id)

    @timed("exists")
    async def exists(self, type: str, id: str) -> bool:
        """True if the record exists."""
        return await self._backend.records.exists(check_type(type), check_id(id))

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
            return await self._backend.records.save_binary(
                type, id, data.payload, data.manifest, expected, seconds, sliding
            )
        text = text_of(data, self._max_bytes)
        return await self._backend.records.save(type, id, text, expected, seconds, sliding)

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
        advance: Reminder | None = None,
    ) -> Record:
        """Save ``data`` and record that call ``call_id`` produced it, atomically.

        For exactly-once calls: the state and the call's ``result`` (JSON) commit together
        or not at all. ``expected_version`` is required (0 creates the record). If the
        call is already recorded for this record, nothing is saved and
        ``CallAlreadyApplied`` carries the original result; a stale version raises
        ``VersionConflict``. Recorded calls are kept apart from the record's data
        (queries and exports never see them) until :meth:`purge_calls` removes them.

        ``advance``, a reminder of this record that the call fired, is moved on (as
        :meth:`advance_reminder` does) in the same statement, when the call is saved or
        had been recorded already; never after a ``VersionConflict``.
        """
        if advance is not None and (
            not isinstance(advance, Reminder) or (advance.type, advance.id) != (type, id)
        ):
            raise InvalidInput(
                f"advance must be a Reminder of {type}/{id} (as lease_reminders gave it), "
                f"got {advance!r}"
            )
        request = call_request(
            type, id, data, expected_version, call_id, result, self._max_bytes, advance
        )
        return await self._backend.records.save_call(request)

    async def applied_call(self, type: str, id: str, call_id: str) -> AppliedCall | None:
        """The call recorded by :meth:`save_call` for this record, or None."""
        return await self._backend.records.applied_call(
            check_type(type), check_id(id), check_call_id(call_id)
        )

    async def purge_calls(
        self, *, older_than: float, limit: int = 10_000, prefix: str | None = None
    ) -> int:
        """Forget the calls recorded more than ``older_than`` seconds ago (only those whose
        id starts with ``prefix``, if given); return how many.

        A call retried after its record is purged would be applied again.
        """
        if prefix is not None and (not isinstance(prefix, str) or "\x00" in prefix):
            raise InvalidInput(f"prefix must be a str without NUL, got {prefix!r}")
        if (
            isinstance(older_than, bool)
            or not isinstance(older_than, int | float)
            or not 0 <= older_than < float("inf")
        ):
            raise InvalidInput(f"older_than must be a number of seconds >= 0, got {older_than!r}")
        if not int_in_range(limit, 1, MAX_PURGE_CALLS_LIMIT):
            raise InvalidInput(
                f"limit must be an int from 1 to {MAX_PURGE_CALLS_LIMIT}, got {limit!r}"
            )
        return await self._backend.records.purge_calls(float(older_than), limit, prefix)

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
        return await self._backend.records.save_binary(
            type, id, data, name, expected, seconds, sliding
        )

    @timed("delete")
    async def delete(self, type: str, id: str, *, expected_version: int | None = None) -> bool:
        """Delete the record; False if there was nothing to delete.

        With ``expected_version``, a different stored version raises ``VersionConflict``.
        """
        type, id = check_type(type), check_id(id)
        expected = check_version("expected_version", expected_version)
        return await self._backend.records.delete(type, id, expected)

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
        if not int_in_range(max_retries, 0):
            raise InvalidInput(f"max_retries must be an int >= 0, got {max_retries!r}")
        if default is not MISSING:
            encode_data(default, self._max_bytes)
        for attempt in range(max_retries + 1):
            try:
                if attempt >= LOCK_AFTER:
                    return await self._locked_update(type, id, fn, default, seconds, sliding)
                record = await self._backend.records.load(type, id)
                text, expected = await next_state(record, type, id, fn, default, self._max_bytes)
                return await self._backend.records.save(type, id, text, expected, seconds, sliding)
            except VersionConflict as conflict:
                if attempt == max_retries:
                    raise VersionConflict(
                        type, id, conflict.expected, conflict.actual
                    ) from conflict
                self._metrics.retried("update")
            await back_off(attempt)
        raise AssertionError("unreachable")

    async def _locked_update(
        self,
        type: str,
        id: str,
        fn: UpdateFn,
        default: Any,
        seconds: float | None,
        sliding: bool,
    ) -> Record:
        """``update`` holding the row lock from load to save: it cannot lose to another
        writer, so a contended record is not retried forever (only a record created
        meanwhile still conflicts)."""
        async with self._backend.records.transaction() as tx:
            record = await tx.load(type, id, for_update=True)
            text, expected = await next_state(record, type, id, fn, default, self._max_bytes)
            return await tx.save(type, id, text, expected, seconds, sliding)

    # -- batches ----------------------------------------------------------------------------

    @timed("load_many")
    async def load_many(self, type: str, ids: Iterable[str]) -> dict[str, Record]:
        """The existing records among ``ids``, keyed by id (missing ids are absent)."""
        type, id_list = check_type(type), check_ids(ids)
        if not id_list:
            return {}
        return await self._backend.records.load_many(type, id_list)

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
        return await self._backend.records.save_many(type, batch, seconds, sliding)

    @timed("delete_many")
    async def delete_many(self, type: str, ids: Iterable[str]) -> int:
        """Delete several records atomically; return how many existed."""
        type, id_list = check_type(type), check_ids(ids)
        if not id_list:
            return 0
        return await self._backend.records.delete_many(type, sorted(id_list))

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
        if not int_in_range(limit, 1, MAX_LIST_LIMIT):
            raise InvalidInput(f"limit must be an int from 1 to {MAX_LIST_LIMIT}, got {limit!r}")
        return await self._backend.records.list_ids(
            type, prefix=prefix or "", after=after or "", limit=limit
        )

    @timed("types")
    async def types(self) -> dict[str, int]:
        """Every type that has records, with its record count."""
        return await self._backend.records.types()

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
        if not int_in_range(limit, 1, MAX_PURGE_LIMIT):
            raise InvalidInput(f"limit must be an int from 1 to {MAX_PURGE_LIMIT}, got {limit!r}")
        return await self._backend.records.purge_expired(type, limit)
