"""Operation metrics, the Prometheus exposition, the /metrics endpoint and server stats."""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from pgactors import InMemoryStore, InvalidInput, Store, VersionConflict
from pgactors.metrics import (
    LATENCY_BUCKETS,
    MetricsSnapshot,
    OperationStats,
    prometheus_text,
    serve_metrics,
)
from pgactors.stats import PoolStats

# One sample line of the text format: name, optional labels, value.
SAMPLE = re.compile(r'^([a-z_]+)(\{[a-z_]+="[^"]*"(?:,[a-z_]+="[^"]*")*\})? (\S+)$')


def samples(text: str) -> dict[str, float]:
    """Every sample of an exposition, keyed by name plus labels; checks the line syntax."""
    found: dict[str, float] = {}
    declared: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            declared.add(line.split()[2])
            continue
        if line.startswith("# HELP "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a valid sample line: {line!r}"
        name = match[1]
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in declared or family in declared, f"{name} has no TYPE line"
        found[name + (match[2] or "")] = float(match[3])
    return found


async def test_operations_are_counted_and_timed() -> None:
    store = InMemoryStore()
    for i in range(5):
        await store.save("T", f"k{i}", {"i": i})
    for i in range(7):
        await store.load("T", f"k{i}")  # two are missing: still calls
    await store.load_many("T", ["k1", "k2"])
    snapshot = store.metrics()
    assert snapshot.operations["save"].count == 5
    assert snapshot.operations["load"].count == 7
    assert snapshot.operations["load_many"].count == 1
    assert "delete" not in snapshot.operations
    load = snapshot.operations["load"]
    assert load.sum_seconds > 0
    counts = [count for _, count in load.buckets]
    assert counts == sorted(counts), "buckets are cumulative"
    assert [bound for bound, _ in load.buckets] == list(LATENCY_BUCKETS)
    assert counts[-1] <= load.count


async def test_conflicts_errors_and_update_retries() -> None:
    store = InMemoryStore()
    await store.save("T", "a", {"n": 0})
    with pytest.raises(VersionConflict):
        await store.save("T", "a", {"n": 1}, expected_version=5)
    with pytest.raises(VersionConflict):
        await store.delete("T", "a", expected_version=9)
    with pytest.raises(InvalidInput):
        await store.load("", "a")

    interfered = False

    async def bump(data: dict[str, int]) -> dict[str, int]:
        nonlocal interfered
        if not interfered:  # a concurrent writer: the first attempt must be re-run
            interfered = True
            await store.save("T", "a", {"n": 100})
        return {"n": data["n"] + 1}

    record = await store.update("T", "a", bump)
    assert record.data == {"n": 101}
    snapshot = store.metrics()
    assert snapshot.operations["save"].conflicts == 1
    assert snapshot.operations["delete"].conflicts == 1
    assert snapshot.operations["load"].errors == 1
    assert snapshot.operations["load"].conflicts == 0
    assert snapshot.operations["update"].count == 1
    assert snapshot.operations["update"].conflicts == 0
    assert snapshot.retries["update"] == 1
    assert snapshot.conflicts == 2
    assert snapshot.pool is None


async def test_update_giving_up_counts_a_conflict() -> None:
    store = InMemoryStore()
    await store.save("T", "a", 0)

    async def always_interfere(data: int) -> int:
        await store.save("T", "a", data + 10)
        return data + 1

    with pytest.raises(VersionConflict):
        await store.update("T", "a", always_interfere, max_retries=2)
    snapshot = store.metrics()
    assert snapshot.retries["update"] == 2
    assert snapshot.operations["update"].conflicts == 1


def test_prometheus_text_format() -> None:
    bounds = LATENCY_BUCKETS
    buckets = tuple((b, 3 if b >= 0.001 else 1) for b in bounds)
    snapshot = MetricsSnapshot(
        operations={"load": OperationStats(4, 1, 0, 0.0125, buckets)},
        retries={"update": 2, "read": 0},
        pool=PoolStats(min_size=1, max_size=10, size=3, available=2, waiting=0, requests=9),
    )
    text = prometheus_text(snapshot)
    assert text.endswith("\n")
    found = samples(text)
    assert found['pgactors_operations_total{operation="load"}'] == 4
    assert found['pgactors_operation_errors_total{operation="load"}'] == 1
    assert found['pgactors_conflicts_total{operation="load"}'] == 0
    assert found['pgactors_operation_duration_seconds_bucket{operation="load",le="0.0005"}'] == 1
    assert found['pgactors_operation_duration_seconds_bucket{operation="load",le="0.001"}'] == 3
    assert found['pgactors_operation_duration_seconds_bucket{operation="load",le="+Inf"}'] == 4
    assert found['pgactors_operation_duration_seconds_count{operation="load"}'] == 4
    assert found['pgactors_operation_duration_seconds_sum{operation="load"}'] == 0.0125
    assert found['pgactors_retries_total{kind="update"}'] == 2
    assert found["pgactors_pool_size"] == 3
    assert found["pgactors_pool_requests_total"] == 9
    assert "# TYPE pgactors_operation_duration_seconds histogram" in text
    assert "# TYPE pgactors_operations_total counter" in text
    assert "# TYPE pgactors_pool_available gauge" in text
    assert "pgactors_records" not in text  # no server figures in this snapshot


def test_prometheus_label_values_are_escaped() -> None:
    snapshot = MetricsSnapshot(operations={}, retries={'odd"kind\\': 1})
    assert 'pgactors_retries_total{kind="odd\\"kind\\\\"} 1' in prometheus_text(snapshot)


async def test_postgres_metrics_include_the_pool(pg_store: Store) -> None:
    await asyncio.gather(*(pg_store.save("T", f"k{i}", i) for i in range(20)))
    snapshot = pg_store.metrics()
    assert snapshot.operations["save"].count == 20
    pool = snapshot.pool
    assert pool is not None
    assert pool.max_size == pg_store.config.pool_max_size
    assert 1 <= pool.size <= pool.max_size
    assert 0 <= pool.available <= pool.size
    assert pool.waiting == 0
    assert pool.requests >= 1
    assert snapshot.retries == {"deadlock": 0, "read": 0, "update": 0}
    found = samples(prometheus_text(snapshot))
    assert found['pgactors_operations_total{operation="save"}'] == 20


async def http_get(port: int, path: str, method: str = "GET") -> tuple[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    response = (await reader.read()).decode()
    writer.close()
    head, _, body = response.partition("\r\n\r\n")
    return head, body


async def test_serve_metrics() -> None:
    store = InMemoryStore()
    await store.save("T", "a", 1)
    async with await serve_metrics(store, 0) as server:
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        head, body = await http_get(server.port, "/metrics")
        assert head.startswith("HTTP/1.1 200 OK")
        assert "Content-Type: text/plain; version=0.0.4" in head
        assert samples(body)['pgactors_operations_total{operation="save"}'] == 1
        await store.save("T", "a", 2)
        _, body = await http_get(server.port, "/metrics")
        assert samples(body)['pgactors_operations_total{operation="save"}'] == 2
        head, _ = await http_get(server.port, "/elsewhere")
        assert head.startswith("HTTP/1.1 404")
        head, _ = await http_get(server.port, "/metrics", method="POST")
        assert head.startswith("HTTP/1.1 405")
    with pytest.raises(OSError):
        await http_get(server.port, "/metrics")


async def test_serve_metrics_with_server_stats(pg_store: Store) -> None:
    await pg_store.save_many("Cart", {"c1": {}, "c2": {}})
    overdue = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    await pg_store.set_reminder("Cart", "c1", "expire", at=overdue)
    await pg_store.set_reminder("Cart", "c1", "older", at=overdue - timedelta(days=1))
    await pg_store.set_reminder("Cart", "c2", "expire", after=3600)
    async with await serve_metrics(pg_store, 0, server_stats=True) as server:
        _, body = await http_get(server.port, "/metrics")
    found = samples(body)
    assert found['pgactors_records{type="Cart"}'] == 2
    assert found["pgactors_reminders"] == 3
    assert found["pgactors_reminders_overdue"] == 2
    oldest = (overdue - timedelta(days=1)).timestamp()
    assert found["pgactors_reminders_oldest_overdue_timestamp_seconds"] == oldest
    assert "# TYPE pgactors_reminders_overdue gauge" in body
    assert found["pgactors_state_index_bytes"] > 0
    assert found["pgactors_state_partitions"] == 0
    assert 0 <= found["pgactors_notification_queue_usage_ratio"] <= 1


async def test_server_stats(pg_store: Store, pg_dsn: str) -> None:
    await pg_store.save_many("T", {f"k{i}": {"blob": "x" * 5000 + str(i)} for i in range(10)})
    await pg_store.sequence_changes()
    # The oldest six changes happened two minutes ago: only four are recent.
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "UPDATE {}.pgactors_changes SET at = now() - interval '2 minutes' "
                "WHERE position <= 6"
            ).format(sql.Identifier(pg_store.config.schema))
        )
    async with pg_store.changes() as stream:
        assert stream is not None
        # The listener connects in the background after the subscription: wait for it (and
        # for a listener of an earlier test, closed but still exiting, to be gone).
        deadline = asyncio.get_running_loop().time() + 10
        while (stats := await pg_store.server_stats()).listeners != 1:
            assert asyncio.get_running_loop().time() < deadline, "the listener never showed"
            await asyncio.sleep(0.01)
        assert stats.listeners == 1
    assert stats.types == {"T": 10}
    assert stats.writes_last_minute == 4
    assert stats.writes_per_second == pytest.approx(4 / 60)
    assert stats.changes_rows == 10
    assert stats.changes_bytes is not None and stats.changes_bytes > 0
    assert stats.partitions == 0
    assert stats.heap_bytes > 0 and stats.index_bytes > 0
    assert stats.toast_bytes > 0
    assert stats.connections >= 1 and stats.active_connections >= 1
    assert 0 <= stats.notification_queue_usage <= 1
    assert stats.dead_rows >= 0 and stats.live_rows >= 0
    report = stats.as_dict()
    assert report["writes_per_second"] == pytest.approx(4 / 60)
    assert report["last_autovacuum"] is None or isinstance(report["last_autovacuum"], str)


async def test_writes_last_minute_with_nothing_recent(pg_store: Store, pg_dsn: str) -> None:
    stats = await pg_store.server_stats()
    assert stats.writes_last_minute == 0
    for i in range(3):
        await pg_store.save("T", "a", i)
    await pg_store.sequence_changes()
    assert (await pg_store.server_stats()).writes_last_minute == 3
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("UPDATE {}.pgactors_changes SET at = now() - interval '61 seconds'").format(
                sql.Identifier(pg_store.config.schema)
            )
        )
    assert (await pg_store.server_stats()).writes_last_minute == 0


async def test_in_memory_server_stats_are_reduced() -> None:
    store = InMemoryStore()
    await store.save_many("T", {"a": 1, "b": 2})
    await store.delete("T", "a")
    stats = await store.server_stats()
    assert stats.types == {"T": 1}
    assert stats.writes_last_minute == 3
    assert stats.live_rows == 1
    assert (stats.heap_bytes, stats.connections, stats.partitions) == (0, 0, 0)
    assert math.isclose(stats.notification_queue_usage, 0.0)
    assert (stats.reminders, stats.reminders_overdue, stats.oldest_overdue_reminder) == (0, 0, None)


async def test_reminder_figures_in_memory() -> None:
    store = InMemoryStore()
    overdue = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    await store.set_reminder("T", "a", "ping", at=overdue)
    await store.set_reminder("T", "b", "ping", after=3600, every=60)
    stats = await store.server_stats()
    assert (stats.reminders, stats.reminders_overdue) == (2, 1)
    assert stats.oldest_overdue_reminder == overdue
    assert stats.as_dict()["oldest_overdue_reminder"] == overdue.isoformat()
    found = samples(prometheus_text(replace(store.metrics(), server=stats)))
    assert found["pgactors_reminders"] == 2 and found["pgactors_reminders_overdue"] == 1
    assert found["pgactors_reminders_oldest_overdue_timestamp_seconds"] == overdue.timestamp()

    # None overdue: the counts are 0 and the oldest-overdue gauge is absent.
    await store.cancel_reminder("T", "a", "ping")
    stats = await store.server_stats()
    assert stats.as_dict()["oldest_overdue_reminder"] is None
    found = samples(prometheus_text(replace(store.metrics(), server=stats)))
    assert found["pgactors_reminders"] == 1 and found["pgactors_reminders_overdue"] == 0
    assert "pgactors_reminders_oldest_overdue_timestamp_seconds" not in found
