"""PostgreSQL-specific behaviour: schema, identifiers, failures, processes, SyncStore."""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pgactors import (
    ConfigError,
    SchemaMismatch,
    Store,
    StoreConfig,
    StoreTimeout,
    StoreUnavailable,
    SyncStore,
    VersionConflict,
)
from pgactors.embedded import EmbeddedServer
from pgactors.schema import latest_version, migrations


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_schema_is_queryable_with_plain_sql(pg_store: Store, pg_dsn: str) -> None:
    await pg_store.save("UserProfile", "user-123", {"username": "alice", "score": 7})
    with psycopg.connect(pg_dsn) as conn:
        table = sql.Identifier(pg_store.config.schema, "pgactors_state")
        row = conn.execute(
            sql.SQL("SELECT id, data->>'username', version FROM {} WHERE data @> %s").format(table),
            ['{"score": 7}'],
        ).fetchone()
    assert row == ("user-123", "alice", 1)


async def test_init_schema_is_idempotent(pg_store: Store) -> None:
    assert await pg_store.init_schema() == 0
    assert await pg_store.schema_version() == latest_version()
    assert all(present for _, _, present in await pg_store.verify_schema())


def _init_in_process(dsn: str, schema: str, results: multiprocessing.Queue[int]) -> None:
    with SyncStore.connect(dsn, schema=schema) as store:
        results.put(store.init_schema())


def test_init_schema_from_many_processes_at_once(pg_dsn: str, schema_name: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[int] = ctx.Queue()
    procs = [
        ctx.Process(target=_init_in_process, args=(pg_dsn, schema_name, results)) for _ in range(6)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    applied = sorted(results.get(timeout=5) for _ in procs)
    assert applied == [0] * 5 + [len(migrations())]


async def test_operations_before_init_raise_schema_mismatch(pg_dsn: str, schema_name: str) -> None:
    async with await Store.connect(pg_dsn, schema=schema_name) as store:
        assert await store.schema_version() is None
        with pytest.raises(SchemaMismatch, match="pgactors init"):
            await store.save("T", "t", {})
        with pytest.raises(SchemaMismatch):
            await store.load("T", "t")


async def test_a_schema_older_than_the_code_says_so(
    pg_dsn: str, schema_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store on a schema that lacks later migrations (here, before the TTL columns)
    names the problem and its cure, not a driver error."""
    from pgactors import schema as schema_module

    before = tuple(m for m in schema_module.migrations() if m.version < 4)
    monkeypatch.setattr(schema_module, "migrations", lambda: before)
    async with await Store.connect(pg_dsn, schema=schema_name) as old:
        await old.init_schema()
    monkeypatch.undo()
    async with await Store.connect(pg_dsn, schema=schema_name) as store:
        with pytest.raises(SchemaMismatch, match=r"older than this pgactors.*pgactors init"):
            await store.save("T", "t", {})
        assert await store.init_schema() == len(schema_module.migrations()) - len(before)
        assert (await store.save("T", "t", {})).version == 1


async def test_schema_newer_than_code_refused(pg_store: Store, pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {} (version, name) VALUES (9999, 'future')").format(
                sql.Identifier(pg_store.config.schema, "pgactors_migrations")
            )
        )
    with pytest.raises(SchemaMismatch, match="newer"):
        await Store.connect(pg_dsn, schema=pg_store.config.schema)
    with pytest.raises(SchemaMismatch, match="newer"):
        await pg_store.init_schema()


@pytest.mark.parametrize("field", ["schema", "table_prefix"])
async def test_hostile_identifier_refused_before_any_sql(pg_dsn: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        await Store.connect(pg_dsn, **{field: 'x"; drop table y; --'})


async def test_table_prefix_isolates_stores(pg_dsn: str, schema_name: str) -> None:
    a = await Store.connect(pg_dsn, schema=schema_name, table_prefix="app_a")
    b = await Store.connect(pg_dsn, schema=schema_name, table_prefix="app_b")
    async with a, b:
        await a.init_schema()
        await b.init_schema()
        await a.save("T", "x", {"from": "a"})
        assert await b.load("T", "x") is None
        assert (await a.verify_schema())[0] == ("table", "app_a_state", True)


async def test_unreachable_server_fails_fast(tmp_path: Path) -> None:
    port = _free_port()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        await Store.connect(f"postgresql://app:s3cret-pw@127.0.0.1:{port}/db", connect_timeout=2)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "running" in message
    assert "s3cret-pw" not in message and "s3cret-pw" not in repr(info.value)


async def test_blackholed_server_times_out_within_connect_timeout() -> None:
    # A socket that listens but never answers: the handshake completes, then silence,
    # so only the timeout can end the attempt.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as info:
            await Store.connect(f"postgresql://u:topsecret@127.0.0.1:{port}/db", connect_timeout=1)
        elapsed = time.monotonic() - started
    assert 1 <= elapsed < 4, elapsed  # the timeout ended it, not a refusal
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "in time" in str(info.value) or "within" in str(info.value), str(info.value)
    assert "topsecret" not in str(info.value)


async def test_missing_database_explains_itself(pg_dsn: str) -> None:
    config = StoreConfig(dsn=pg_dsn, database="no_such_db")
    with pytest.raises(StoreUnavailable, match="database does not exist"):
        await Store.connect(config)


async def test_bad_dsn_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        await Store.connect("host=localhost port=notaport bogus_key=1")


async def _until_waiting_on_a_lock(dsn: str, statement: str) -> None:
    """Return once a session whose query starts with ``statement`` waits on a lock."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as probe:
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            cur = await probe.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND ltrim(query) LIKE %s",
                [statement + "%"],
            )
            row = await cur.fetchone()
            if row and row[0]:
                return
            assert asyncio.get_running_loop().time() < deadline, f"no {statement} waits"
            await asyncio.sleep(0.01)


async def test_batch_conflict_with_concurrent_single_writer(pg_store: Store, pg_dsn: str) -> None:
    """A create-only batch racing an uncommitted insert of the same key writes nothing."""
    table = sql.Identifier(pg_store.config.schema, "pgactors_state")
    async with await psycopg.AsyncConnection.connect(pg_dsn) as other:
        await other.execute(
            sql.SQL("INSERT INTO {} (type, id, version, data) VALUES ('T', 'x', 1, '{{}}')").format(
                table
            )
        )
        batch = asyncio.create_task(
            pg_store.save_many(
                "T", {"x": {"mine": 1}, "y": {"mine": 1}}, expected_versions={"x": 0}
            )
        )
        await _until_waiting_on_a_lock(pg_dsn, "WITH")  # the batch waits on the insert
        assert not batch.done()
        await other.commit()
        with pytest.raises(VersionConflict) as info:
            await batch
    assert info.value.conflicts == {"x": (0, 1)}
    assert await pg_store.load("T", "y") is None
    x = await pg_store.load("T", "x")
    assert x is not None and x.data == {} and x.version == 1


def _increment_in_process(dsn: str, schema: str, n: int) -> None:
    with SyncStore.connect(dsn, schema=schema, pool_max_size=4) as store:
        for _ in range(n):
            store.update("Counter", "shared", lambda d: {"n": d["n"] + 1})


def test_update_from_several_processes_loses_nothing(pg_dsn: str, pg_store_sync: SyncStore) -> None:
    pg_store_sync.save("Counter", "shared", {"n": 0})
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_increment_in_process, args=(pg_dsn, pg_store_sync.config.schema, 50))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    record = pg_store_sync.load("Counter", "shared")
    assert record is not None and record.data == {"n": 200} and record.version == 201


def test_sync_store_round_trip_and_transaction(pg_store_sync: SyncStore) -> None:
    store = pg_store_sync
    assert store.save("User", "u1", {"n": 1}).version == 1
    assert store.update("User", "u1", lambda d: {"n": d["n"] + 1}).data == {"n": 2}
    with pytest.raises(VersionConflict):
        store.save("User", "u1", {"n": 0}, expected_version=1)
    with pytest.raises(ValueError, match="boom"), store.transaction() as tx:
        tx.save("User", "u2", {"n": 1})
        raise ValueError("boom")
    assert store.load("User", "u2") is None
    with store.transaction() as tx:
        tx.save("User", "u3", {"n": 3})
        tx.delete("User", "u1")
    assert store.list_ids("User") == ["u3"]
    assert store.save_many("User", {"a": 1, "b": 2})["b"].data == 2
    assert sorted(store.load_many("User", ["a", "b", "zz"])) == ["a", "b"]
    assert store.delete_many("User", ["a", "b"]) == 2
    assert store.types() == {"User": 1}
    assert store.exists("User", "u3")


async def test_data_survives_server_restart_and_pool_recovers(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / "data")
    server.start()
    try:
        store = await Store.embedded(tmp_path / "data", pool_min_size=2)
        await store.init_schema()
        await store.save("User", "durable", {"kept": True})
        server.stop()
        with pytest.raises(StoreUnavailable):
            await store.load("User", "durable")
        server.start()
        record = None
        for _ in range(50):  # the pool reconnects by itself
            try:
                record = await store.load("User", "durable")
                break
            except StoreUnavailable:
                await asyncio.sleep(0.2)
        assert record is not None and record.data == {"kept": True}
        await store.close()
        server.kill()
        async with await Store.embedded(tmp_path / "data") as reopened:
            again = await reopened.load("User", "durable")
        assert again is not None and again.data == {"kept": True}
    finally:
        server.stop()


def test_passwords_never_in_repr(pg_dsn: str) -> None:
    config = StoreConfig(dsn="postgresql://u:hunter2@db.example:5432/app", password="hunter3")
    assert "hunter2" not in repr(config) and "hunter3" not in repr(config)
    assert "hunter2" not in str(config) and "hunter3" not in str(config)


async def test_statement_timeout_raises_store_timeout(pg_store: Store, pg_dsn: str) -> None:
    await pg_store.save("T", "locked", {"n": 1})
    schema = pg_store.config.schema
    async with await Store.connect(pg_dsn, schema=schema, statement_timeout=0.3) as impatient:
        async with await psycopg.AsyncConnection.connect(pg_dsn) as other:
            await other.execute(
                sql.SQL("SELECT * FROM {} WHERE id = 'locked' FOR UPDATE").format(
                    sql.Identifier(schema, "pgactors_state")
                )
            )
            started = time.monotonic()
            with pytest.raises(StoreTimeout):
                await impatient.save("T", "locked", {"n": 2})
            assert time.monotonic() - started < 5
            await other.rollback()
        assert (await impatient.save("T", "locked", {"n": 3})).version == 2


def test_sync_store_from_many_threads(pg_store_sync: SyncStore) -> None:
    pg_store_sync.save("Counter", "threads", {"n": 0})

    def work() -> None:
        for _ in range(25):
            pg_store_sync.update("Counter", "threads", lambda d: {"n": d["n"] + 1})

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    record = pg_store_sync.load("Counter", "threads")
    assert record is not None and record.data == {"n": 200}


async def test_open_uses_the_environment_else_the_embedded_server(
    embedded_server: object, pg_dsn: str, schema_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgactors.embedded import EmbeddedServer

    monkeypatch.setenv("PGACTORS_SCHEMA", schema_name)
    monkeypatch.setenv("PGACTORS_DSN", pg_dsn)
    async with await Store.open("/nonexistent/never-used") as store:
        await store.init_schema()
        await store.save("T", "a", {"via": "dsn"})
    if not isinstance(embedded_server, EmbeddedServer):
        pytest.skip("PGACTORS_TEST_DSN names another server: no embedded one to fall back to")
    for name in ("PGACTORS_DSN", "DATABASE_URL", "PGACTORS_HOST", "PGHOST"):
        monkeypatch.delenv(name, raising=False)
    async with await Store.open(embedded_server.data_dir) as store:
        record = await store.load("T", "a")
    assert record is not None and record.data == {"via": "dsn"}


async def test_cas_batch_reports_a_change_committed_after_its_snapshot(
    pg_store: Store, pg_dsn: str
) -> None:
    from pgactors.postgres import PostgresBackend
    from pgactors.postgres.ops import SaveRequest

    await pg_store.save("T", "a", {"n": 0})
    await pg_store.save("T", "b", {"n": 0})
    backend = pg_store._backend
    assert isinstance(backend, PostgresBackend)
    table = sql.Identifier(pg_store.config.schema, "pgactors_state")
    with psycopg.connect(pg_dsn) as other:
        # Another transaction changes "a" and holds the row while the batch starts.
        other.execute(sql.SQL("UPDATE {} SET version = version + 1 WHERE id = 'a'").format(table))
        batch = asyncio.create_task(
            backend.records.coalesced._save_cas_batch(
                [SaveRequest("T", "a", '{"n": 1}', 1), SaveRequest("T", "b", '{"n": 1}', 1)]
            )
        )
        await _until_waiting_on_a_lock(pg_dsn, "UPDATE")  # the batch waits on the row
        assert not batch.done()
        other.commit()
        conflict, saved = await asyncio.wait_for(batch, 10)
    assert isinstance(conflict, VersionConflict)
    assert (conflict.expected, conflict.actual) == (1, 2)
    assert not isinstance(saved, BaseException) and saved.version == 2


def test_data_errors_from_the_server_are_invalid_input() -> None:
    from pgactors import InvalidInput
    from pgactors.postgres import translate

    for exc in (
        psycopg.errors.InvalidTextRepresentation("bad"),
        psycopg.errors.NumericValueOutOfRange("big"),
    ):
        assert isinstance(translate(exc, StoreConfig()), InvalidInput)


async def test_values_utf8_cannot_hold_are_refused() -> None:
    from pgactors import InMemoryStore, InvalidInput, InvalidQuery

    store = InMemoryStore()
    with pytest.raises(InvalidInput, match="lone surrogate"):
        await store.save("T", "x", {"s": "\ud800"})
    with pytest.raises(InvalidInput, match="lone surrogate"):
        await store.save("T", "\udc00", {})
    with pytest.raises(InvalidInput, match="integer too large"):
        await store.save("T", "x", {"n": 10**5000})
    with pytest.raises(InvalidQuery, match="lone surrogate"):
        await store.query("T", {"s": "\ud800"})
    with pytest.raises(InvalidQuery, match="lone surrogate"):
        await store.query("T", {"\ud800": 1})
    assert await store.count("T") == 0


def test_rolled_back_transactions_are_not_reported_as_an_unreachable_server() -> None:
    from pgactors import DatabaseError, RetryableError, StoreUnavailable
    from pgactors.postgres import translate

    for exc in (
        psycopg.errors.DeadlockDetected("deadlock detected"),
        psycopg.errors.SerializationFailure("could not serialize access"),
    ):
        error = translate(exc, StoreConfig())
        assert isinstance(error, RetryableError) and isinstance(error, DatabaseError)
        assert not isinstance(error, StoreUnavailable)
        assert "rolled back" in str(error) and "retried" in str(error)


async def test_drop_schema_outlives_being_a_deadlock_victim(pg_store: Store, pg_dsn: str) -> None:
    from pgactors.postgres import PostgresBackend

    await pg_store.save("T", "a", {"n": 0})
    backend = pg_store._backend
    assert isinstance(backend, PostgresBackend)
    schema = pg_store.config.schema
    with psycopg.connect(pg_dsn) as other:
        # The other session holds the change log and will then want the state table,
        # which the drop takes first: a deadlock, in which the drop is the victim
        # (the other session waits far longer before it looks for deadlocks).
        other.execute("SET deadlock_timeout = '30s'")
        other.execute(
            sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(
                sql.Identifier(schema, "pgactors_changes")
            )
        )
        drop = asyncio.create_task(pg_store.drop_schema())
        await _until_waiting_on_a_lock(pg_dsn, "DROP TABLE")
        assert not drop.done()
        count = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "pgactors_state"))
        row = await asyncio.to_thread(lambda: other.execute(count).fetchone())
        assert row == (1,)
        other.commit()
        await asyncio.wait_for(drop, 10)
    assert backend.admin.retry_counts()["deadlock"] >= 1
    with psycopg.connect(pg_dsn) as conn:
        left = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", [schema]
        ).fetchall()
    assert left == []
