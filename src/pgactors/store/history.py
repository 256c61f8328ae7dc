"""``Store``'s version history methods (see ``pgactors.history``)."""

from __future__ import annotations

from ..history import (
    HistoryInfo,
    PastVersion,
    check_history_limit,
    check_keep_days,
    check_keep_versions,
    check_version_number,
)
from ..metrics import timed
from ..record import Record, check_id, check_type
from .base import StoreBase


class HistoryMethods(StoreBase):
    """Opt-in version history per type: past versions, retention, loading a version."""

    async def enable_history(
        self, type: str, *, keep_versions: int | None = None, keep_days: float | None = None
    ) -> None:
        """Keep, from now on, every version that a write of ``type`` replaces.

        Retention: at most ``keep_versions`` past versions per record, and only those
        replaced less than ``keep_days`` ago (fractions allowed); None is no such limit,
        so both None keep every version. Enabling again sets new limits. Every write
        path records (saves, batches, calls, deletes, transactions, imports, the purge
        of expired records), in the same transaction as the write. On PostgreSQL this
        re-creates a trigger, briefly locking the state table against writes: call it
        at deploy time, not per request.
        """
        type = check_type(type)
        versions = check_keep_versions(keep_versions)
        days = check_keep_days(keep_days)
        await self._backend.history.enable(type, versions, days)

    async def disable_history(self, type: str) -> bool:
        """Record no more past versions of ``type``; those kept stay, under the same
        limits. False if history was not enabled for it."""
        return await self._backend.history.disable(check_type(type))

    @timed("history")
    async def history(self, type: str, id: str, *, limit: int = 100) -> list[PastVersion]:
        """The record's kept past versions, newest first (not the current one).

        Each is a ``Record`` as it was, with ``replaced_at`` and ``deleted`` (True when
        a delete, or an expiry, ended it). A record deleted and created again numbers
        its versions from 1 anew: the list then holds both lives, newest first.
        """
        type, id = check_type(type), check_id(id)
        return await self._backend.history.versions(type, id, check_history_limit(limit))

    async def purge_history(self) -> int:
        """Delete the past versions beyond their type's limits now; return how many.

        Reads never return them anyway; this frees their space. A store that enabled
        history also does it every ``purge_interval`` seconds in the background.
        """
        return await self._backend.history.purge()

    async def history_info(self) -> list[HistoryInfo]:
        """Each type with history (enabled, or disabled with versions kept): its limits,
        and how many past versions it keeps, and their size in bytes."""
        return await self._backend.history.info()

    async def _load_version(self, type: str, id: str, version: object) -> Record | None:
        """``load(type, id, version=N)``: the current record if it is version N, else the
        newest kept past version numbered N, else None."""
        number = check_version_number(version)
        current = await self._backend.records.load(type, id)
        if current is not None and current.version == number:
            return current
        found = await self._backend.history.versions(type, id, 1, number)
        return found[0] if found else None
