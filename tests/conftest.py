"""Test harness: one real PostgreSQL per session, an isolated schema per test.

The server is the embedded one (started here, stopped at the end) unless
``PGACTORS_TEST_DSN`` names another. Store tests never use a mock.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pgactors import InMemoryStore, Store, SyncStore
from pgactors.config import StoreConfig
from pgbouncer_server import PgBouncer, pgbouncer_binary

# Ray binds its services to the machine's address unless told this is a one-machine
# cluster; the tests' cluster listens on loopback only. Read when ray is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
from pgactors.embedded import EmbeddedServer


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer | None]:
    """The session's embedded server, or None when PGACTORS_TEST_DSN is set."""
    if os.environ.get("PGACTORS_TEST_DSN"):
        yield None
        return
    server = EmbeddedServer(tmp_path_factory.mktemp("pg") / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_dsn(embedded_server: EmbeddedServer | None) -> str:
    """A DSN for the test server."""
    if embedded_server is None:
        return os.environ["PGACTORS_TEST_DSN"]
    return embedded_server.dsn


def _drop_schema(dsn: str, name: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def schema_name(pg_dsn: str) -> Iterator[str]:
    """A fresh schema name, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    _drop_schema(pg_dsn, name)


# Partitions of the "postgres-partitioned" store: enough to spread a test's keys.
TEST_PARTITIONS = 4


@asynccontextmanager
async def _initialised_store(
    dsn: str, schema: str, partitions: int | None = None, cache_size: int = 0
) -> AsyncIterator[Store]:
    store = await Store.connect(dsn, schema=schema, cache_size=cache_size)
    await store.init_schema(partitions=partitions)
    if cache_size:
        await cache_serving(store)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def pg_store(pg_dsn: str, schema_name: str) -> AsyncIterator[Store]:
    """A Store on the real server, in its own schema, with the schema installed."""
    async with _initialised_store(pg_dsn, schema_name) as store:
        yield store


@pytest.fixture
def pg_store_sync(pg_dsn: str, schema_name: str) -> Iterator[SyncStore]:
    """A SyncStore on the real server, in its own schema."""
    with SyncStore.connect(pg_dsn, schema=schema_name) as store:
        store.init_schema()
        yield store


@pytest.fixture(params=["memory", "postgres"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """Every conformance test runs against both backends.

    Parametrize ``store`` indirectly with "postgres-partitioned" for a state table
    hash-partitioned into ``TEST_PARTITIONS``, or "pgbouncer-transaction" and
    "pgbouncer-session" for a store reached through a real PgBouncer in that pool mode
    (tests/test_conformance.py does).
    """
    if request.param == "memory":
        yield InMemoryStore()
        return
    if request.param == "memory-cached":
        memory = InMemoryStore(StoreConfig(cache_size=CACHE_SIZE))
        await cache_serving(memory)
        yield memory
        await memory.close()
        return
    partitions = TEST_PARTITIONS if request.param == "postgres-partitioned" else None
    cache_size = CACHE_SIZE if request.param == "postgres-cached" else 0
    dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("schema_name")
    if request.param.startswith("pgbouncer-"):
        mode = request.param.removeprefix("pgbouncer-")
        dsn = request.getfixturevalue(f"pgbouncer_{mode}").dsn
    async with _initialised_store(dsn, schema, partitions, cache_size) as store:
        yield store


CACHE_SIZE = 1000
"""Records the "-cached" stores of the conformance suite keep in their read cache."""


async def cache_serving(store: Store, within: float = 10.0) -> None:
    """Start the store's read cache (a first load) and wait until it serves."""
    await store.load("Warmup", "w")
    deadline = asyncio.get_running_loop().time() + within
    while True:
        cache = store.metrics().cache
        assert cache is not None, "the store has no read cache"
        if cache.serving:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the read cache did not start serving within {within}s")
        await asyncio.sleep(0.01)


def _pgbouncer(
    mode: str, pg_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PgBouncer]:
    if pgbouncer_binary() is None:
        message = "pgbouncer is not installed (apt-get install pgbouncer; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    bouncer = PgBouncer(tmp_path_factory.mktemp(f"pgbouncer-{mode}"), pg_dsn, mode)
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture(scope="session")
def pgbouncer_transaction(
    pg_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PgBouncer]:
    """A real PgBouncer in transaction-pooling mode in front of the test server."""
    yield from _pgbouncer("transaction", pg_dsn, tmp_path_factory)


@pytest.fixture(scope="session")
def pgbouncer_session(pg_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgBouncer]:
    """A real PgBouncer in session-pooling mode in front of the test server."""
    yield from _pgbouncer("session", pg_dsn, tmp_path_factory)


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A local Ray cluster for the session (2 CPUs); yields its address, for drivers
    in other processes."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 1024 * 1024,
        log_to_driver=False,
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
