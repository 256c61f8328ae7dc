"""TTL and expiry: an expired record is absent everywhere, then purged.

Conformance tests run on both backends. Expiry is made deterministic by moving a
record's ``expires_at`` (and its timestamps) into the past directly, in SQL for
PostgreSQL and in the row dict for the in-memory twin; only one test waits for a
real, short ttl to pass.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgactors import InvalidInput, NotFound, Store, StoreConfig, VersionConflict
from pgactors.errors import ConfigError
from pgactors.memory import MemoryBackend

TIMEOUT = 60
HOUR = timedelta(hours=1)


def _table(store: Store) -> sql.Composed:
    return sql.SQL("{}").format(sql.Identifier(store.config.schema, "pgactors_state"))


async def _sql(store: Store, query: sql.Composable, params: Any = None) -> list[tuple[Any, ...]]:
    assert store.config.dsn is not None
    async with await psycopg.AsyncConnection.connect(store.config.dsn, autocommit=True) as conn:
        # Test set-up, not a change the feed should report.
        await conn.execute("SET pgactors.changes = off")
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description else []


async def expire(store: Store, type: str, id: str) -> None:
    """Make the record expire a second ago (created and updated an hour ago)."""
    backend = store._backend
    if isinstance(backend, MemoryBackend):
        row = backend._rows[(type, id)]
        now = datetime.now(UTC)
        backend._rows[(type, id)] = dataclasses.replace(
            row,
            created_at=row.created_at - HOUR,
            updated_at=row.updated_at - HOUR,
            expires_at=now - timedelta(seconds=1),
        )
        return
    query = sql.SQL(
        "UPDATE {} SET expires_at = now() - interval '1 second',"
        " created_at = created_at - interval '1 hour', updated_at = updated_at - interval '1 hour'"
        " WHERE type = %s AND id = %s"
    ).format(_table(store))
    await _sql(store, query, [type, id])


async def stored_rows(store: Store) -> int:
    """Rows physically present, expired or not."""
    backend = store._backend
    if isinstance(backend, MemoryBackend):
        return len(backend._rows)
    rows = await _sql(store, sql.SQL("SELECT count(*) FROM {}").format(_table(store)))
    return int(rows[0][0])


async def expired_pair(store: Store) -> None:
    """T/live (no expiry), T/gone (expired), U/gone (expired)."""
    await store.save("T", "live", {"n": 1})
    await store.save("T", "gone", {"n": 2}, ttl=3600)
    await store.save("U", "gone", {"n": 3})
    await expire(store, "T", "gone")
    await expire(store, "U", "gone")


# -- setting an expiry ------------------------------------------------------------------


async def test_ttl_sets_expires_at_from_the_save_time(store: Store) -> None:
    saved = await store.save("S", "a", {"n": 1}, ttl=90)
    assert saved.expires_at is not None
    assert saved.expires_at - saved.updated_at == timedelta(seconds=90)
    loaded = await store.load("S", "a")
    assert loaded is not None and loaded.expires_at == saved.expires_at
    assert (await store.load_many("S", ["a"]))["a"].expires_at == saved.expires_at
    half = await store.save("S", "b", [1], ttl=0.5)
    assert half.expires_at is not None
    assert half.expires_at - half.updated_at == timedelta(milliseconds=500)
    plain = await store.save("S", "c", None)
    assert plain.expires_at is None


async def test_save_without_ttl_clears_a_fixed_expiry(store: Store) -> None:
    await store.save("S", "a", {"n": 1}, ttl=60)
    again = await store.save("S", "a", {"n": 2})
    assert again.version == 2 and again.expires_at is None
    loaded = await store.load("S", "a")
    assert loaded is not None and loaded.expires_at is None
    # A new ttl replaces the old one.
    shorter = await store.save("S", "a", {"n": 3}, ttl=5, expected_version=2)
    assert shorter.expires_at is not None
    assert shorter.expires_at - shorter.updated_at == timedelta(seconds=5)


async def test_a_real_short_ttl_expires(store: Store) -> None:
    await store.save("S", "brief", {"n": 1}, ttl=0.05)
    await store.save("S", "long", {"n": 1}, ttl=3600)
    # Time only moves forward: after the sleep, the ttl has passed on any machine.
    await asyncio.sleep(0.2)
    assert await store.load("S", "brief") is None
    assert await store.exists("S", "brief") is False
    assert await store.load("S", "long") is not None
    assert await store.list_ids("S") == ["long"]


# -- an expired record is absent --------------------------------------------------------


async def test_expired_is_invisible_to_every_read(store: Store) -> None:
    await expired_pair(store)
    assert await store.load("T", "gone") is None
    assert await store.exists("T", "gone") is False
    assert await store.exists("T", "live") is True
    assert set(await store.load_many("T", ["live", "gone", "never"])) == {"live"}
    assert await store.list_ids("T") == ["live"]
    assert await store.list_ids("U") == []
    assert await store.types() == {"T": 1}
    async with store.transaction() as tx:
        assert await tx.load("T", "gone") is None
        assert await tx.load("T", "live") is not None


async def test_concurrent_loads_share_batches_and_skip_expired(store: Store) -> None:
    # Enough concurrent loads that PostgreSQL's coalescer batches most of them.
    await expired_pair(store)
    keys = [("T", "live"), ("T", "gone"), ("U", "gone")] * 20
    found = await asyncio.gather(*(store.load(t, i) for t, i in keys))
    for (type, id), record in zip(keys, found, strict=True):
        assert (record is not None) == (id == "live"), (type, id)


async def test_delete_of_an_expired_record(store: Store) -> None:
    await expired_pair(store)
    assert await store.delete("T", "gone") is False
    with pytest.raises(VersionConflict) as info:
        await store.delete("T", "gone", expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, 0)
    assert await store.delete("T", "gone", expected_version=0) is False
    assert await store.delete_many("T", ["gone", "live"]) == 1
    async with store.transaction() as tx:
        assert await tx.delete("U", "gone") is False


async def test_compare_and_set_on_an_expired_record(store: Store) -> None:
    await expired_pair(store)
    with pytest.raises(VersionConflict) as info:
        await store.save("T", "gone", {"n": 9}, expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, 0)
    assert await store.load("T", "gone") is None
    created = await store.save("T", "gone", {"n": 10}, expected_version=0)
    assert created.version == 1 and created.expires_at is None
    assert created.created_at == created.updated_at
    loaded = await store.load("T", "gone")
    assert loaded is not None and loaded.data == {"n": 10} and loaded.version == 1


async def test_last_write_wins_over_an_expired_record_makes_a_new_one(store: Store) -> None:
    before = await store.save("T", "gone", {"n": 1}, ttl=3600)
    await store.save("T", "gone", {"n": 2}, ttl=3600)
    await expire(store, "T", "gone")
    fresh = await store.save("T", "gone", {"n": 3})
    assert fresh.version == 1
    assert fresh.created_at > before.created_at and fresh.created_at == fresh.updated_at
    assert fresh.expires_at is None
    binary = await store.save("U", "b", {"n": 1})
    await expire(store, "U", "b")
    again = await store.save_binary("U", "b", b"\x01", "raw", ttl=30)
    assert again.version == 1 and again.payload == b"\x01"
    assert again.created_at > binary.created_at


async def test_concurrent_saves_over_expired_records(store: Store) -> None:
    # Concurrent saves go through PostgreSQL's batch statements (lww, create, cas).
    ids = [f"r{i:02}" for i in range(30)]
    await store.save_many("T", {i: {"old": True} for i in ids}, ttl=3600)
    for i in ids:
        await expire(store, "T", i)

    async def one(n: int, id: str) -> Any:
        kind = n % 3
        if kind == 0:
            return await store.save("T", id, {"n": n})
        if kind == 1:
            return await store.save("T", id, {"n": n}, expected_version=0, ttl=100 + n)
        try:
            return await store.save("T", id, {"n": n}, expected_version=1)
        except VersionConflict as conflict:
            return conflict

    results = await asyncio.gather(*(one(n, id) for n, id in enumerate(ids)))
    for n, result in enumerate(results):
        if n % 3 == 2:
            assert isinstance(result, VersionConflict) and result.actual == 0
            continue
        assert result.version == 1 and result.data == {"n": n}
        if n % 3 == 1:
            assert result.expires_at - result.updated_at == timedelta(seconds=100 + n)
        else:
            assert result.expires_at is None
    assert len(await store.list_ids("T")) == 20


async def test_update_treats_an_expired_record_as_missing(store: Store) -> None:
    await expired_pair(store)
    with pytest.raises(NotFound):
        await store.update("T", "gone", lambda d: {"n": d["n"] + 1})
    started = await store.update("T", "gone", lambda d: {"n": d["n"] + 1}, default={"n": 100})
    assert started.version == 1 and started.data == {"n": 101}
    async with store.transaction() as tx:
        with pytest.raises(NotFound):
            await tx.update("U", "gone", lambda d: d)
        again = await tx.update("U", "gone", lambda d: {"n": 7}, default={})
    assert again.version == 1 and again.data == {"n": 7}


async def test_save_many_over_expired_records(store: Store) -> None:
    await expired_pair(store)
    with pytest.raises(VersionConflict) as info:
        await store.save_many("T", {"gone": 1, "x": 2}, expected_versions={"gone": 1})
    assert info.value.conflicts == {"gone": (1, 0)}
    assert await store.load("T", "x") is None
    saved = await store.save_many("T", {"gone": 1, "live": 2}, expected_versions={"gone": 0})
    assert saved["gone"].version == 1 and saved["live"].version == 2
    assert saved["gone"].expires_at is None
    lww = await store.save_many("U", {"gone": 5}, ttl=40)
    assert lww["gone"].version == 1
    assert lww["gone"].expires_at - lww["gone"].updated_at == timedelta(seconds=40)


async def test_transaction_saves_with_ttl(store: Store) -> None:
    async with store.transaction() as tx:
        saved = await tx.save("T", "a", {"n": 1}, ttl=20, sliding=True)
        moved = await tx.save("T", "a", {"n": 2})
    assert saved.expires_at is not None and moved.expires_at is not None
    assert moved.expires_at - moved.updated_at == timedelta(seconds=20)
    await expire(store, "T", "a")
    async with store.transaction() as tx:
        assert await tx.load("T", "a") is None
        fresh = await tx.save("T", "a", {"n": 3}, expected_version=0)
    assert fresh.version == 1 and fresh.expires_at is None


# -- sliding expiry -----------------------------------------------------------------------


async def test_sliding_expiry_is_reset_by_every_save(store: Store) -> None:
    first = await store.save("Session", "s", {"n": 1}, ttl=120, sliding=True)
    assert first.expires_at - first.updated_at == timedelta(seconds=120)
    saves = [
        await store.save("Session", "s", {"n": 2}),
        await store.save("Session", "s", {"n": 3}, expected_version=2),
        await store.update("Session", "s", lambda d: {"n": d["n"] + 1}),
        (await store.save_many("Session", {"s": {"n": 5}}))["s"],
        await store.save_binary("Session", "s", b"x", "raw"),
    ]
    for n, saved in enumerate(saves, start=2):
        assert saved.version == n
        assert saved.expires_at is not None, n
        assert saved.expires_at - saved.updated_at == timedelta(seconds=120), n
    loaded = await store.load("Session", "s")
    assert loaded is not None and loaded.expires_at == saves[-1].expires_at


async def test_a_new_ttl_replaces_a_sliding_one(store: Store) -> None:
    await store.save("Session", "s", {}, ttl=120, sliding=True)
    fixed = await store.save("Session", "s", {}, ttl=30)
    assert fixed.expires_at - fixed.updated_at == timedelta(seconds=30)
    # No longer sliding: the next plain save clears the expiry.
    assert (await store.save("Session", "s", {})).expires_at is None
    await store.save("Session", "s", {}, ttl=120, sliding=True)
    slid = await store.save("Session", "s", {}, ttl=10, sliding=True)
    assert slid.expires_at - slid.updated_at == timedelta(seconds=10)
    after = await store.save("Session", "s", {})
    assert after.expires_at - after.updated_at == timedelta(seconds=10)


async def test_sliding_does_not_outlive_expiry(store: Store) -> None:
    await store.save("Session", "s", {}, ttl=120, sliding=True)
    await expire(store, "Session", "s")
    fresh = await store.save("Session", "s", {"new": True})
    assert fresh.version == 1 and fresh.expires_at is None


async def test_concurrent_sliding_saves(store: Store) -> None:
    ids = [f"s{i:02}" for i in range(24)]
    for n, id in enumerate(ids):
        await store.save("Session", id, {"n": 0}, ttl=60 + n, sliding=n % 2 == 0)
    # Each round must keep what the previous one stored: the sliding ttl of even ids.
    rounds: list[dict[str, Any]] = [{}, {"expected_version": 2}, {}, {"expected_version": 4}]
    for version, options in enumerate(rounds, start=2):
        results = await asyncio.gather(
            *(store.save("Session", id, {"n": version}, **options) for id in ids)
        )
        for n, saved in enumerate(results):
            assert saved.version == version
            if n % 2 == 0:
                assert saved.expires_at - saved.updated_at == timedelta(seconds=60 + n)
            else:
                assert saved.expires_at is None


async def test_concurrent_saves_with_and_without_ttl(store: Store) -> None:
    # One batch may hold both: each save gets its own expiry.
    ids = [f"m{i:02}" for i in range(24)]
    await store.save_many("Session", {id: {} for id in ids}, ttl=600, sliding=True)
    for options in ({}, {"expected_version": 3}):
        results = await asyncio.gather(
            *(
                store.save("Session", id, {"n": n}, **options, **({"ttl": 50 + n} if n % 2 else {}))
                for n, id in enumerate(ids)
            )
        )
        for n, saved in enumerate(results):
            ttl = 50 + n if n % 2 else 600
            assert saved.expires_at - saved.updated_at == timedelta(seconds=ttl), n
        # Back to a sliding 600 s everywhere (version 3), for the compare-and-set round.
        await store.save_many("Session", {id: {} for id in ids}, ttl=600, sliding=True)


# -- purge ----------------------------------------------------------------------------------


async def test_purge_expired_deletes_only_expired_rows(store: Store) -> None:
    await expired_pair(store)
    await store.save("T", "later", {}, ttl=3600)
    assert await stored_rows(store) == 4
    assert await store.purge_expired(type="U") == 1
    assert await stored_rows(store) == 3
    assert await store.purge_expired() == 1
    assert await store.purge_expired() == 0
    assert await stored_rows(store) == 2
    assert set(await store.list_ids("T")) == {"live", "later"}


async def test_purge_in_small_batches_deletes_everything(store: Store) -> None:
    await store.save_many("T", {f"r{i}": i for i in range(7)}, ttl=3600)
    for i in range(7):
        await expire(store, "T", f"r{i}")
    assert await store.purge_expired(limit=2) == 7
    assert await stored_rows(store) == 0


async def test_purge_is_a_delete_in_the_change_feed(store: Store) -> None:
    await store.save("T", "a", {}, ttl=3600)
    await expire(store, "T", "a")
    async with store.changes() as stream:
        assert await store.purge_expired() == 1
        change = await asyncio.wait_for(stream.__anext__(), TIMEOUT)
    assert (change.op, change.type, change.id, change.version) == ("delete", "T", "a", 1)


async def test_a_save_over_an_expired_record_is_a_save_of_version_1(store: Store) -> None:
    await store.save("T", "a", {}, ttl=3600)
    await store.save("T", "a", {}, ttl=3600)
    await expire(store, "T", "a")
    async with store.changes() as stream:
        await store.save("T", "a", {"new": True})
        change = await asyncio.wait_for(stream.__anext__(), TIMEOUT)
    assert (change.op, change.type, change.id, change.version) == ("save", "T", "a", 1)


@pytest.mark.parametrize("ttl", [0, -1, 0.0, math.nan, math.inf, "10", True, [5], 10**12], ids=repr)
async def test_bad_ttl_is_refused_and_nothing_written(store: Store, ttl: Any) -> None:
    calls = [
        lambda: store.save("T", "a", {}, ttl=ttl),
        lambda: store.save("T", "a", {}, ttl=ttl, sliding=True),
        lambda: store.save_binary("T", "a", b"", "raw", ttl=ttl),
        lambda: store.save_many("T", {"a": 1}, ttl=ttl),
    ]
    for call in calls:
        with pytest.raises(InvalidInput, match="ttl"):
            await call()
    with pytest.raises(InvalidInput, match="ttl"):
        async with store.transaction() as tx:
            await tx.save("T", "a", {}, ttl=ttl)
    assert await store.exists("T", "a") is False
    assert await stored_rows(store) == 0


async def test_bad_sliding_and_purge_arguments(store: Store) -> None:
    with pytest.raises(InvalidInput, match="sliding=True needs a ttl"):
        await store.save("T", "a", {}, sliding=True)
    with pytest.raises(InvalidInput, match="sliding must be a bool"):
        await store.save("T", "a", {}, ttl=5, sliding="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="sliding"):
        await store.save_many("T", {"a": 1}, sliding=True)
    assert await stored_rows(store) == 0
    for limit in (0, -1, 1.5, True, 10**7):
        with pytest.raises(InvalidInput, match="limit"):
            await store.purge_expired(limit=limit)
    with pytest.raises(InvalidInput, match="invalid type"):
        await store.purge_expired(type="no spaces")


# -- PostgreSQL only: the background purger, locks, the migration -------------------------


async def test_purge_skips_rows_a_writer_holds(pg_store: Store) -> None:
    # A transaction re-saving an expired record holds its row: the purge neither waits
    # for it nor deletes it, and the record survives once the writer commits.
    await expired_pair(pg_store)
    assert pg_store.config.dsn is not None
    async with await psycopg.AsyncConnection.connect(pg_store.config.dsn) as writer:
        await writer.execute(
            sql.SQL("UPDATE {} SET expires_at = NULL WHERE type = 'T' AND id = 'gone'").format(
                _table(pg_store)
            )
        )
        assert await asyncio.wait_for(pg_store.purge_expired(), TIMEOUT) == 1
        await writer.commit()
    assert await pg_store.load("T", "gone") is not None
    assert await pg_store.load("U", "gone") is None
    assert await stored_rows(pg_store) == 2


async def test_concurrent_purges_delete_each_row_once(pg_store: Store) -> None:
    await pg_store.save_many("T", {f"r{i:03}": i for i in range(300)}, ttl=3600)
    await _sql(pg_store, sql.SQL("UPDATE {} SET expires_at = now()").format(_table(pg_store)))
    counts = await asyncio.gather(*(pg_store.purge_expired(limit=7) for _ in range(4)))
    assert sum(counts) == 300
    assert await stored_rows(pg_store) == 0


async def _wait_for_rows(store: Store, n: int) -> None:
    # Polling the database: nothing in this process signals the purger's progress.
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while True:
        rows = await stored_rows(store)
        if rows == n:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{rows} rows, not {n}"
        await asyncio.sleep(0.05)


async def test_background_purger_starts_on_first_ttl_save(pg_dsn: str, schema_name: str) -> None:
    async with await Store.connect(pg_dsn, schema=schema_name, purge_interval=0.05) as store:
        await store.init_schema()
        backend: Any = store._backend
        await store.save("T", "plain", {})
        assert backend.records._purger is None
        await store.save("T", "brief", {}, ttl=0.01)
        purger = backend.records._purger
        assert purger is not None and not purger.done()
        await _wait_for_rows(store, 1)
        assert await store.list_ids("T") == ["plain"]
    assert purger.done()


async def test_background_purger_survives_failures(
    pg_dsn: str, schema_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with await Store.connect(pg_dsn, schema=schema_name, purge_interval=0.05) as store:
        await store.init_schema()
        backend: Any = store._backend
        real = backend.records.purge_expired
        calls = 0

        async def flaky(type: str | None, limit: int) -> int:
            nonlocal calls
            calls += 1
            if calls <= 2:
                raise RuntimeError(f"boom {calls}")
            return int(await real(type, limit))

        backend.records.purge_expired = flaky
        with caplog.at_level(logging.WARNING, logger="pgactors.postgres"):
            await store.save("T", "brief", {}, ttl=0.01)
            await _wait_for_rows(store, 0)
        assert calls >= 3 and not backend.records._purger.done()
        assert "boom 1" in caplog.text and "boom 2" in caplog.text
        await store.save("T", "after", {"still": "works"})
        assert await store.load("T", "after") is not None


async def test_migration_adds_the_ttl_column(pg_store: Store) -> None:
    assert await pg_store.schema_version() >= 4
    rows = await _sql(
        pg_store,
        sql.SQL(
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = 'pgactors_state'"
            " AND column_name = 'ttl_seconds'"
        ),
        [pg_store.config.schema],
    )
    assert rows == [("double precision",)]
    assert all(present for _, _, present in await pg_store.verify_schema())


# -- configuration ------------------------------------------------------------------------


def test_purge_interval_config() -> None:
    assert StoreConfig().purge_interval == 60.0
    assert StoreConfig.from_env({"PGACTORS_PURGE_INTERVAL": "2.5"}).purge_interval == 2.5
    for bad in (0, -1, math.inf, "5", True):
        with pytest.raises(ConfigError, match="purge_interval"):
            StoreConfig(purge_interval=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="purge_interval"):
        StoreConfig.from_env({"PGACTORS_PURGE_INTERVAL": "soon"})


async def test_update_with_ttl(store: Store) -> None:
    first = await store.update("C", "c", lambda d: {"n": d["n"] + 1}, default={"n": 0}, ttl=30)
    assert first.expires_at - first.updated_at == timedelta(seconds=30)
    plain = await store.update("C", "c", lambda d: {"n": d["n"] + 1})
    assert plain.data == {"n": 2} and plain.expires_at is None
    slide = await store.update("C", "c", lambda d: d, ttl=40, sliding=True)
    async with store.transaction() as tx:
        moved = await tx.update("C", "c", lambda d: {"n": 9})
        fixed = await tx.update("D", "d", lambda d: d, default={}, ttl=5)
    assert slide.expires_at is not None and moved.expires_at is not None
    assert moved.expires_at - moved.updated_at == timedelta(seconds=40)
    assert fixed.expires_at - fixed.updated_at == timedelta(seconds=5)
    with pytest.raises(InvalidInput, match="ttl"):
        await store.update("C", "c", lambda d: {"bad": True}, ttl=-1)
    async with store.transaction() as tx:
        with pytest.raises(InvalidInput, match="ttl"):
            await tx.update("C", "c", lambda d: {"bad": True}, ttl=0)
    loaded = await store.load("C", "c")
    assert loaded is not None and loaded.data == {"n": 9}


def test_sync_store_takes_ttl() -> None:
    from pgactors import SyncStore

    with SyncStore.in_memory() as store:
        saved = store.save("S", "a", {}, ttl=10, sliding=True)
        assert saved.expires_at is not None
        again = store.update("S", "a", lambda d: {"n": 1})
        assert again.expires_at - again.updated_at == timedelta(seconds=10)
        assert store.save_many("S", {"b": 1}, ttl=5)["b"].expires_at is not None
        with store.transaction() as tx:
            assert tx.save("S", "c", 1, ttl=3).expires_at is not None
        assert store.purge_expired() == 0


# -- import over records with an expiry ---------------------------------------------------


def _line(id: str, n: int) -> str:
    return json.dumps({"type": "T", "id": id, "data": {"n": n}})


@pytest.mark.parametrize("mode", ["skip", "overwrite", "fail"])
async def test_import_treats_an_expired_record_as_absent(store: Store, mode: str) -> None:
    await expired_pair(store)
    result = await store.import_jsonl([_line("gone", 20)], on_conflict=mode)  # type: ignore[arg-type]
    assert (result.imported, result.overwritten, result.skipped) == (1, 0, 0)
    record = await store.load("T", "gone")
    assert record is not None and record.data == {"n": 20} and record.version == 1
    assert record.expires_at is None


async def test_import_overwrite_replaces_the_expiry_too(store: Store) -> None:
    await store.save("T", "ttl", {"n": 1}, ttl=3600, sliding=True)
    result = await store.import_jsonl([_line("ttl", 2)], on_conflict="overwrite")
    assert result.overwritten == 1
    record = await store.load("T", "ttl")
    assert record is not None and record.data == {"n": 2} and record.expires_at is None
    await store.save("T", "ttl", {"n": 3})  # no longer sliding: still no expiry
    assert (await store.load("T", "ttl")).expires_at is None  # type: ignore[union-attr]
