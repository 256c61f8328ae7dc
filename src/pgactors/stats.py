"""Figures about the server, the schema, the change log and the pool: plain values,
reported by a backend and shown by ``status`` and the metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any


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
class ServerStats:
    """Health of the state table and the server, for ``status`` and metrics.

    Sizes and vacuum figures are summed over every partition; row counts are the
    statistics collector's estimates. ``writes_last_minute`` counts the change log's
    entries numbered in the last minute (None when this store logs no changes).
    ``reminders`` counts the stored reminders, ``reminders_overdue`` those due now or
    earlier, and ``oldest_overdue_reminder`` is the earliest of their due times.
    """

    types: dict[str, int]
    partitions: int
    heap_bytes: int
    toast_bytes: int
    index_bytes: int
    live_rows: int
    dead_rows: int
    last_autovacuum: datetime | None
    last_autoanalyze: datetime | None
    writes_total: int
    writes_last_minute: int | None
    changes_rows: int | None
    changes_bytes: int | None
    connections: int
    active_connections: int
    listeners: int
    notification_queue_usage: float
    reminders: int
    reminders_overdue: int
    oldest_overdue_reminder: datetime | None

    @property
    def writes_per_second(self) -> float | None:
        """Average record writes per second over the last minute."""
        return None if self.writes_last_minute is None else self.writes_last_minute / 60

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible values (timestamps in ISO 8601)."""
        data = asdict(self)
        for key in ("last_autovacuum", "last_autoanalyze", "oldest_overdue_reminder"):
            if data[key] is not None:
                data[key] = data[key].isoformat()
        data["writes_per_second"] = self.writes_per_second
        return data


@dataclass(frozen=True)
class FeedStats:
    """The change log: newest and pruned positions, oldest retained, rows, bytes."""

    last_position: int
    pruned_through: int
    oldest_position: int | None
    rows: int
    bytes: int


@dataclass(frozen=True)
class PoolStats:
    """The connection pool: configured bounds, connections open and idle, waiting callers."""

    min_size: int
    max_size: int
    size: int
    available: int
    waiting: int
    requests: int = 0
    requests_queued: int = 0
    requests_wait_seconds: float = 0.0
    connections_lost: int = 0


@dataclass(frozen=True)
class Overview:
    """The dashboard's figures, cheap to read however large the state table grows.

    ``types`` holds each type's record count; with ``types_estimated`` they are the
    planner's statistics (``pg_stats``) scaled to the live row estimate, not exact
    counts (the state table held more rows than an exact count answers quickly for).
    ``pending_changes`` counts committed writes not yet numbered in the change log.
    """

    server_version: str
    latency_ms: float
    database_bytes: int
    table_bytes: int
    index_bytes: int
    connections: int
    active_connections: int
    live_rows: int
    writes_total: int
    types: dict[str, int]
    types_estimated: bool
    last_position: int
    last_change_at: datetime | None
    pending_changes: int
    reminders: int
    reminders_overdue: int
    oldest_overdue_reminder: datetime | None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible values (timestamps in ISO 8601)."""
        data = asdict(self)
        for key in ("last_change_at", "oldest_overdue_reminder"):
            if data[key] is not None:
                data[key] = data[key].isoformat()
        return data
