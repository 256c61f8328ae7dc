"""What every part of ``Store`` shares: the backend, the configuration, the metrics."""

from __future__ import annotations

from collections.abc import Sequence

from ..backend import Backend
from ..cached import CachedBackend
from ..config import StoreConfig
from ..metrics import Metrics
from ..record import Record


class StoreBase:
    """The state of a ``Store``; its methods are grouped by role in the sibling modules."""

    config: StoreConfig
    _backend: Backend
    _metrics: Metrics
    _max_bytes: int
    _cached: CachedBackend | None

    def _cache_clear(self) -> None:
        """Forget every cached record (after a bulk change the feed may be slow to tell)."""
        if self._cached is not None:
            self._cached.watch.cache.clear()

    async def _load_version(self, type: str, id: str, version: object) -> Record | None:
        raise NotImplementedError  # HistoryMethods


def types_list(types: Sequence[str] | str | None) -> list[str] | None:
    """``types`` as a list (one name, several, or None for every type)."""
    if types is None:
        return None
    return [types] if isinstance(types, str) else list(types)
