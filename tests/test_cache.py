"""The read cache (``cache_size``): hits, own writes at once, others' writes once the feed
delivers them, expiry, deletes, reconnects, and a history check under concurrency."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from conftest import cache_serving
from pgactors import ConfigError, InMemoryStore, InvalidInput, Store
from pgactors.changes import Change
from pgactors.config import StoreConfig
from pgactors.metrics import prometheus_text
from pgbouncer_server import PgBouncer

BOTH = pytest.mark.parametrize("store", ["memory-cached", "postgres-cached"], indirect=True)


def cache_of(store: Store) -> Any:
    cache = store.metrics().cache
    assert cache is not None
    return cache


async def until(condition: Any, what: str, within: float = 15.0) -> None:
    """Poll ``condition()`` until true, or fail naming ``what``."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


@BOTH
async def test_hits_are_private_copies_and_counted(store: Store) -> None:
    await store.save("T", "a", {"n": 1, "list": [1]})
    first = await store.load("T", "a")
    hits = cache_of(store).hits
    second = await store.load("T", "a")
    assert cache_of(store).hits == hits + 1
    assert first is not None and second is not None and second.data == {"n": 1, "list": [1]}
    second.data["list"].append(2)  # the caller's copy, not the cache's
    third = await store.load("T", "a")
    assert third is not None and third.data == {"n": 1, "list": [1]}
    cache = cache_of(store)
    assert cache.entries >= 1 and cache.bytes > 0 and cache.serving and cache.position is not None


@BOTH
async def test_own_writes_are_read_at_once(store: Store) -> None:
    await store.save("T", "a", {"n": 0})
    assert (await store.load("T", "a")) is not None  # cached
    for n in range(1, 4):
        await store.update("T", "a", lambda d: {"n": d["n"] + 1})
        record = await store.load("T", "a")
        assert record is not None and record.data == {"n": n} and record.version == n + 1
    await store.save_many("T", {"a": {"n": 10}, "b": {"n": 20}})
    assert (await store.load("T", "a")).data == {"n": 10}  # type: ignore[union-attr]
    assert (await store.load_many("T", ["a", "b"]))["b"].data == {"n": 20}
    async with store.transaction() as tx:
        await tx.save("T", "a", {"n": 11})
        await tx.delete("T", "b")
    assert (await store.load("T", "a")).data == {"n": 11}  # type: ignore[union-attr]
    assert await store.load("T", "b") is None
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.save("T", "a", {"n": 99})
            raise RuntimeError("rolled back")
    current = await store.load("T", "a")
    assert current is not None and current.data == {"n": 11} and current.version == 6
    await store.save_call("T", "a", {"n": 12}, expected_version=6, call_id="c1")
    assert (await store.load("T", "a")).data == {"n": 12}  # type: ignore[union-attr]
    assert await store.delete("T", "a")
    assert await store.load("T", "a") is None
    assert await store.load_many("T", ["a", "b"]) == {}


@BOTH
async def test_expired_records_are_never_served(store: Store) -> None:
    saved = await store.save("T", "short", {"v": 1}, ttl=0.5)
    assert saved.expires_at is not None
    loaded = await store.load("T", "short")
    assert loaded is not None
    hits = cache_of(store).hits
    served_while_live = 0
    deadline = time.monotonic() + 15
    while True:
        before = await server_clock(store)
        record = await store.load("T", "short")
        if record is None:
            break
        assert record.expires_at is not None and record.expires_at > before, "served expired"
        served_while_live += 1
        assert time.monotonic() < deadline, "the record never expired"
        await asyncio.sleep(0.01)
    assert served_while_live and cache_of(store).hits > hits  # it was served from the cache
    assert await store.load("T", "short") is None


async def server_clock(store: Store) -> datetime:
    if isinstance(store, InMemoryStore):
        return datetime.now(UTC)
    async with await psycopg.AsyncConnection.connect(store.config.dsn or "") as conn:
        cur = await conn.execute("SELECT clock_timestamp()")
        row = await cur.fetchone()
        assert row is not None
        value: datetime = row[0]
        return value


@BOTH
async def test_bounds_by_records_and_bytes(store: Store) -> None:
    await store.save_many("T", {f"k{i}": {"i": i} for i in range(2 * 1000 + 10)})
    for i in range(2 * 1000 + 10):
        await store.load("T", f"k{i}")
    cache = cache_of(store)
    assert cache.entries == cache.max_entries == 1000
    assert cache.evictions >= 1000


async def test_bytes_bound(pg_dsn: str, schema_name: str) -> None:
    async with await Store.connect(
        pg_dsn, schema=schema_name, cache_size=1000, cache_bytes=10_000
    ) as store:
        await store.init_schema()
        await cache_serving(store)
        await store.save_many("T", {f"k{i}": {"pad": "x" * 500} for i in range(100)})
        for i in range(100):
            await store.load("T", f"k{i}")
        cache = cache_of(store)
        assert 0 < cache.bytes <= 10_000 and 0 < cache.entries < 100
        await store.save("T", "huge", {"pad": "y" * 20_000})  # larger than the bound
        assert (await store.load("T", "huge")) is not None
        assert cache_of(store).bytes <= 10_000


WRITER = """
import asyncio, sys, time
from pgactors import Store

async def main(dsn, schema):
    async with await Store.connect(dsn, schema=schema) as store:
        await store.save("T", "shared", {"by": "other"}, expected_version=1)
        await store.delete("T", "gone")
        print(time.time(), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_another_process_write_is_seen_once_the_feed_delivers_it(
    pg_dsn: str, schema_name: str
) -> None:
    async with await Store.connect(pg_dsn, schema=schema_name, cache_size=100) as store:
        await store.init_schema()
        await cache_serving(store)
        await store.save("T", "shared", {"by": "me"})
        await store.save("T", "gone", {"by": "me"})
        for id in ("shared", "gone"):
            await store.load("T", id)
        hits = cache_of(store).hits
        assert (await store.load("T", "shared")).data == {"by": "me"}  # type: ignore[union-attr]
        assert await store.load("T", "gone") is not None
        assert cache_of(store).hits == hits + 2  # both served from the cache
        async with store.changes("T") as stream:
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-c", WRITER, pg_dsn, schema_name],
                capture_output=True,
                text=True,
                timeout=60,
                env=os.environ.copy(),
            )
            assert done.returncode == 0, done.stderr
            acknowledged = float(done.stdout.split()[-1])
            seen: list[Change] = []
            async for change in stream:
                seen.append(change)
                if change.op == "delete":
                    break
            delivered = time.time()
            # Delivered to this store's feed: its cache has dropped both, so no stale read.
            record = await store.load("T", "shared")
            assert record is not None and record.data == {"by": "other"} and record.version == 2
            assert await store.load("T", "gone") is None
        print(f"\ndelivered after the writer's ack: {delivered - acknowledged:.3f}s")
        assert [(c.id, c.op) for c in seen][-2:] == [("shared", "save"), ("gone", "delete")]


async def test_fresh_reads_postgres_and_refreshes(pg_dsn: str, schema_name: str) -> None:
    async with await Store.connect(pg_dsn, schema=schema_name, cache_size=100) as store:
        await store.init_schema()
        await cache_serving(store)
        await store.save("T", "a", {"v": 1})
        assert (await store.load("T", "a")).data == {"v": 1}  # type: ignore[union-attr]
        # A write that logs no change (pgactors.changes = off): no cache can hear of it.
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            await conn.execute("SET pgactors.changes = off")
            await conn.execute(
                f'UPDATE "{schema_name}".pgactors_state SET data = \'{{"v": 2}}\', '
                "version = version + 1 WHERE type = 'T' AND id = 'a'"
            )
        assert (await store.load("T", "a")).data == {"v": 1}  # type: ignore[union-attr]
        fresh = await store.load("T", "a", fresh=True)
        assert fresh is not None and fresh.data == {"v": 2} and fresh.version == 2
        assert (await store.load("T", "a")).data == {"v": 2}  # type: ignore[union-attr]
        with pytest.raises(InvalidInput, match="fresh must be True or False"):
            await store.load("T", "a", fresh="yes")  # type: ignore[arg-type]


async def test_no_stale_read_after_the_listener_reconnects(pg_dsn: str, schema_name: str) -> None:
    channel = f"c_{schema_name}"
    async with (
        await Store.connect(pg_dsn, schema=schema_name, channel=channel, cache_size=100) as store,
        await Store.connect(pg_dsn, schema=schema_name, channel=channel) as other,
    ):
        await store.init_schema()
        await cache_serving(store)
        await store.save("T", "a", {"v": 1})
        await store.load("T", "a")
        hits = cache_of(store).hits
        assert (await store.load("T", "a")).data == {"v": 1}  # type: ignore[union-attr]
        assert cache_of(store).hits == hits + 1
        feed = store._feed
        assert feed is not None and feed.reconnects == 0
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                [f"pgactors listen {channel}"],
            )
            assert [row[0] for row in await cur.fetchall()] == [True]
        # Written while the listener is gone: its notification reaches nobody here.
        await other.save("T", "a", {"v": 2})
        await until(lambda: feed.reconnects >= 1, "the listener to notice and reconnect")
        await until(lambda: cache_of(store).serving, "the cache to serve again")
        record = await store.load("T", "a")
        assert record is not None and record.data == {"v": 2}


async def test_config_and_pooler_without_listen_dsn(
    pg_dsn: str, pgbouncer_transaction: PgBouncer, schema_name: str
) -> None:
    with pytest.raises(ConfigError, match="cache_size must be an integer between 0"):
        StoreConfig(cache_size=-1)
    with pytest.raises(ConfigError, match="cache_bytes must be an integer >= 1"):
        StoreConfig(cache_bytes=0)
    assert StoreConfig.resolve(None, cache_size=None).cache_size == 0
    os.environ["PGACTORS_CACHE_SIZE"] = "123"
    try:
        assert StoreConfig.resolve(None).cache_size == 123
    finally:
        del os.environ["PGACTORS_CACHE_SIZE"]
    with pytest.raises(ConfigError, match="listen_dsn"):
        await Store.connect(
            pgbouncer_transaction.dsn, schema=schema_name, pooler="pgbouncer", cache_size=10
        )
    async with await Store.connect(pg_dsn, schema=schema_name, cache_size=10) as store:
        await store.init_schema()
        await cache_serving(store)
        await store.save("T", "a", {})
        await store.load("T", "a")
        text = prometheus_text(store.metrics())
        assert "pgactors_cache_hits_total" in text and "pgactors_cache_entries 1" in text


# -- the history check ----------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    store: int
    worker: int
    kind: str  # "save" or "load"
    id: str
    version: int  # saved, or loaded (0: absent)
    started: float
    ended: float
    position: int  # the cache's feed position when the load began


async def test_history_no_load_older_than_own_writes_or_delivered_changes(
    pg_dsn: str, schema_name: str
) -> None:
    """Two stores, each with its cache and eight workers saving and loading 20 records.

    Every load must return at least (1) the version its own worker last saved, and
    (2) every version whose change its store's feed had delivered when the load began.
    """
    keys = [f"k{i}" for i in range(20)]
    ops: list[Op] = []
    stores = [await Store.connect(pg_dsn, schema=schema_name, cache_size=1000) for _ in range(2)]
    try:
        await stores[0].init_schema()
        for store in stores:
            await cache_serving(store)
        collected: list[Change] = []
        async with stores[0].changes("T") as stream:

            async def collect() -> None:
                async for change in stream:
                    collected.append(change)

            collector = asyncio.create_task(collect())

            async def worker(s: int, w: int) -> None:
                store, rng = stores[s], random.Random(s * 100 + w)
                for _ in range(150):
                    id = rng.choice(keys)
                    started = time.monotonic()
                    if rng.random() < 0.3:
                        record = await store.save("T", id, {"by": [s, w]})
                        ops.append(Op(s, w, "save", id, record.version, started, 0, 0))
                    else:
                        position = cache_of(store).position or 0
                        loaded = await store.load("T", id)
                        version = loaded.version if loaded else 0
                        ops.append(
                            Op(s, w, "load", id, version, started, time.monotonic(), position)
                        )

            await asyncio.gather(*(worker(s, w) for s in range(2) for w in range(8)))
            saves = [o for o in ops if o.kind == "save"]
            await until(lambda: len(collected) >= len(saves), "every save in the feed")
            collector.cancel()
    finally:
        for store in stores:
            await store.close()

    # Versions per key in position order: (position, version).
    logged: dict[str, list[tuple[int, int]]] = {}
    for change in collected:
        logged.setdefault(change.id, []).append((change.position, change.version))
    assert sum(len(v) for v in logged.values()) == len(saves)
    own: dict[tuple[int, int, str], int] = {}
    checked_bound = 0
    hits = 0
    for op in ops:  # in the order each worker finished its ops (per worker: program order)
        key = (op.store, op.worker, op.id)
        if op.kind == "save":
            own[key] = max(own.get(key, 0), op.version)
            continue
        assert op.version >= own.get(key, 0), f"{op}: older than its worker's own write"
        delivered = [v for p, v in logged.get(op.id, []) if p <= op.position]
        if delivered:
            checked_bound += 1
            assert op.version >= max(delivered), f"{op}: older than a delivered change"
    assert checked_bound > 100
    for store in stores:
        hits += cache_of(store).hits
    assert hits > 0  # the cache served some of them


# -- the coherence rules, one at a time ----------------------------------------------------


def rec(id: str, version: int, data: Any = None) -> Any:
    from pgactors.record import Record

    now = datetime.now(UTC)
    return Record("T", id, data if data is not None else {"v": version}, version, now, now)


def serving_cache(entries: int = 10) -> Any:
    from pgactors.cache import RecordCache

    cache = RecordCache(entries, 1 << 20)
    cache.start(0)
    return cache


def test_a_read_begun_before_an_invalidation_is_not_cached() -> None:
    cache = serving_cache()
    token = cache.token()
    cache.invalidate(("T", "a"), 2, False)  # the feed: version 2 committed meanwhile
    cache.put(rec("a", 1), token)  # the slow read saw version 1
    assert cache.get(("T", "a")) is None
    cache.put(rec("a", 2), cache.token())  # a read begun after it is cached
    assert cache.get(("T", "a")).version == 2


def test_a_stale_version_never_replaces_a_newer_one() -> None:
    cache = serving_cache()
    cache.put(rec("a", 3), cache.token())
    cache.put(rec("a", 2), cache.token())
    assert cache.get(("T", "a")).version == 3
    cache.invalidate(("T", "a"), 2, False)  # an older change arriving late keeps 3
    assert cache.get(("T", "a")).version == 3
    cache.invalidate(("T", "a"), 4, False)
    assert cache.get(("T", "a")) is None


def test_a_refused_put_still_drops_an_older_entry() -> None:
    cache = serving_cache()
    cache.put(rec("a", 1), cache.token())
    token = cache.token()
    cache.invalidate(("T", "a"), 1, False)  # touched: the next put is refused
    cache.put(rec("a", 2), token)  # but version 1 must not be served after it
    assert cache.get(("T", "a")) is None


def test_a_read_begun_during_an_own_write_is_not_cached() -> None:
    # The write's own record may be refused (the key was touched while it ran) or
    # evicted; a read that began before the write returned may hold the version before
    # it, and must not be served afterwards.
    cache = serving_cache()
    token = cache.token()  # the write of version 3 begins
    cache.invalidate(("T", "a"), 2, False)  # the feed: version 2 committed before it
    read = cache.token()  # a read begins, and sees version 2
    cache.written(rec("a", 3), token)  # refused: touched since the write began
    cache.put(rec("a", 2), read)
    assert cache.get(("T", "a")) is None
    cache.put(rec("a", 3), cache.token())  # a read begun after the write returned
    assert cache.get(("T", "a")).version == 3


def test_a_read_begun_during_an_own_write_is_not_cached_after_an_eviction() -> None:
    cache = serving_cache(entries=1)
    token = cache.token()
    read = cache.token()  # a read of version 1 begins while version 2 is written
    cache.written(rec("a", 2), token)
    cache.put(rec("b", 1), cache.token())  # evicts version 2
    cache.put(rec("a", 1), read)
    assert cache.get(("T", "a")) is None


def test_forgotten_invalidations_refuse_every_older_read() -> None:
    from pgactors import cache as cache_module

    cache = serving_cache(entries=10)
    token = cache.token()
    for i in range(cache_module.TOUCHED_LIMIT + 1):
        cache.invalidate(("T", f"x{i}"), 1, False)
    cache.put(rec("x0", 1), token)  # its invalidation is no longer remembered by key
    assert cache.get(("T", "x0")) is None


def test_stopped_cache_serves_nothing_and_refuses_reads_begun_before() -> None:
    cache = serving_cache()
    cache.put(rec("a", 1), cache.token())
    token = cache.token()
    cache.stop()
    assert cache.get(("T", "a")) is None
    cache.start(5)
    cache.put(rec("a", 1), token)
    assert cache.get(("T", "a")) is None
    cache.put(rec("a", 1), cache.token())
    assert cache.get(("T", "a")).version == 1
    cache.invalidate(("T", "a"), 1, True)  # a delete drops whatever version is cached
    assert cache.get(("T", "a")) is None


@BOTH
async def test_an_import_is_read_at_once(store: Store) -> None:
    await store.save("T", "a", {"v": 1})
    assert (await store.load("T", "a")).data == {"v": 1}  # type: ignore[union-attr]
    lines = ['{"type": "T", "id": "a", "data": {"v": 2}}']
    await store.import_jsonl(lines, on_conflict="overwrite")
    assert (await store.load("T", "a")).data == {"v": 2}  # type: ignore[union-attr]


async def test_a_gap_in_the_feed_clears_the_cache_until_it_resubscribes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pgactors import cached
    from pgactors.errors import ChangesLost

    monkeypatch.setattr(cached, "RETRY_AFTER", 0.0)
    store = InMemoryStore(StoreConfig(cache_size=10))
    try:
        await cache_serving(store)
        await store.save("T", "a", {"v": 1})
        await store.load("T", "a")
        assert cache_of(store).entries == 1
        feed = store._feed
        assert feed is not None
        (watcher,) = [s for s in feed._subscribers if s.sink is not None]
        watcher.fail(ChangesLost(5, 3))  # as after a failover that lost changes
        after = cache_of(store)
        assert not after.serving and after.entries == 0
        record = await store.load("T", "a")  # read afresh, and subscribes again
        assert record is not None and record.data == {"v": 1}
        await until(lambda: cache_of(store).serving, "the cache to serve again")
        await store.load("T", "a")
        assert cache_of(store).entries == 1
    finally:
        await store.close()
