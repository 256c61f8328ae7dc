"""Version history on PostgreSQL: the trigger, concurrency, retention, the purger.

The semantics every backend shares are in tests/test_conformance.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgactors import InMemoryStore, Store, SyncStore, VersionConflict

TIMEOUT = 30.0


def query(dsn: str, schema: str, text: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run ``text`` with ``{s}`` standing for the schema."""
    statement = sql.SQL(text).format(s=sql.Identifier(schema))
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def triggers(dsn: str, schema: str) -> list[tuple[str, str]]:
    """The history triggers on the state table itself: name and definition."""
    return [
        (name, definition)
        for name, definition in query(
            dsn,
            schema,
            "SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
            "WHERE t.tgrelid = %s::regclass AND t.tgname LIKE '%%history%%'",
            f'"{schema}".pgactors_state',
        )
    ]


async def test_trigger_exists_only_while_a_type_has_history(pg_store: Store, pg_dsn: str) -> None:
    schema = pg_store.config.schema
    assert triggers(pg_dsn, schema) == []
    await pg_store.enable_history("B")
    await pg_store.enable_history("A", keep_versions=3)
    [(name, definition)] = triggers(pg_dsn, schema)
    assert name == "pgactors_history_record"
    assert "AFTER DELETE OR UPDATE" in definition and "FOR EACH ROW" in definition
    assert "{A,B}" in definition  # the enabled types, a literal of the WHEN clause
    assert all(present for _, _, present in await pg_store.verify_schema())
    await pg_store.disable_history("B")
    [(_, definition)] = triggers(pg_dsn, schema)
    assert "{A}" in definition
    await pg_store.disable_history("A")
    assert triggers(pg_dsn, schema) == []
    assert all(present for _, _, present in await pg_store.verify_schema())


async def test_history_on_a_partitioned_state_table(pg_dsn: str, schema_name: str) -> None:
    async with await Store.connect(pg_dsn, schema=schema_name) as store:
        await store.init_schema(partitions=4)
        await store.enable_history("T")
        ids = [f"id-{i}" for i in range(40)]
        await store.save_many("T", {id: {"v": 1} for id in ids})
        await store.save_many("T", {id: {"v": 2} for id in ids})
        await store.delete_many("T", ids[:10])
        spread = query(
            pg_dsn,
            schema_name,
            "SELECT count(DISTINCT s.tableoid) FROM {s}.pgactors_state s",
        )
        assert spread[0][0] == 4, "the records span every partition"
        for id in ids:
            past = await store.history("T", id)
            expected = [(2, {"v": 2}), (1, {"v": 1})] if id in ids[:10] else [(1, {"v": 1})]
            assert [(p.version, p.data) for p in past] == expected
        [info] = await store.history_info()
        assert info.rows == 50


async def test_concurrent_writers_each_version_kept_once_in_order(pg_store: Store) -> None:
    await pg_store.enable_history("Counter")
    await pg_store.save("Counter", "c", {"n": 1, "by": None})
    written: dict[int, dict[str, Any]] = {1: {"n": 1, "by": None}}
    target = 200

    async def writer(task: int) -> None:
        while len(written) <= target:
            current = await pg_store.load("Counter", "c")
            assert current is not None
            data = {"n": current.version + 1, "by": task, "seen": len(written)}
            try:
                saved = await pg_store.save("Counter", "c", data, expected_version=current.version)
            except VersionConflict:
                continue
            assert saved.version not in written
            written[saved.version] = data

    await asyncio.wait_for(asyncio.gather(*(writer(t) for t in range(16))), TIMEOUT)
    current = await pg_store.load("Counter", "c")
    assert current is not None and current.version == max(written) > target
    past = await pg_store.history("Counter", "c", limit=1000)
    assert [p.version for p in past] == list(range(current.version - 1, 0, -1))
    assert {p.version: p.data for p in past} == {
        v: d for v, d in written.items() if v != current.version
    }
    assert len({p.version for p in past}) == len(past)
    times = [p.replaced_at for p in reversed(past)]
    assert times == sorted(times)


async def test_age_retention_at_its_boundary(pg_store: Store, pg_dsn: str) -> None:
    schema = pg_store.config.schema
    await pg_store.enable_history("T", keep_days=10)
    for n in range(1, 6):
        await pg_store.save("T", "a", n)
    # Versions 1 and 2 were replaced 11 and 10.5 days ago, 3 nine days ago.
    for version, days in ((1, 11), (2, 10.5), (3, 9)):
        query(
            pg_dsn,
            schema,
            "UPDATE {s}.pgactors_history SET replaced_at = now() - %s * interval '1 day' "
            "WHERE version = %s",
            days,
            version,
        )
    assert [p.version for p in await pg_store.history("T", "a")] == [4, 3]
    assert await pg_store.load("T", "a", version=2) is None
    assert await pg_store.purge_history() == 2
    left = query(pg_dsn, schema, "SELECT version FROM {s}.pgactors_history ORDER BY seq")
    assert left == [(3,), (4,)]


async def test_expiry_keeps_the_last_version_as_deleted(pg_store: Store, pg_dsn: str) -> None:
    schema = pg_store.config.schema
    await pg_store.save("T", "gone", {"n": 1}, ttl=3600)
    await pg_store.save("T", "over", {"n": 1}, ttl=3600)
    await pg_store.save("T", "kept", {"n": 1}, ttl=3600)
    # Expired an hour early (before history is on: this update would be kept too).
    query(
        pg_dsn,
        schema,
        "UPDATE {s}.pgactors_state SET expires_at = now() - interval '1 s' WHERE id <> 'kept'",
    )
    await pg_store.enable_history("T")
    assert await pg_store.purge_expired(limit=1) == 2  # "gone" and "over", one at a time
    [past] = await pg_store.history("T", "gone")
    assert (past.version, past.data, past.deleted) == (1, {"n": 1}, True)
    assert (await pg_store.history("T", "over"))[0].deleted
    assert await pg_store.history("T", "kept") == []


async def test_save_over_an_expired_record_keeps_it_as_deleted(
    pg_store: Store, pg_dsn: str
) -> None:
    await pg_store.save("T", "a", {"n": 1}, ttl=3600)
    await pg_store.save("T", "a", {"n": 2}, ttl=3600)
    query(
        pg_dsn,
        pg_store.config.schema,
        "UPDATE {s}.pgactors_state SET expires_at = now() - interval '1 s'",
    )
    await pg_store.enable_history("T")
    saved = await pg_store.save("T", "a", {"n": 3})
    assert saved.version == 1
    [past] = await pg_store.history("T", "a")
    assert (past.version, past.data, past.deleted) == (2, {"n": 2}, True)


async def test_background_purger_enforces_retention(pg_dsn: str, schema_name: str) -> None:
    async with await Store.connect(pg_dsn, schema=schema_name, purge_interval=0.05) as store:
        await store.init_schema()
        await store.enable_history("T", keep_versions=1)
        for n in range(5):
            await store.save("T", "a", n)
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while (await store.history_info())[0].rows != 1:
            assert asyncio.get_running_loop().time() < deadline, "the purger never ran"
            await asyncio.sleep(0.05)
        assert [p.version for p in await store.history("T", "a")] == [4]


async def test_every_store_connecting_while_history_has_limits_purges(
    pg_dsn: str, schema_name: str
) -> None:
    async with await Store.connect(pg_dsn, schema=schema_name) as admin:
        await admin.init_schema()
        await admin.enable_history("T", keep_versions=1)  # as `pgactors history-enable` does
    async with await Store.connect(pg_dsn, schema=schema_name, purge_interval=0.05) as store:
        for n in range(5):
            await store.save("T", "a", n)
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while (await store.history_info())[0].rows != 1:
            assert asyncio.get_running_loop().time() < deadline, "this store never purged"
            await asyncio.sleep(0.05)


async def test_background_purge_failure_is_logged_and_retried(
    pg_dsn: str, schema_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with await Store.connect(pg_dsn, schema=schema_name, purge_interval=0.05) as store:
        await store.init_schema()
        backend: Any = store._backend
        real = backend.history.purge
        calls = 0

        async def flaky() -> int:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("history boom")
            return int(await real())

        backend.history.purge = flaky
        with caplog.at_level(logging.WARNING, logger="pgactors.postgres"):
            await store.enable_history("T", keep_versions=1)
            for n in range(3):
                await store.save("T", "a", n)
            deadline = asyncio.get_running_loop().time() + TIMEOUT
            while (await store.history_info())[0].rows != 1:
                assert asyncio.get_running_loop().time() < deadline, "no retry"
                await asyncio.sleep(0.05)
        assert "history boom" in caplog.text


async def test_concurrent_enables_keep_every_type(pg_dsn: str, schema_name: str) -> None:
    stores = [await Store.connect(pg_dsn, schema=schema_name) for _ in range(4)]
    try:
        await stores[0].init_schema()
        types = [f"T{i}" for i in range(12)]
        await asyncio.gather(
            *(stores[i % 4].enable_history(t, keep_versions=2) for i, t in enumerate(types))
        )
        [(_, definition)] = triggers(pg_dsn, schema_name)
        assert "{" + ",".join(sorted(types)) + "}" in definition
        for t in types:
            await stores[0].save(t, "a", 1)
            await stores[0].save(t, "a", 2)
            assert len(await stores[1].history(t, "a")) == 1
    finally:
        for store in stores:
            await store.close()


def test_sync_store_history(pg_store_sync: SyncStore) -> None:
    store = pg_store_sync
    store.enable_history("T", keep_versions=2)
    for n in range(4):
        store.save("T", "a", {"n": n})
    assert [p.version for p in store.history("T", "a")] == [3, 2]
    loaded = store.load("T", "a", version=2)
    assert loaded is not None and loaded.data == {"n": 1}
    assert store.purge_history() == 1
    assert [(i.type, i.rows) for i in store.history_info()] == [("T", 2)]
    assert store.disable_history("T") is True


async def test_in_memory_store_same_as_documented() -> None:
    store = InMemoryStore()
    await store.enable_history("T")
    await store.save("T", "a", 1)
    await store.save("T", "a", 2)
    assert [p.data for p in await store.history("T", "a")] == [1]
