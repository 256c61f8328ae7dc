"""pgactors through a real PgBouncer (Debian's package), in transaction and session mode.

The conformance suite also runs through both (tests/test_conformance.py). Here:
detection, the prepared-statement fallback, contention, transactions, import and
export, and the change feed through ``listen_dsn``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import psycopg
import pytest

from pgactors import Actor, ActorSystem, ConfigError, Store, StoreConfig
from pgbouncer_server import PgBouncer

MODES = ["transaction", "session"]


@pytest.fixture(params=MODES)
def bouncer(request: pytest.FixtureRequest) -> PgBouncer:
    """The session's PgBouncer in each pool mode."""
    return request.getfixturevalue(f"pgbouncer_{request.param}")  # type: ignore[no-any-return]


async def _store(dsn: str, schema: str, **overrides: object) -> Store:
    store = await Store.connect(dsn, schema=schema, **overrides)
    await store.init_schema()
    return store


@pytest.fixture
async def bounced(bouncer: PgBouncer, schema_name: str) -> AsyncIterator[Store]:
    """A store reached through the PgBouncer, with its defaults (``pooler='auto'``)."""
    store = await _store(bouncer.dsn, schema_name)
    try:
        yield store
    finally:
        await store.close()


def _pooled(store: Store) -> bool:
    return bool(store._backend.connections.pooled)  # type: ignore[attr-defined]


async def test_transaction_pooling_is_detected_and_session_pooling_is_not(
    bouncer: PgBouncer, bounced: Store, pg_dsn: str, schema_name: str
) -> None:
    assert _pooled(bounced) is (bouncer.pool_mode == "transaction")
    direct = await Store.connect(pg_dsn, schema=schema_name)
    told = await Store.connect(bouncer.dsn, schema=schema_name, pooler="pgbouncer")
    try:
        assert not _pooled(direct)
        assert _pooled(told)
    finally:
        await direct.close()
        await told.close()


async def test_hot_statements_from_many_tasks(bounced: Store) -> None:
    """The reported failure: psycopg prepares a statement after 5 runs, and through
    transaction pooling the next run lands in a backend that never prepared it."""
    await bounced.save_many("Hot", {f"k{i}": {"n": 0} for i in range(8)})

    async def worker(task: int) -> None:
        for round_ in range(40):
            key = f"k{(task + round_) % 8}"
            record = await bounced.load("Hot", key)
            assert record is not None
            await bounced.load_many("Hot", [key, "k0"])
            await bounced.update("Hot", key, lambda d: {"n": d["n"] + 1})

    await asyncio.gather(*(worker(t) for t in range(16)))
    loaded = await bounced.load_many("Hot", [f"k{i}" for i in range(8)])
    assert sum(r.data["n"] for r in loaded.values()) == 16 * 40


async def test_prepared_statement_missing_in_the_backend_falls_back_unprepared(
    pgbouncer_transaction: PgBouncer, schema_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Told there is no pooler, the store prepares; when a statement lands in a
    backend without it, it stops preparing and sends the statement again."""
    store = await _store(
        pgbouncer_transaction.dsn, schema_name, pooler="none", pool_min_size=1, pool_max_size=1
    )
    try:
        await store.save("P", "a", {"n": 1})
        for _ in range(8):  # prepared on its first run, in the backend it ran in
            assert await store.load("P", "a") is not None
        assert not _pooled(store)
        # Another client holds that backend in a transaction: our next statement gets
        # another backend, where the prepared statement does not exist.
        async with await psycopg.AsyncConnection.connect(
            pgbouncer_transaction.dsn, prepare_threshold=None
        ) as other:
            await other.execute("SELECT 1")  # begins a transaction (not autocommit)
            with caplog.at_level(logging.WARNING, logger="pgactors"):
                record = await store.load("P", "a")
            assert record is not None and record.data == {"n": 1}
            await other.rollback()
        assert _pooled(store)
        assert "stops preparing statements" in caplog.text
        for _ in range(8):
            assert await store.load("P", "a") is not None
    finally:
        await store.close()


async def test_transfers_in_transactions_keep_the_total(bounced: Store) -> None:
    accounts = [f"acct{i}" for i in range(4)]
    await bounced.save_many("Account", {a: {"balance": 100} for a in accounts})

    async def transfer(task: int) -> None:
        for round_ in range(15):
            source, target = accounts[(task + round_) % 4], accounts[(task + round_ + 1) % 4]
            moves = sorted([(source, -1), (target, 1)])  # rows locked in one order: no deadlock
            async with bounced.transaction() as tx:
                for account, delta in moves:
                    await tx.update(
                        "Account", account, lambda d, n=delta: {"balance": d["balance"] + n}
                    )

    await asyncio.gather(*(transfer(t) for t in range(8)))

    class Refused(Exception):
        pass

    with pytest.raises(Refused):  # the caller's own exception, nothing written
        async with bounced.transaction() as tx:
            await tx.update("Account", "acct0", lambda d: {"balance": -1000})
            raise Refused
    loaded = await bounced.load_many("Account", accounts)
    assert sum(r.data["balance"] for r in loaded.values()) == 400
    assert loaded["acct0"].data["balance"] != -1000
    assert sum(r.version for r in loaded.values()) == 4 + 8 * 15 * 2


async def test_export_then_import_through_the_pooler(
    bounced: Store, bouncer: PgBouncer, schema_name: str
) -> None:
    records = {f"r{i}": {"i": i, "text": "x" * (i % 50)} for i in range(500)}
    await bounced.save_many("Doc", records)
    await bounced.save_binary("Blob", "b", b"\x00\x01binary", "test/manifest")
    lines = [line async for line in bounced.export_lines()]
    assert len(lines) == 501
    other = await _store(bouncer.dsn, schema_name + "_copy")
    try:
        result = await other.import_jsonl(lines)
        assert result.imported == 501
        copied = await other.load_many("Doc", list(records))
        assert {k: r.data for k, r in copied.items()} == records
        assert [line async for line in other.export_lines()] == lines
        again = await other.import_jsonl(lines, on_conflict="overwrite")
        assert again.overwritten == 501 and again.imported == 0
    finally:
        await other.drop_schema()
        await other.close()


async def test_changes_through_listen_dsn(
    bouncer: PgBouncer, pg_dsn: str, schema_name: str
) -> None:
    store = await _store(bouncer.dsn, schema_name, listen_dsn=pg_dsn)
    try:
        async with store.changes("Feed") as stream:
            await asyncio.gather(
                *(store.save("Feed", f"f{i % 10}", {"i": i}) for i in range(60)),
            )
            seen = []
            async with asyncio.timeout(30):
                async for change in stream:
                    seen.append(change)
                    if len(seen) == 60:
                        break
        positions = [c.position for c in seen]
        assert positions == list(range(positions[0], positions[0] + 60))
        for key in {c.id for c in seen}:
            versions = [c.version for c in seen if c.id == key]
            assert versions == sorted(versions) == list(range(1, len(versions) + 1))
    finally:
        await store.close()


async def test_without_listen_dsn_a_transaction_pooler_refuses_to_listen(
    pgbouncer_transaction: PgBouncer, schema_name: str
) -> None:
    for pooler in ("auto", "pgbouncer"):
        store = await _store(pgbouncer_transaction.dsn, schema_name, pooler=pooler)
        try:
            with pytest.raises(ConfigError, match="listen_dsn"):
                store.changes()
            with pytest.raises(ConfigError, match="follow_changes=False"):
                ActorSystem(store)
        finally:
            await store.close()


class Tally(Actor[dict[str, int]]):
    async def add(self, n: int) -> int:
        self.state["n"] = self.state.get("n", 0) + n
        return self.state["n"]


async def test_actors_through_a_transaction_pooler(
    pgbouncer_transaction: PgBouncer, pg_dsn: str, schema_name: str
) -> None:
    store = await _store(pgbouncer_transaction.dsn, schema_name)
    try:
        system = ActorSystem(store, follow_changes=False)
        tally = system.actor(Tally, "t")
        results = await asyncio.gather(*(tally.add(1) for _ in range(20)))
        assert sorted(results) == list(range(1, 21))
        await system.shutdown()
    finally:
        await store.close()
    listening = await _store(pgbouncer_transaction.dsn, schema_name, listen_dsn=pg_dsn)
    try:
        system = ActorSystem(listening, actors=[Tally])
        assert await system.actor(Tally, "t").add(1) == 21
        await system.shutdown()
    finally:
        await listening.close()


async def test_feed_probe_names_pgbouncer_when_told_there_is_no_pooler(
    pgbouncer_transaction: PgBouncer, schema_name: str
) -> None:
    """Told ``pooler='none'``, LISTEN goes through the transaction pooler: the probe
    notification never arrives, and the listener says what to do. (Its own channel: the
    LISTEN stays on PgBouncer's server connection, which would count as a listener of
    the default channel in later tests.)"""
    store = await _store(
        pgbouncer_transaction.dsn, schema_name, pooler="none", channel=f"probe_{schema_name}"
    )
    try:
        listener = store._backend.feed.feed_listener()  # type: ignore[attr-defined]
        with pytest.raises(ConfigError, match=r"PgBouncer.*listen_dsn"):
            await listener.connect()
        await listener.close()
    finally:
        await store.close()


def test_settings_a_pooler_refuses_are_refused_up_front() -> None:
    with pytest.raises(ConfigError, match=r"statement_timeout.*ALTER ROLE"):
        StoreConfig(pooler="pgbouncer", statement_timeout=5)
    with pytest.raises(ConfigError, match=r"changes=False.*pgactors\.changes = off"):
        StoreConfig(pooler="pgbouncer", changes=False)
    with pytest.raises(ConfigError, match="pooler must be one of auto, pgbouncer, none"):
        StoreConfig(pooler="odyssey")
    config = StoreConfig.from_env(
        {"PGACTORS_POOLER": "pgbouncer", "PGACTORS_LISTEN_DSN": "postgresql://u:s3cret@db/app"}
    )
    assert config.pooler == "pgbouncer" and config.listen_dsn is not None
    assert "s3cret" not in repr(config)
    with pytest.raises(ConfigError, match="listen_dsn must be"):
        StoreConfig(listen_dsn="mysql://x")


async def test_statement_timeout_through_pgbouncer_explains_itself(
    pgbouncer_transaction: PgBouncer, schema_name: str
) -> None:
    """Not told, the store sends statement_timeout as a startup option; PgBouncer
    refuses it, and the error says what to do."""
    from pgactors import StoreUnavailable

    with pytest.raises(StoreUnavailable, match="pooler='pgbouncer'"):
        await Store.connect(pgbouncer_transaction.dsn, schema=schema_name, statement_timeout=5)
