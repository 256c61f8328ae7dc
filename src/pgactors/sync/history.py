"""``SyncStore``'s version history methods (``Store``'s, blocking)."""

from __future__ import annotations

from ..history import HistoryInfo, PastVersion
from ..store import Store
from .loop import LoopThread


class SyncHistoryMethods:
    """Version history, without ``await``."""

    _store: Store
    _runner: LoopThread

    def enable_history(
        self, type: str, *, keep_versions: int | None = None, keep_days: float | None = None
    ) -> None:
        """Keep the versions writes of ``type`` replace (see ``Store.enable_history``)."""
        self._runner.run(
            self._store.enable_history(type, keep_versions=keep_versions, keep_days=keep_days)
        )

    def disable_history(self, type: str) -> bool:
        """Record no more past versions of ``type``; False if it was not enabled."""
        return self._runner.run(self._store.disable_history(type))

    def history(self, type: str, id: str, *, limit: int = 100) -> list[PastVersion]:
        """The record's kept past versions, newest first."""
        return self._runner.run(self._store.history(type, id, limit=limit))

    def purge_history(self) -> int:
        """Delete the past versions beyond their type's limits now; return how many."""
        return self._runner.run(self._store.purge_history())

    def history_info(self) -> list[HistoryInfo]:
        """Each type with history: its limits, rows and bytes."""
        return self._runner.run(self._store.history_info())
