"""Operation metrics: counts, latency histograms, conflicts, retries, pool usage.

``Store`` times each public operation (``timed``) into its ``Metrics``;
``store.metrics()`` returns a ``MetricsSnapshot``, ``prometheus_text`` renders one in
the Prometheus text exposition format, and ``serve_metrics`` serves it over HTTP.
Recording costs one ``perf_counter_ns`` pair, a bisect and a few increments per call.
"""

from __future__ import annotations

import asyncio
import functools
import math
from bisect import bisect_left
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import asdict, dataclass
from time import perf_counter_ns
from typing import (
    Any,
    Concatenate,
    Final,
    ParamSpec,
    Protocol,
    TypeAlias,
    TypeVar,
)

from .cache import CacheStats
from .errors import VersionConflict
from .stats import PoolStats, ServerStats

# Upper bounds (seconds) of the latency buckets: a save is ~0.1-2 ms, a large batch or a
# contended update can take far longer.
LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_BOUNDS_NS: Final = tuple(round(b * 1e9) for b in LATENCY_BUCKETS)

P = ParamSpec("P")
R = TypeVar("R")


class _Operation:
    """Mutable counters of one operation; ``buckets[i]`` counts calls of bucket i only."""

    __slots__ = ("buckets", "conflicts", "errors", "sum_ns")

    def __init__(self) -> None:
        self.buckets = [0] * (len(_BOUNDS_NS) + 1)
        self.sum_ns = 0
        self.errors = 0
        self.conflicts = 0


class Metrics:
    """The live counters of one store (one event loop: no locking needed)."""

    def __init__(self) -> None:
        self.operations: dict[str, _Operation] = {}
        self.retries: dict[str, int] = {"update": 0}

    def operation(self, name: str) -> _Operation:
        """The counters of ``name``, created at first use."""
        op = self.operations.get(name)
        if op is None:
            op = self.operations[name] = _Operation()
        return op

    def observe(self, name: str, seconds: float) -> None:
        """Count one ``name`` that took ``seconds``."""
        op = self.operation(name)
        elapsed = round(seconds * 1e9)
        op.buckets[bisect_left(_BOUNDS_NS, elapsed)] += 1
        op.sum_ns += elapsed

    def retried(self, kind: str) -> None:
        """Count one retry of ``kind``."""
        self.retries[kind] = self.retries.get(kind, 0) + 1

    def snapshot(
        self, pool: PoolStats | None = None, backend_retries: Mapping[str, int] | None = None
    ) -> MetricsSnapshot:
        """A consistent copy of the counters, with the backend's pool and retries."""
        operations = {}
        for name, op in sorted(self.operations.items()):
            cumulative, running = [], 0
            for bound, count in zip(LATENCY_BUCKETS, op.buckets, strict=False):
                running += count
                cumulative.append((bound, running))
            count = running + op.buckets[-1]
            operations[name] = OperationStats(
                count, op.errors, op.conflicts, op.sum_ns / 1e9, tuple(cumulative)
            )
        retries = dict(self.retries)
        for kind, n in (backend_retries or {}).items():
            retries[kind] = retries.get(kind, 0) + n
        return MetricsSnapshot(operations, dict(sorted(retries.items())), pool)


class _HasMetrics(Protocol):
    _metrics: Metrics


S = TypeVar("S", bound=_HasMetrics)
_Method: TypeAlias = Callable[Concatenate[S, P], Coroutine[Any, Any, R]]


def timed(name: str) -> Callable[[_Method[S, P, R]], _Method[S, P, R]]:
    """Decorate an async method of an object with ``_metrics``: count and time each call.

    A ``VersionConflict`` counts as a conflict, any other exception as an error; both
    still count as calls, with their latency.
    """

    def decorate(fn: _Method[S, P, R]) -> _Method[S, P, R]:
        @functools.wraps(fn)
        async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
            op = self._metrics.operations.get(name) or self._metrics.operation(name)
            started = perf_counter_ns()
            try:
                return await fn(self, *args, **kwargs)
            except VersionConflict:
                op.conflicts += 1
                raise
            except BaseException:
                op.errors += 1
                raise
            finally:
                elapsed = perf_counter_ns() - started
                op.buckets[bisect_left(_BOUNDS_NS, elapsed)] += 1
                op.sum_ns += elapsed

        return wrapper

    return decorate


@dataclass(frozen=True)
class OperationStats:
    """One operation: calls, errors, conflicts, total seconds, cumulative buckets.

    ``buckets`` pairs each upper bound (seconds) with the calls that took at most
    that long; ``count`` includes the slower ones.
    """

    count: int
    errors: int
    conflicts: int
    sum_seconds: float
    buckets: tuple[tuple[float, int], ...]


@dataclass(frozen=True)
class MetricsSnapshot:
    """Everything ``store.metrics()`` reports; ``as_dict()`` for JSON."""

    operations: dict[str, OperationStats]
    retries: dict[str, int]
    pool: PoolStats | None = None
    server: ServerStats | None = None
    cache: CacheStats | None = None

    @property
    def conflicts(self) -> int:
        """Version conflicts raised to callers, over every operation."""
        return sum(op.conflicts for op in self.operations.values())

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as plain JSON-compatible values."""
        data = asdict(self)
        if self.server is not None:
            data["server"] = self.server.as_dict()
        return data


def prometheus_text(snapshot: MetricsSnapshot, *, prefix: str = "pgactors") -> str:
    """``snapshot`` in the Prometheus text exposition format (version 0.0.4)."""
    out = _Exposition(prefix)
    if snapshot.operations:
        _operation_samples(out, snapshot.operations)
    if snapshot.retries:
        out.family(
            "retries_total",
            "counter",
            "Retries: update (compare-and-set re-runs), read (dead idle connection), deadlock.",
        )
        for kind, n in snapshot.retries.items():
            out.sample("retries_total", n, kind=kind)
    _pool_and_server(out, snapshot)
    return out.text()


def _operation_samples(out: _Exposition, ops: Mapping[str, OperationStats]) -> None:
    out.family("operations_total", "counter", "Store operations completed (any outcome).")
    for name, op in ops.items():
        out.sample("operations_total", op.count, operation=name)
    out.family("operation_errors_total", "counter", "Operations that raised an error.")
    for name, op in ops.items():
        out.sample("operation_errors_total", op.errors, operation=name)
    out.family(
        "conflicts_total", "counter", "VersionConflict raised to callers (stale expected version)."
    )
    for name, op in ops.items():
        out.sample("conflicts_total", op.conflicts, operation=name)
    out.family("operation_duration_seconds", "histogram", "Latency of store operations.")
    for name, op in ops.items():
        for bound, count in op.buckets:
            out.sample("operation_duration_seconds_bucket", count, operation=name, le=bound)
        out.sample("operation_duration_seconds_bucket", op.count, operation=name, le=math.inf)
        out.sample("operation_duration_seconds_sum", op.sum_seconds, operation=name)
        out.sample("operation_duration_seconds_count", op.count, operation=name)


def _pool_and_server(out: _Exposition, snapshot: MetricsSnapshot) -> None:
    pool = snapshot.pool
    if pool is not None:
        for name, value, help in (
            ("pool_min_size", pool.min_size, "Configured minimum pool connections."),
            ("pool_max_size", pool.max_size, "Configured maximum pool connections."),
            ("pool_size", pool.size, "Connections open or being opened."),
            ("pool_available", pool.available, "Idle connections in the pool."),
            ("pool_waiting", pool.waiting, "Callers waiting for a connection."),
        ):
            out.family(name, "gauge", help)
            out.sample(name, value)
        counters: tuple[tuple[str, float, str], ...] = (
            ("pool_requests_total", pool.requests, "Connections requested from the pool."),
            ("pool_requests_queued_total", pool.requests_queued, "Requests that had to wait."),
            ("pool_wait_seconds_total", pool.requests_wait_seconds, "Time spent waiting."),
            ("pool_connections_lost_total", pool.connections_lost, "Connections found broken."),
        )
        for name, total, help in counters:
            out.family(name, "counter", help)
            out.sample(name, total)
    if snapshot.server is not None:
        _server_samples(out, snapshot.server)
    if snapshot.cache is not None:
        _cache_samples(out, snapshot.cache)


def _cache_samples(out: _Exposition, cache: CacheStats) -> None:
    for name, value, help in (
        ("cache_entries", cache.entries, "Records in the read cache."),
        ("cache_bytes", cache.bytes, "Bytes the read cache holds (JSON text plus overhead)."),
        ("cache_serving", int(cache.serving), "1 while the read cache serves (feed live)."),
    ):
        out.family(name, "gauge", help)
        out.sample(name, value)
    for name, total, help in (
        ("cache_hits_total", cache.hits, "Loads served from the read cache."),
        ("cache_misses_total", cache.misses, "Loads that read PostgreSQL."),
        ("cache_evictions_total", cache.evictions, "Entries dropped to stay within bounds."),
        ("cache_invalidations_total", cache.invalidations, "Entries dropped as changed."),
    ):
        out.family(name, "counter", help)
        out.sample(name, total)


def _server_samples(out: _Exposition, stats: ServerStats) -> None:
    out.family("records", "gauge", "Records per type.")
    for type, count in stats.types.items():
        out.sample("records", count, type=type)
    oldest = stats.oldest_overdue_reminder
    gauges: Iterable[tuple[str, float | int | None, str]] = (
        ("state_partitions", stats.partitions, "Hash partitions of the state table (0: none)."),
        ("state_heap_bytes", stats.heap_bytes, "State table size without TOAST and indexes."),
        ("state_toast_bytes", stats.toast_bytes, "State table TOAST size."),
        ("state_index_bytes", stats.index_bytes, "State table index size."),
        ("state_live_rows", stats.live_rows, "Live rows (statistics estimate)."),
        ("state_dead_rows", stats.dead_rows, "Dead rows awaiting vacuum (statistics estimate)."),
        (
            "state_last_autovacuum_timestamp_seconds",
            None if stats.last_autovacuum is None else stats.last_autovacuum.timestamp(),
            "Most recent autovacuum of the state table (any partition).",
        ),
        (
            "writes_last_minute",
            stats.writes_last_minute,
            "Record writes committed in the last minute (from the change log).",
        ),
        ("changes_rows", stats.changes_rows, "Rows in the change log."),
        ("changes_bytes", stats.changes_bytes, "Change log size with indexes."),
        ("connections", stats.connections, "Client connections to this database."),
        ("connections_active", stats.active_connections, "Connections running a statement."),
        ("listeners", stats.listeners, "Change feed listener connections on this channel."),
        (
            "notification_queue_usage_ratio",
            stats.notification_queue_usage,
            "Fraction of the NOTIFY queue in use.",
        ),
        ("reminders", stats.reminders, "Stored reminders."),
        ("reminders_overdue", stats.reminders_overdue, "Reminders due now or earlier."),
        (
            "reminders_oldest_overdue_timestamp_seconds",
            None if oldest is None else oldest.timestamp(),
            "Due time of the oldest overdue reminder (absent when none is overdue).",
        ),
    )
    for name, value, help in gauges:
        if value is not None:
            out.family(name, "gauge", help)
            out.sample(name, value)
    out.family("state_writes_total", "counter", "Rows inserted, updated or deleted (pg_stat).")
    out.sample("state_writes_total", stats.writes_total)


class _Exposition:
    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help: str) -> None:
        self._lines.append(f"# HELP {self._prefix}_{name} {_escape_help(help)}")
        self._lines.append(f"# TYPE {self._prefix}_{name} {kind}")

    def sample(self, name: str, value: float, **labels: object) -> None:
        label_text = ",".join(f'{k}="{_escape_label(_format(v))}"' for k, v in labels.items())
        braces = "{" + label_text + "}" if labels else ""
        self._lines.append(f"{self._prefix}_{name}{braces} {_format(value)}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _format(value: object) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(value)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Snapshotter(Protocol):
    def metrics(self) -> MetricsSnapshot: ...

    async def server_stats(self) -> ServerStats: ...


class MetricsServer:
    """A running ``/metrics`` endpoint; ``await close()`` (or ``async with``) stops it."""

    def __init__(self, server: asyncio.Server) -> None:
        self._server = server
        socket = server.sockets[0].getsockname()
        self.host: str = socket[0]
        self.port: int = socket[1]

    @property
    def url(self) -> str:
        """The endpoint's address."""
        return f"http://{self.host}:{self.port}/metrics"

    async def close(self) -> None:
        """Stop accepting scrapes and wait for open ones to finish."""
        self._server.close()
        await self._server.wait_closed()

    async def __aenter__(self) -> MetricsServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


async def serve_metrics(
    store: _Snapshotter, port: int, host: str = "127.0.0.1", *, server_stats: bool = False
) -> MetricsServer:
    """Serve ``store``'s metrics at ``http://host:port/metrics`` (port 0: any free port).

    ``server_stats=True`` adds the server-side figures (``store.server_stats()``) to
    every scrape: a few catalog queries plus a count of records per type, which scans
    the state table, so prefer a long scrape interval (or ``pgactors metrics`` from
    cron) on big tables.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, path, *_ = [*request.split(b"\r\n", 1)[0].decode("latin-1").split(" "), ""]
            if method not in ("GET", "HEAD"):
                status, body, kind = "405 Method Not Allowed", b"GET only\n", "text/plain"
            elif path.split("?", 1)[0] not in ("/metrics", "/"):
                status, body, kind = "404 Not Found", b"see /metrics\n", "text/plain"
            else:
                snapshot = store.metrics()
                if server_stats:
                    snapshot = _with_server(snapshot, await store.server_stats())
                status, body, kind = "200 OK", prometheus_text(snapshot).encode(), _CONTENT_TYPE
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        except Exception as exc:  # a failing scrape must not kill the server
            message = f"{type(exc).__name__}: {exc}\n".encode()
            writer.write(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                + f"Content-Length: {len(message)}\r\nConnection: close\r\n\r\n".encode()
                + message
            )
        finally:
            writer.close()

    return MetricsServer(await asyncio.start_server(handle, host, port))


def _with_server(snapshot: MetricsSnapshot, stats: ServerStats) -> MetricsSnapshot:
    return MetricsSnapshot(snapshot.operations, snapshot.retries, snapshot.pool, stats)


__all__ = [
    "LATENCY_BUCKETS",
    "Metrics",
    "MetricsServer",
    "MetricsSnapshot",
    "OperationStats",
    "prometheus_text",
    "serve_metrics",
    "timed",
]
