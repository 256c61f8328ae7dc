"""The PostgreSQL backend: the only module that imports the driver (psycopg 3).

Every driver exception is translated here into a ``PgActorsError``; connection
failures name the host and port (never the password) and say what to check.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import math
import struct
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.errors import DeadlockDetected
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .. import query as queries
from .. import schema
from ..backend import CallRequest, FeedStats, SaveItem, ServerInfo, ServerStats, TransactionBackend
from ..changes import Change, FeedListener, Sequencer
from ..coalesce import Coalescer
from ..config import StoreConfig, redact
from ..errors import (
    CallAlreadyApplied,
    ConfigError,
    DatabaseError,
    ImportAborted,
    InvalidInput,
    PgActorsError,
    RetryableError,
    SchemaMismatch,
    StoreTimeout,
    StoreUnavailable,
    VersionConflict,
)
from ..metrics import PoolStats
from ..record import AppliedCall, Record
from ..transfer import ImportOutcome, ImportRow, OnConflict, conflict_error
from . import compiler

_Conn = psycopg.AsyncConnection[Any]
logger = logging.getLogger("pgactors.postgres")
_BATCH_RACE_SQLSTATE = "PA409"
# A connection idle for longer than this is pinged before use, so a restarted
# server does not hand out dead connections; busy connections skip the ping.
_IDLE_CHECK_SECONDS = 2.0
_POOL_WAIT_SECONDS = 30.0
_MAX_BATCH = 256
# Statements of one kind in flight at once. One would leave the server idle while the
# client works; more than two splits waiting callers into smaller batches. Measured
# with benchmarks/ on 2 cores: 2 gave the best save and load throughput.
_MAX_INFLIGHT = 2
_RETRIES = 3
_SEQUENCE_MAX_ROWS = 10_000
# Under a stream of writes, changes are numbered at most this often (seconds): fewer,
# larger numbering transactions, for at most this much added delivery latency.
_SEQUENCE_INTERVAL = 0.002
_INDEX_CACHE_SECONDS = 30.0
_PRUNE_CHUNK = 10_000
_PURGE_BATCH = 10_000
_PROBE_SECONDS = 5.0


def build_conninfo(config: StoreConfig) -> str:
    """The libpq connection string for ``config``; ConfigError if the DSN is malformed."""
    params: dict[str, Any] = dict(config.conninfo_params())
    options = []
    if config.statement_timeout is not None:
        options.append(f"-c statement_timeout={math.ceil(config.statement_timeout * 1000)}")
    if not config.changes:
        options.append("-c pgactors.changes=off")
    if options:
        params["options"] = " ".join(options)
    try:
        conninfo = make_conninfo(config.dsn or "", **params)
        conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        message = redact(str(exc), config)
        raise ConfigError(f"dsn is not a valid connection string: {message}") from None
    return conninfo


def _hint(message: str) -> str:
    lowered = message.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return "authentication failed: check the user name and password"
    if "authentication failed" in lowered or "pg_hba.conf" in lowered:
        return "authentication failed: check the user, password and the server's pg_hba.conf"
    if "database" in lowered and "does not exist" in lowered:
        return "the database does not exist: create it (createdb) or fix the database name"
    if "role" in lowered and "does not exist" in lowered:
        return "the user (role) does not exist on the server: fix the user name or create it"
    if "permission denied" in lowered:
        return "permission denied: the user lacks the privilege to connect or use this schema"
    if "timeout" in lowered or "timed out" in lowered:
        return "the server did not answer in time: check host, port and any firewall"
    if "could not translate host name" in lowered or "name or service not known" in lowered:
        return "the host name does not resolve: check the host"
    if "ssl" in lowered:
        return "the TLS handshake failed: check sslmode and the certificate settings"
    return (
        "the server is down or not accepting connections: check that PostgreSQL is running "
        "and listening on that host and port"
    )


def translate(exc: BaseException, config: StoreConfig) -> PgActorsError:
    """The ``PgActorsError`` that stands for a driver exception."""
    message = redact(str(exc).strip() or type(exc).__name__, config)
    if isinstance(exc, PoolTimeout):
        return StoreTimeout(
            f"no database connection to {config.target()} became free in time "
            f"(pool_max_size={config.pool_max_size}): {message}"
        )
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return StoreTimeout(f"the operation was cancelled (statement_timeout?): {message}")
    if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.UndefinedFunction):
        return SchemaMismatch(
            f"the pgactors schema is missing in {config.schema!r} "
            f"(table prefix {config.table_prefix!r}): run `pgactors init` or "
            f"`await store.init_schema()` ({message})"
        )
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return DatabaseError(f"permission denied on {config.target()}: {message}")
    if isinstance(exc, psycopg.errors.ProgramLimitExceeded | psycopg.DataError):
        return InvalidInput(f"PostgreSQL refused the data: {message}")
    if isinstance(exc, psycopg.Error) and (exc.sqlstate or "").startswith("40"):
        # Class 40 (deadlock, serialization failure) is an OperationalError to
        # psycopg, but the server is fine.
        return RetryableError(
            f"PostgreSQL rolled back the transaction on {config.target()} (it conflicted "
            f"with a concurrent one; nothing it did was kept, so it can be retried): {message}"
        )
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | OSError):
        # OSError: only from connecting (``_connect``); psycopg wraps the rest.
        return StoreUnavailable(
            f"cannot reach PostgreSQL at {config.target()}: {message} -- {_hint(message)}"
        )
    return DatabaseError(f"PostgreSQL error on {config.target()}: {message}")


@contextmanager
def _translated(config: StoreConfig) -> Iterator[None]:
    """Driver exceptions become ``PgActorsError``s; anything else (ours, or the caller's
    own, raised inside a transaction or by the lines of an import) passes untouched."""
    try:
        yield
    except (psycopg.Error, PoolTimeout) as exc:
        raise translate(exc, config) from None


# Queries with placeholders beyond the configured identifiers, composed on use.
_TEMPLATES = frozenset({"create_state_partition", "export_fetch"})
_NOT_PARTITIONED = sql.SQL("")
_PARTITION_BY = sql.SQL(" PARTITION BY HASH (id)")


class _Queries:
    """The named queries, composed once with the configured identifiers."""

    def __init__(self, config: StoreConfig) -> None:
        self._idents = {k: sql.Identifier(v) for k, v in schema.identifiers(config).items()}
        self.by_name = {
            name: self.compose(text)
            for name, text in schema.queries().items()
            if name not in _TEMPLATES
        }

    def compose(self, text: str, **extra: sql.Composable) -> bytes:
        """SQL text with its ``{name}`` identifiers (and ``extra``) filled in, quoted by psycopg."""
        return sql.SQL(text).format(**self._idents, **extra).as_string().encode()

    def __getattr__(self, name: str) -> bytes:
        try:
            return self.by_name[name]
        except KeyError:
            raise AttributeError(name) from None


def _record(type: str, id: str, row: tuple[Any, ...]) -> Record:
    data, version, created_at, updated_at, payload, manifest, expires_at = row
    if payload is None:
        return Record(type, id, data, version, created_at, updated_at, None, None, expires_at)
    return Record(
        type, id, None, version, created_at, updated_at, bytes(payload), manifest, expires_at
    )


class _Ops:
    """Single-record operations on a given connection (pooled or in a transaction)."""

    def __init__(self, queries: _Queries) -> None:
        self.q = queries

    async def load_on(
        self, conn: _Conn, type: str, id: str, *, for_update: bool = False
    ) -> Record | None:
        query = self.q.load_for_update if for_update else self.q.load
        cur = await conn.execute(query, {"type": type, "id": id})
        row = await cur.fetchone()
        return _record(type, id, row) if row else None

    async def save_on(
        self,
        conn: _Conn,
        type: str,
        id: str,
        text: str,
        expected: int | None,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        params = {"data": text}
        queries = (self.q.save_lww, self.q.save_create, self.q.save_cas)
        row = await self._saved_on(conn, queries, type, id, expected, ttl, sliding, params)
        version, created_at, updated_at, expires_at = row
        return Record(
            type, id, _decode(text), version, created_at, updated_at, None, None, expires_at
        )

    async def _saved_on(
        self,
        conn: _Conn,
        queries: tuple[bytes, bytes, bytes],
        type: str,
        id: str,
        expected: int | None,
        ttl: float | None,
        sliding: bool,
        params: dict[str, Any],
    ) -> tuple[Any, ...]:
        """Run the last-write-wins, create or compare-and-set form of a save; its row,
        or ``VersionConflict`` naming the current version."""
        lww, create, cas = queries
        query = lww if expected is None else create if expected == 0 else cas
        params.update(type=type, id=id, expected=expected, ttl=ttl, sliding=sliding)
        cur = await conn.execute(query, params)
        row = await cur.fetchone()
        if row is None:
            assert expected is not None
            raise VersionConflict(type, id, expected, await self._version_on(conn, type, id))
        return tuple(row)

    async def delete_on(self, conn: _Conn, type: str, id: str, expected: int | None) -> bool:
        params = {"type": type, "id": id, "expected": expected}
        query = self.q.delete if expected is None else self.q.delete_cas
        cur = await conn.execute(query, params)
        if await cur.fetchone() is not None:
            return True
        if expected is None:
            return False
        actual = await self._version_on(conn, type, id)
        if actual != expected:
            raise VersionConflict(type, id, expected, actual)
        return False

    async def save_binary_on(
        self,
        conn: _Conn,
        type: str,
        id: str,
        payload: bytes,
        manifest: str,
        expected: int | None,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        params = {"payload": payload, "manifest": manifest}
        queries = (self.q.save_binary_lww, self.q.save_binary_create, self.q.save_binary_cas)
        row = await self._saved_on(conn, queries, type, id, expected, ttl, sliding, params)
        version, created_at, updated_at, expires_at = row
        return Record(
            type, id, None, version, created_at, updated_at, payload, manifest, expires_at
        )

    async def save_call_on(self, conn: _Conn, request: CallRequest) -> Record:
        cur = await conn.execute(self.q.save_call_batch, _call_params([request]))
        row = await cur.fetchone()
        if row is not None:
            return request.record(row[2:])
        raise await self.call_lost_on(conn, request)

    async def call_lost_on(self, conn: _Conn, request: CallRequest) -> PgActorsError:
        """Why ``request`` was not saved: its call was applied already, or a stale version."""
        applied = await self.applied_call_on(conn, request.type, request.id, request.call_id)
        if applied is not None:
            return CallAlreadyApplied(request.type, request.id, applied)
        actual = await self._version_on(conn, request.type, request.id)
        return VersionConflict(request.type, request.id, request.expected, actual)

    async def applied_call_on(
        self, conn: _Conn, type: str, id: str, call_id: str
    ) -> AppliedCall | None:
        params = {
            "types": _json_list([type]),
            "ids": _json_list([id]),
            "call_ids": _json_list([call_id]),
        }
        cur = await conn.execute(self.q.applied_calls, params)
        row = await cur.fetchone()
        return None if row is None else AppliedCall(row[2], row[3], row[4])

    async def _version_on(self, conn: _Conn, type: str, id: str) -> int:
        cur = await conn.execute(self.q.current_version, {"type": type, "id": id})
        row = await cur.fetchone()
        return int(row[0]) if row else 0


def _metric_value(function: str, value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value) if function == "avg" else queries.number(value)
    return value


def _decode(text: str) -> Any:
    return json.loads(text)


class _PostgresTransaction:
    def __init__(
        self, conn: _Conn, ops: _Ops, config: StoreConfig, expiring: Callable[[], None]
    ) -> None:
        self._conn = conn
        self._ops = ops
        self._config = config
        self._expiring = expiring

    async def load(self, type: str, id: str, *, for_update: bool = False) -> Record | None:
        with _translated(self._config):
            return await self._ops.load_on(self._conn, type, id, for_update=for_update)

    async def save(
        self,
        type: str,
        id: str,
        text: str,
        expected: int | None,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        if ttl is not None:
            self._expiring()
        with _translated(self._config):
            return await self._ops.save_on(self._conn, type, id, text, expected, ttl, sliding)

    async def delete(self, type: str, id: str, expected: int | None) -> bool:
        with _translated(self._config):
            return await self._ops.delete_on(self._conn, type, id, expected)

    async def save_binary(
        self, type: str, id: str, payload: bytes, manifest: str, expected: int | None
    ) -> Record:
        with _translated(self._config):
            return await self._ops.save_binary_on(self._conn, type, id, payload, manifest, expected)

    async def save_call(self, request: CallRequest) -> Record:
        with _translated(self._config):
            return await self._ops.save_call_on(self._conn, request)

    async def applied_call(self, type: str, id: str, call_id: str) -> AppliedCall | None:
        with _translated(self._config):
            return await self._ops.applied_call_on(self._conn, type, id, call_id)


@dataclass(frozen=True, slots=True)
class _SaveRequest:
    type: str
    id: str
    text: str
    expected: int | None
    ttl: float | None = None
    sliding: bool = False

    def record(self, row: tuple[Any, ...]) -> Record:
        version, created_at, updated_at, expires_at = row
        data = _decode(self.text)
        return Record(
            self.type, self.id, data, version, created_at, updated_at, None, None, expires_at
        )

    def conflict(self, actual: Mapping[tuple[str, str], int]) -> VersionConflict:
        assert self.expected is not None
        return VersionConflict(
            self.type, self.id, self.expected, actual.get((self.type, self.id), 0)
        )


def _call_params(batch: list[CallRequest]) -> dict[str, str]:
    return {
        **_key_params([(r.type, r.id) for r in batch]),
        "datas": "[" + ",".join(r.state.text or "null" for r in batch) + "]",
        "payloads": json.dumps(
            [
                None if r.state.payload is None else base64.b64encode(r.state.payload).decode()
                for r in batch
            ]
        ),
        "manifests": json.dumps([r.state.manifest for r in batch]),
        "expected": json.dumps([r.expected for r in batch]),
        "call_ids": _json_list([r.call_id for r in batch]),
        "results": "[" + ",".join(r.result for r in batch) + "]",
    }


def _json_list(values: list[str]) -> str:
    # Lists travel as one JSON text parameter: far cheaper for the client to build
    # than a PostgreSQL array literal, and cheap for the server to unpack.
    return json.dumps(values, ensure_ascii=False)


def _key_params(keys: list[tuple[str, str]]) -> dict[str, str]:
    return {"types": _json_list([k[0] for k in keys]), "ids": _json_list([k[1] for k in keys])}


def _save_params(batch: list[_SaveRequest]) -> dict[str, str]:
    # The data is already JSON text: joining it is the cheapest way to send a batch.
    return {
        **_key_params([(r.type, r.id) for r in batch]),
        "datas": "[" + ",".join(r.text for r in batch) + "]",
        "expected": json.dumps([r.expected for r in batch]),
        "ttls": json.dumps([r.ttl for r in batch]),
        "slidings": json.dumps([r.sliding for r in batch]),
    }


class _Coalesced:
    """One coalescer per statement kind: loads, and the three kinds of save."""

    def __init__(self, backend: PostgresBackend, max_inflight: int) -> None:
        def make(execute: Any, execute_one: Any) -> Coalescer[Any, Any]:
            return Coalescer(
                execute, execute_one=execute_one, max_inflight=max_inflight, max_batch=_MAX_BATCH
            )

        self.loads: Coalescer[tuple[str, str], Record | None] = make(
            backend._load_batch, backend._load_one
        )
        self.lww: Coalescer[_SaveRequest, Record] = make(backend._save_lww_batch, backend._save_one)
        self.create: Coalescer[_SaveRequest, Record] = make(
            backend._save_create_batch, backend._save_one
        )
        self.cas: Coalescer[_SaveRequest, Record] = make(backend._save_cas_batch, backend._save_one)
        self.calls: Coalescer[CallRequest, Record] = make(
            backend._save_call_batch, backend._save_call_one
        )

    def writer(self, expected: int | None) -> Coalescer[_SaveRequest, Record]:
        if expected is None:
            return self.lww
        return self.create if expected == 0 else self.cas


class PostgresBackend:
    """Records in a PostgreSQL table, reached through an async connection pool."""

    def __init__(
        self,
        config: StoreConfig,
        pool: AsyncConnectionPool[_Conn],
        queries: _Queries,
        last_used: weakref.WeakKeyDictionary[_Conn, float],
    ) -> None:
        self.config = config
        self._pool = pool
        self._last_used = last_used
        self._queries = queries
        self._ops = _Ops(self._queries)
        self._coalesced = _Coalesced(self, max_inflight=_MAX_INFLIGHT) if config.coalesce else None
        self._sequencer = Sequencer(
            self.sequence_changes, max_rows=_SEQUENCE_MAX_ROWS, min_interval=_SEQUENCE_INTERVAL
        )
        self._conninfo = ""
        self._names = schema.identifiers(config)
        self._index_cache: tuple[float, dict[str, frozenset[str]]] | None = None
        self._purger: asyncio.Task[None] | None = None
        self._closed = False
        self._retries = {"read": 0, "deadlock": 0}

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    async def open(cls, config: StoreConfig) -> PostgresBackend:
        """Check that the server is reachable and the schema compatible, then open a pool."""
        conninfo = build_conninfo(config)
        queries = _Queries(config)
        conn = await _connect(conninfo, config)
        try:
            with _translated(config):
                version = await _schema_version(conn, queries, config)
        finally:
            await conn.close()
        if version is not None and version > schema.latest_version():
            raise _too_new(version, config)
        # Recorded by our own code rather than a pool ``reset`` callback: a reset
        # callback sends every returned connection through the pool's worker tasks,
        # which cost a third of the throughput.
        last_used: weakref.WeakKeyDictionary[_Conn, float] = weakref.WeakKeyDictionary()

        async def check(conn: _Conn) -> None:
            if time.monotonic() - last_used.get(conn, 0.0) > _IDLE_CHECK_SECONDS:
                await AsyncConnectionPool.check_connection(conn)

        pool: AsyncConnectionPool[_Conn] = AsyncConnectionPool(
            conninfo,
            kwargs={"autocommit": True},
            min_size=config.pool_min_size,
            max_size=config.pool_max_size,
            open=False,
            check=check,
            timeout=max(_POOL_WAIT_SECONDS, config.connect_timeout),
            reconnect_timeout=max(60.0, config.connect_timeout),
            name=f"pgactors-{config.schema}-{config.table_prefix}",
        )
        try:
            await pool.open(wait=True, timeout=config.connect_timeout + 1)
        except (PoolTimeout, psycopg.Error) as exc:
            await pool.close()
            raise translate(exc, config) from None
        backend = cls(config, pool, queries, last_used)
        backend._conninfo = conninfo
        return backend

    async def close(self) -> None:
        self._closed = True
        if self._purger is not None:
            self._purger.cancel()
            # gather: the purger's cancellation is its result, while a cancellation
            # of close() itself still propagates.
            await asyncio.gather(self._purger, return_exceptions=True)
        await self._sequencer.drain()
        await self._pool.close()

    def _expiring(self) -> None:
        """A record is being saved with a ttl: make sure the background purger runs."""
        if self._purger is None and not self._closed:
            self._purger = asyncio.get_running_loop().create_task(
                self._purge_forever(), name="pgactors-purger"
            )

    async def _purge_forever(self) -> None:
        interval = self.config.purge_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.purge_expired(None, _PURGE_BATCH)
            except Exception as exc:
                # Expired records stay invisible meanwhile; only the disk space waits.
                logger.warning("purging expired records failed, retrying in %gs: %s", interval, exc)

    def _changed(self) -> None:
        """A write committed: have its change numbered and notified soon."""
        if self.config.changes:
            self._sequencer.kick()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[_Conn]:
        with _translated(self.config):
            async with self._pool.connection() as conn:
                try:
                    yield conn
                finally:
                    self._last_used[conn] = time.monotonic()

    async def _read(self, query: bytes, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        return await self._fetch(query, params, idempotent=True)

    async def _write(self, query: bytes, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        return await self._fetch(query, params, idempotent=False)

    async def _fetch(
        self,
        query: bytes,
        params: Mapping[str, Any],
        *,
        idempotent: bool,
        prepare: bool | None = None,
    ) -> list[tuple[Any, ...]]:
        """Run one statement on a pooled connection and return its rows.

        A read retries once on a connection that died while idle; any statement
        retries when PostgreSQL picked it as a deadlock victim (only possible
        against a user transaction locking rows out of order): it was atomic, so
        nothing was applied.
        """
        for attempt in range(_RETRIES + 1):
            conn = None
            try:
                async with self._pool.connection() as conn:
                    try:
                        cur = await conn.execute(query, params, prepare=prepare)
                        return await cur.fetchall()
                    finally:
                        self._last_used[conn] = time.monotonic()
            except PoolTimeout as exc:
                raise translate(exc, self.config) from None
            except DeadlockDetected as exc:
                if attempt == _RETRIES:
                    raise translate(exc, self.config) from None
                self._retries["deadlock"] += 1
            except psycopg.OperationalError as exc:
                if not idempotent or attempt > 0 or conn is None or not conn.broken:
                    raise translate(exc, self.config) from None
                self._retries["read"] += 1
            except psycopg.Error as exc:
                raise translate(exc, self.config) from None
        raise AssertionError("unreachable")

    # -- single records ------------------------------------------------------------------

    async def load(self, type: str, id: str, *, for_update: bool = False) -> Record | None:
        if self._coalesced is not None:
            return await self._coalesced.loads.submit((type, id), (type, id))
        return await self._load_one((type, id))

    async def _load_one(self, key: tuple[str, str]) -> Record | None:
        type, id = key
        rows = await self._read(self._queries.load, {"type": type, "id": id})
        return _record(type, id, rows[0]) if rows else None

    async def _save_one(self, request: _SaveRequest) -> Record:
        async with self._connection() as conn:
            record = await self._ops.save_on(
                conn,
                request.type,
                request.id,
                request.text,
                request.expected,
                request.ttl,
                request.sliding,
            )
        self._changed()
        return record

    async def exists(self, type: str, id: str) -> bool:
        rows = await self._read(self._queries.exists, {"type": type, "id": id})
        return bool(rows[0][0])

    async def save(
        self,
        type: str,
        id: str,
        text: str,
        expected: int | None,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        if ttl is not None:
            self._expiring()
        request = _SaveRequest(type, id, text, expected, ttl, sliding)
        if self._coalesced is not None:
            return await self._coalesced.writer(expected).submit((type, id), request)
        return await self._save_one(request)

    async def save_binary(
        self,
        type: str,
        id: str,
        payload: bytes,
        manifest: str,
        expected: int | None,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        if ttl is not None:
            self._expiring()
        async with self._connection() as conn:
            record = await self._ops.save_binary_on(
                conn, type, id, payload, manifest, expected, ttl, sliding
            )
        self._changed()
        return record

    async def save_call(self, request: CallRequest) -> Record:
        if self._coalesced is not None:
            return await self._coalesced.calls.submit((request.type, request.id), request)
        return await self._save_call_one(request)

    async def _save_call_one(self, request: CallRequest) -> Record:
        async with self._connection() as conn:
            record = await self._ops.save_call_on(conn, request)
        self._changed()
        return record

    async def applied_call(self, type: str, id: str, call_id: str) -> AppliedCall | None:
        async with self._connection() as conn:
            return await self._ops.applied_call_on(conn, type, id, call_id)

    async def purge_calls(self, older_than: float, limit: int) -> int:
        """Delete calls recorded before ``older_than`` seconds ago, ``limit`` per statement."""
        purged = 0
        params = {"older_than": older_than, "limit": limit}
        while True:
            async with self._connection() as conn:
                cur = await conn.execute(self._queries.purge_calls, params)
            purged += cur.rowcount
            if cur.rowcount < limit:
                return purged

    # -- coalesced single records: one statement for every caller waiting at once ---------

    async def _load_batch(self, keys: list[tuple[str, str]]) -> list[Record | None]:
        params = _key_params(keys)
        found: list[Record | None] = [None] * len(keys)
        for ord, *rest in await self._read(self._queries.load_batch, params):
            type, id = keys[ord - 1]
            found[ord - 1] = _record(type, id, tuple(rest))
        return found

    async def _save_batch(
        self, query: bytes, batch: list[_SaveRequest]
    ) -> dict[tuple[str, str], tuple[Any, ...]]:
        rows = await self._write(query, _save_params(batch))
        self._changed()
        return {(row[0], row[1]): row[2:] for row in rows}

    async def _save_lww_batch(self, batch: list[_SaveRequest]) -> list[Record | BaseException]:
        rows = await self._save_batch(self._queries.save_lww_batch, batch)
        return [r.record(rows[(r.type, r.id)]) for r in batch]

    async def _save_create_batch(self, batch: list[_SaveRequest]) -> list[Record | BaseException]:
        rows = await self._save_batch(self._queries.save_create_batch, batch)
        return await self._outcomes(batch, rows)

    async def _save_cas_batch(self, batch: list[_SaveRequest]) -> list[Record | BaseException]:
        rows = await self._save_batch(self._queries.save_cas_batch, batch)
        return await self._outcomes(batch, rows)

    async def _save_call_batch(self, batch: list[CallRequest]) -> list[Record | BaseException]:
        rows = {
            (row[0], row[1]): row[2:]
            for row in await self._write(self._queries.save_call_batch, _call_params(batch))
        }
        if rows:
            self._changed()
        outcomes: list[Record | BaseException] = []
        for request in batch:
            row = rows.get((request.type, request.id))
            if row is not None:
                outcomes.append(request.record(row))
            else:  # rare: a stale version, or a retried call
                async with self._connection() as conn:
                    outcomes.append(await self._ops.call_lost_on(conn, request))
        return outcomes

    async def _outcomes(
        self, batch: list[_SaveRequest], rows: dict[tuple[str, str], tuple[Any, ...]]
    ) -> list[Record | BaseException]:
        """A record for each saved item; for the others, a ``VersionConflict`` naming the
        current version, read after the write committed."""
        actual: dict[tuple[str, str], int] = {}
        lost = [(r.type, r.id) for r in batch if (r.type, r.id) not in rows]
        if lost:
            for type, id, version in await self._read(
                self._queries.versions_batch, _key_params(lost)
            ):
                actual[(type, id)] = version
        return [
            r.record(rows[(r.type, r.id)]) if (r.type, r.id) in rows else r.conflict(actual)
            for r in batch
        ]

    async def delete(self, type: str, id: str, expected: int | None) -> bool:
        async with self._connection() as conn:
            deleted = await self._ops.delete_on(conn, type, id, expected)
        if deleted:
            self._changed()
        return deleted

    # -- batches ---------------------------------------------------------------------------

    async def load_many(self, type: str, ids: list[str]) -> dict[str, Record]:
        params = {"type": type, "ids": _json_list(ids)}
        rows = await self._read(self._queries.load_many, params)
        return {row[0]: _record(type, row[0], row[1:]) for row in rows}

    async def save_many(
        self,
        type: str,
        items: list[SaveItem],
        ttl: float | None = None,
        sliding: bool = False,
    ) -> dict[str, Record]:
        if ttl is not None:
            self._expiring()
        params = {
            "type": type,
            "ids": _json_list([i.id for i in items]),
            "datas": "[" + ",".join(i.text for i in items) + "]",
            "expected": json.dumps([i.expected for i in items]),
            "ttl": ttl,
            "sliding": sliding,
        }
        async with self._connection() as conn:
            try:
                cur = await conn.execute(self._queries.save_many, params)
                rows = await cur.fetchall()
            except psycopg.Error as exc:
                if exc.sqlstate != _BATCH_RACE_SQLSTATE:
                    raise
                raced = await self._versions_on(conn, type, items)
                if raced:
                    raise _batch_conflict(type, raced) from None
                raise VersionConflict(type, items[0].id, 0, 0) from None
        conflicts = {row[1]: (row[3], row[2]) for row in rows if not row[0]}
        if conflicts:
            raise _batch_conflict(type, conflicts)
        self._changed()
        texts = {i.id: i.text for i in items}
        return {
            id: Record(
                type, id, _decode(texts[id]), version, created_at, updated_at, None, None, expires
            )
            for _, id, version, _, created_at, updated_at, _, expires in rows
        }

    async def _versions_on(
        self, conn: _Conn, type: str, items: list[SaveItem]
    ) -> dict[str, tuple[int, int]]:
        cur = await conn.execute(
            self._queries.current_versions, {"type": type, "ids": _json_list([i.id for i in items])}
        )
        current = dict(await cur.fetchall())
        return {
            i.id: (i.expected, current.get(i.id, 0))
            for i in items
            if i.expected is not None and i.expected != current.get(i.id, 0)
        }

    async def delete_many(self, type: str, ids: list[str]) -> int:
        async with self._connection() as conn:
            params = {"type": type, "ids": _json_list(ids)}
            cur = await conn.execute(self._queries.delete_many, params)
        if cur.rowcount:
            self._changed()
        return cur.rowcount

    async def list_ids(self, type: str, *, prefix: str, after: str, limit: int) -> list[str]:
        params = {"type": type, "prefix": prefix, "after": after, "limit": limit}
        return [row[0] for row in await self._read(self._queries.list_ids, params)]

    async def types(self) -> dict[str, int]:
        return {row[0]: int(row[1]) for row in await self._read(self._queries.types, {})}

    # -- queries: each statement is built for its filter, so none is prepared -----------

    async def _query_rows(self, statement: compiler.Statement) -> list[tuple[Any, ...]]:
        query = statement.query.as_bytes(None)  # only fixed SQL and quoted identifiers
        return await self._fetch(query, statement.params, idempotent=True, prepare=False)

    async def query(self, q: queries.Query) -> list[tuple[Record, tuple[Any, ...]]]:
        result = []
        for row in await self._query_rows(await self._query_text(q)):
            record = _record(q.type, row[0], row[1:8])
            result.append((record, tuple(row[8:])))
        return result

    async def _indexed_paths(self, type: str) -> frozenset[str]:
        """Paths of ``type`` with a b-tree index (cached; other processes' changes show
        within ``_INDEX_CACHE_SECONDS``)."""
        now = time.monotonic()
        if self._index_cache is None or now - self._index_cache[0] > _INDEX_CACHE_SECONDS:
            found: dict[str, set[str]] = {}
            for index_type, path, _ in await self.indexes():
                found.setdefault(index_type, set()).add(path)
            cache = {t: frozenset(paths) for t, paths in found.items()}
            self._index_cache = (now, cache)
        return self._index_cache[1].get(type, frozenset())

    async def _query_text(self, q: queries.Query) -> compiler.Statement:
        columns = sql.SQL(self._queries.query_columns.decode())
        source = sql.SQL(self._queries.query_from.decode())
        indexed = await self._indexed_paths(q.type)
        return compiler.query_statement(q, indexed, columns, source)

    async def count(self, type: str, where: queries.Node) -> int:
        source = sql.SQL(self._queries.query_from.decode())
        indexed = await self._indexed_paths(type)
        rows = await self._query_rows(compiler.count_statement(type, where, indexed, source))
        return int(rows[0][0])

    async def aggregate(self, spec: queries.Aggregate) -> list[dict[str, Any]]:
        source = sql.SQL(self._queries.query_from.decode())
        indexed = await self._indexed_paths(spec.type)
        result = []
        for row in await self._query_rows(compiler.aggregate_statement(spec, indexed, source)):
            values = dict(zip([p.text for p in spec.group_by], row, strict=False))
            for metric, value in zip(spec.metrics, row[len(spec.group_by) :], strict=True):
                values[metric.name] = _metric_value(metric.function, value)
            result.append(values)
        return result

    async def purge_expired(self, type: str | None, limit: int) -> int:
        """Delete expired rows, ``limit`` per statement, until a batch comes back short."""
        purged = 0
        params = {"type": type, "limit": limit}
        while True:
            async with self._connection() as conn:
                cur = await conn.execute(self._queries.purge_expired, params)
            purged += cur.rowcount
            if cur.rowcount:
                self._changed()
            if cur.rowcount < limit:
                return purged

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[TransactionBackend]:
        async with self._connection() as conn:
            with _translated(self.config):
                async with conn.transaction():
                    yield _PostgresTransaction(conn, self._ops, self.config, self._expiring)
        self._changed()

    # -- import and export ------------------------------------------------------------------------

    async def _export(
        self,
        query: bytes,
        types: list[str] | None,
        chunk: int,
        where: queries.Node | None,
        *,
        binary: bool = False,
    ) -> AsyncIterator[list[tuple[Any, ...]]]:
        selected = None if types is None else _json_list(types)
        statement = compiler.export_statement(sql.SQL(query.decode()), selected, where)
        fetch = self._queries.compose(schema.queries()["export_fetch"], chunk=sql.Literal(chunk))
        async with self._connection() as conn, conn.transaction():
            await conn.execute(self._queries.export_utc)
            await conn.execute(statement.query, statement.params, prepare=False)
            # Pipelined: the server computes the next page while this one is used.
            async with conn.pipeline():
                pages = [conn.cursor(binary=binary), conn.cursor(binary=binary)]
                await pages[0].execute(fetch)
                while True:
                    await pages[1].execute(fetch)
                    rows = await pages[0].fetchall()
                    if not rows:
                        break
                    yield rows
                    pages.reverse()

    async def export_records(
        self, types: list[str] | None, chunk: int, where: queries.Node | None = None
    ) -> AsyncIterator[list[Record]]:
        async for rows in self._export(self._queries.export_records, types, chunk, where):
            yield [_record(row[0], row[1], (*row[2:], None)) for row in rows]

    async def export_jsonl(
        self, types: list[str] | None, chunk: int, where: queries.Node | None = None
    ) -> AsyncIterator[bytes]:
        query = self._queries.export_lines
        async for rows in self._export(query, types, chunk, where, binary=True):
            lines = [row[0] for row in rows]
            lines.append(b"")
            yield b"\n".join(lines)

    @asynccontextmanager
    async def importer(self, on_conflict: OnConflict) -> AsyncIterator[_PostgresImporter]:
        async with self._connection() as conn:
            async with conn.transaction():
                await conn.execute(self._queries.import_stage)
                yield _PostgresImporter(conn, self._queries, on_conflict, self.config)
            self._changed()

    # -- change feed ---------------------------------------------------------------------------

    async def sequence_changes(self) -> int:
        params = {"channel": self.config.channel, "max_rows": _SEQUENCE_MAX_ROWS}
        rows = await self._write(self._queries.sequence_changes, params)
        return int(rows[0][0])

    async def feed_state(self) -> tuple[int, int]:
        rows = await self._read(self._queries.feed_state, {})
        return int(rows[0][0]), int(rows[0][1])

    async def fetch_changes(
        self, after: int, types: Sequence[str] | None, limit: int
    ) -> list[Change]:
        params = {
            "after": after,
            "types": None if types is None else _json_list(list(types)),
            "limit": limit,
        }
        return [
            Change(type, id, int(version), op, at, int(position))
            for position, type, id, version, op, at in await self._read(
                self._queries.changes_after, params
            )
        ]

    async def prune_changes(self) -> int:
        pruned = 0
        params = {"chunk": _PRUNE_CHUNK, "retention": self.config.changes_retention}
        while True:
            async with self._connection() as conn:
                cur = await conn.execute(self._queries.prune_changes, params)
            if not cur.rowcount:
                return pruned
            pruned += 1

    async def feed_stats(self) -> FeedStats:
        params = {"schema": self.config.schema, "table": self._names["changes"]}
        rows = await self._read(self._queries.feed_stats, params)
        last, pruned, oldest, count, size = rows[0]
        return FeedStats(int(last), int(pruned), oldest, int(count), int(size or 0))

    def feed_listener(self) -> FeedListener:
        return _PostgresListener(self._conninfo, self.config)

    # -- metrics -----------------------------------------------------------------------------

    def pool_stats(self) -> PoolStats:
        stats = self._pool.get_stats()
        return PoolStats(
            min_size=stats.get("pool_min", self.config.pool_min_size),
            max_size=stats.get("pool_max", self.config.pool_max_size),
            size=stats.get("pool_size", 0),
            available=stats.get("pool_available", 0),
            waiting=stats.get("requests_waiting", 0),
            requests=stats.get("requests_num", 0),
            requests_queued=stats.get("requests_queued", 0),
            requests_wait_seconds=stats.get("requests_wait_ms", 0) / 1000,
            connections_lost=stats.get("connections_lost", 0),
        )

    def retry_counts(self) -> dict[str, int]:
        return dict(self._retries)

    # -- schema and administration -----------------------------------------------------------

    async def init_schema(self, partitions: int | None = None) -> int:
        """Apply missing migrations under an advisory lock; safe from many processes."""
        q = self._queries
        lock_key = f"pgactors:{self.config.schema}.{self.config.table_prefix}"
        applied_now = 0
        async with self._connection() as conn, conn.transaction():
            await conn.execute(q.advisory_lock, {"key": lock_key})
            await conn.execute(q.create_schema)
            await conn.execute(q.create_migrations_table)
            cur = await conn.execute(q.applied_migrations)
            applied = {row[0] for row in await cur.fetchall()}
            newest = max(applied, default=0)
            if newest > schema.latest_version():
                raise _too_new(newest, self.config)
            create_partitions = await self._check_partitioning(conn, partitions, 1 in applied)
            partition_by = _PARTITION_BY if create_partitions else _NOT_PARTITIONED
            for migration in schema.migrations():
                if migration.version in applied:
                    continue
                await conn.execute(q.compose(migration.text, partition_by=partition_by))
                if create_partitions and migration.version == 1:
                    await self._create_partitions(conn, create_partitions)
                await conn.execute(
                    q.record_migration, {"version": migration.version, "name": migration.name}
                )
                applied_now += 1
        return applied_now

    async def _check_partitioning(
        self, conn: _Conn, partitions: int | None, installed: bool
    ) -> int:
        """How many partitions to create (0: none); refuse a table partitioned otherwise."""
        if not partitions:
            return 0
        params = {"schema": self.config.schema, "table": self._names["state"]}
        cur = await conn.execute(self._queries.state_partitioning, params)
        row = await cur.fetchone()
        table = f"{self.config.schema}.{self._names['state']}"
        if row is None and installed:
            raise SchemaMismatch(
                f"{table} is missing although its migration is recorded: restore it, or "
                "drop the schema (`pgactors reset`) and initialise again"
            )
        if row is None:
            return partitions
        if row[0] is None:
            raise SchemaMismatch(
                f"cannot partition {table}: it exists and is not partitioned; a table "
                "cannot be partitioned in place (create a new schema with partitions and "
                "copy the records into it)"
            )
        if row[0] != partitions:
            raise SchemaMismatch(
                f"{table} already has {row[0]} hash partitions, not {partitions}; the "
                "partition count cannot be changed in place"
            )
        return 0

    async def _create_partitions(self, conn: _Conn, count: int) -> None:
        template = schema.queries()["create_state_partition"]
        for remainder in range(count):
            await conn.execute(
                self._queries.compose(
                    template,
                    partition=sql.Identifier(schema.partition_name(self.config, remainder)),
                    modulus=sql.Literal(count),
                    remainder=sql.Literal(remainder),
                )
            )

    async def schema_version(self) -> int | None:
        async with self._connection() as conn:
            return await _schema_version(conn, self._queries, self.config)

    async def verify(self) -> list[tuple[str, str, bool]]:
        async with self._connection() as conn:
            cur = await conn.execute(self._queries.schema_objects, {"schema": self.config.schema})
            present = {(kind, name) for kind, name in await cur.fetchall()}
        return [
            (obj.kind, obj.name, (obj.kind, obj.name) in present)
            for obj in schema.expected_objects(self.config)
        ]

    async def server_info(self) -> ServerInfo:
        q = self._queries
        async with self._connection() as conn:
            started = time.perf_counter()
            await conn.execute(q.ping)
            latency = (time.perf_counter() - started) * 1000
            cur = await conn.execute(q.server_facts)
            server_version, database_bytes = await cur.fetchone() or ("?", 0)
            version = await _schema_version(conn, q, self.config)
            types: dict[str, int] = {}
            table_bytes = index_bytes = 0
            if version is not None:
                cur = await conn.execute(q.types)
                types = {name: int(count) for name, count in await cur.fetchall()}
                cur = await conn.execute(
                    q.state_sizes, {"schema": self.config.schema, "table": self._names["state"]}
                )
                table_bytes, index_bytes = await cur.fetchone() or (0, 0)
        return ServerInfo(
            server_version,
            latency,
            version,
            types,
            int(table_bytes),
            int(index_bytes),
            int(database_bytes),
        )

    async def server_stats(self) -> ServerStats:
        q = self._queries
        table = {"schema": self.config.schema, "table": self._names["state"]}
        listener = {"listener": _listener_name(self.config)}
        async with self._connection() as conn:
            cur = await conn.execute(q.types)
            types = {name: int(count) for name, count in await cur.fetchall()}
            cur = await conn.execute(q.state_stats, table)
            row = await cur.fetchone()
            assert row is not None
            partitions, table_bytes, toast, index, live, dead, vacuum, analyze, writes = row
            cur = await conn.execute(q.activity_stats, listener)
            connections, active, listeners, queue = await cur.fetchone() or (0, 0, 0, 0.0)
            recent = None
            if self.config.changes:
                cur = await conn.execute(q.writes_last_minute)
                recent_row = await cur.fetchone()
                recent = int(recent_row[0]) if recent_row else 0
        feed = await self.feed_stats()
        return ServerStats(
            types=types,
            partitions=int(partitions),
            heap_bytes=int(table_bytes) - int(toast),
            toast_bytes=int(toast),
            index_bytes=int(index),
            live_rows=int(live),
            dead_rows=int(dead),
            last_autovacuum=vacuum,
            last_autoanalyze=analyze,
            writes_total=int(writes),
            writes_last_minute=recent,
            changes_rows=feed.rows,
            changes_bytes=feed.bytes,
            connections=int(connections),
            active_connections=int(active),
            listeners=int(listeners),
            notification_queue_usage=float(queue),
        )

    async def drop_schema(self) -> None:
        # Dropping locks the tables in one order; writers, triggers and the sequencer
        # (perhaps this store's own, still numbering its last writes) take them in
        # another, so the drop may be a deadlock victim: it is atomic, so run it again.
        for attempt in range(_RETRIES + 1):
            with _translated(self.config):
                try:
                    async with self._pool.connection() as conn, conn.transaction():
                        await conn.execute(self._queries.drop_schema)
                    return
                except DeadlockDetected:
                    if attempt == _RETRIES:
                        raise
                    self._retries["deadlock"] += 1

    # -- query support: EXPLAIN and expression indexes on hot paths ----------------------

    async def explain(self, q: queries.Query) -> str:
        rows = await self._query_rows(compiler.explain_statement(await self._query_text(q)))
        return "\n".join(row[0] for row in rows)

    def _index_name(self, type: str, path: str) -> str:
        digest = hashlib.sha256(f"{type}\x00{path}".encode()).hexdigest()[:12]
        return f"{self.config.table_prefix}_q_{digest}"

    async def create_index(self, type: str, path: queries.Path) -> str:
        name = self._index_name(type, path.text)
        # With id second, an equality on the path reads matches in id order (the default
        # ordering), so a page stops after its last row instead of sorting every match.
        ddl = sql.SQL(
            "CREATE INDEX {concurrently} IF NOT EXISTS {name} ON {table} ({expr}, id) "
            "WHERE type = {type}"
        )
        parts = {
            "name": sql.Identifier(name),
            "table": sql.Identifier(self.config.schema, self._names["state"]),
            "expr": compiler.index_expression(path),
            "type": sql.Literal(type),
        }
        comment = sql.SQL("COMMENT ON INDEX {} IS {}").format(
            sql.Identifier(self.config.schema, name),
            sql.Literal(json.dumps({"pgactors_index": {"type": type, "path": path.text}})),
        )
        async with self._connection() as conn:
            try:
                await conn.execute(ddl.format(concurrently=sql.SQL("CONCURRENTLY"), **parts))
            except psycopg.errors.FeatureNotSupported:  # a partitioned table
                await conn.execute(ddl.format(concurrently=sql.SQL(""), **parts))
            await conn.execute(comment)
        self._index_cache = None
        return name

    async def drop_index(self, type: str, path: str) -> bool:
        name = self._index_name(type, path)
        async with self._connection() as conn:
            cur = await conn.execute(
                self._queries.index_exists, {"schema": self.config.schema, "name": name}
            )
            if await cur.fetchone() is None:
                return False
            await conn.execute(
                sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(self.config.schema, name))
            )
        self._index_cache = None
        return True

    async def indexes(self) -> list[tuple[str, str, str]]:
        params = {"schema": self.config.schema, "table": self._names["state"]}
        result = []
        for name, comment in await self._read(self._queries.list_indexes, params):
            info = json.loads(comment)["pgactors_index"]
            result.append((info["type"], info["path"], name))
        return sorted(result)


# Errors that one bad row causes; the chunk is split to find it and the rest is written.
_ROW_ERRORS = (
    psycopg.DataError,
    psycopg.errors.CheckViolation,
    psycopg.errors.NotNullViolation,
    psycopg.errors.ProgramLimitExceeded,
)


_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # the header, no flags, no extension
_COPY_TRAILER = b"\xff\xff"
_COPY_FIELDS = b"\x00\x08"
_NULL_FIELD = b"\xff\xff\xff\xff"
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_int4 = struct.Struct(">i").pack
_int8_field = struct.Struct(">iq").pack


def _copy_block(rows: list[ImportRow]) -> bytes:
    """Rows in COPY's binary format: (type, id, version, data, payload, manifest,
    created_at, updated_at). Nothing is escaped, and jsonb's binary form is a version
    byte (1) then the text, so the data goes as it came."""
    parts = [_COPY_SIGNATURE]
    add = parts.append
    for r in rows:
        add(_COPY_FIELDS)
        for text in (r.type, r.id):
            raw = text.encode()
            add(_int4(len(raw)))
            add(raw)
        add(_NULL_FIELD if r.version is None else _int8_field(8, r.version))
        if r.text is None:
            add(_NULL_FIELD)
        else:
            add(_int4(len(r.text) + 1))
            add(b"\x01")
            add(r.text)
        if r.payload is None:
            add(_NULL_FIELD)
            add(_NULL_FIELD)
        else:
            manifest = (r.manifest or "").encode()
            add(_int4(len(r.payload)))
            add(r.payload)
            add(_int4(len(manifest)))
            add(manifest)
        for at in (r.created_at, r.updated_at):
            add(_NULL_FIELD if at is None else _int8_field(8, (at - _PG_EPOCH) // _MICROSECOND))
    add(_COPY_TRAILER)
    return b"".join(parts)


class _PostgresImporter:
    """Writes import chunks on one connection, inside the import's transaction."""

    def __init__(
        self, conn: _Conn, queries: _Queries, on_conflict: OnConflict, config: StoreConfig
    ) -> None:
        self._conn = conn
        self._q = queries
        self._on_conflict = on_conflict
        self._config = config
        # COPY straight into the table is the fast path of a restore into an empty
        # schema; after one conflict, conflicts are likely, so stage from then on.
        self._direct = True
        self._turn = asyncio.Lock()  # FIFO: chunks are written in the order they came

    async def write(self, rows: list[ImportRow]) -> ImportOutcome:
        """Write a chunk; a row the server refuses is isolated by halving and reported.

        The chunk is encoded while the previous one is still being written, so the
        server does not wait for it; chunks are written in call order.
        """
        block = _copy_block(rows)
        async with self._turn:
            return await self._write_checked(rows, block)

    async def _write_checked(self, rows: list[ImportRow], block: bytes) -> ImportOutcome:
        try:
            async with self._conn.transaction():  # a savepoint
                return await self._write(rows, block)
        except _ROW_ERRORS as exc:
            if len(rows) == 1:
                message = redact(str(exc).strip().splitlines()[0], self._config)
                return ImportOutcome(rejected=[(rows[0], f"PostgreSQL refused it: {message}")])
        first, second = rows[: len(rows) // 2], rows[len(rows) // 2 :]
        return await self._write_checked(first, _copy_block(first)) + await self._write_checked(
            second, _copy_block(second)
        )

    async def _write(self, rows: list[ImportRow], block: bytes) -> ImportOutcome:
        if self._direct and all(r.version and r.created_at and r.updated_at for r in rows):
            try:
                async with self._conn.transaction():
                    await self._copy(self._q.import_copy_direct, block)
                return ImportOutcome(imported=len(rows))
            except psycopg.errors.UniqueViolation:
                self._direct = False
        return await self._staged(rows, block)

    async def _copy(self, query: bytes, block: bytes) -> None:
        async with self._conn.cursor() as cur, cur.copy(query) as copy:
            await copy.write(block)

    async def _staged(self, rows: list[ImportRow], block: bytes) -> ImportOutcome:
        conn, q = self._conn, self._q
        await conn.execute(q.import_clear)
        await self._copy(q.import_copy, block)
        overwritten = 0
        if self._on_conflict == "fail":
            cur = await conn.execute(q.import_conflicts)
            existing = await cur.fetchall()
            if existing:
                raise conflict_error([(t, i) for t, i in existing])
            cur = await conn.execute(q.import_insert_new)
            if cur.rowcount < len(rows):
                raise ImportAborted(
                    "import aborted, nothing was written: a record was created concurrently "
                    "(on_conflict=fail)"
                )
        else:
            if self._on_conflict == "overwrite":
                cur = await conn.execute(q.import_overwrite)
                overwritten = cur.rowcount
            cur = await conn.execute(q.import_insert)
        imported = cur.rowcount
        return ImportOutcome(imported, overwritten, len(rows) - imported - overwritten)


class _PostgresListener:
    """A dedicated autocommit connection, outside the pool, that LISTENs for changes."""

    def __init__(self, conninfo: str, config: StoreConfig) -> None:
        self._conninfo = conninfo
        self._config = config
        self._conn: _Conn | None = None

    async def connect(self) -> None:
        await self.close()
        # Named so that `status` can count the listeners of a channel.
        conninfo = make_conninfo(self._conninfo, application_name=_listener_name(self._config))
        conn = await _connect(conninfo, self._config)
        self._conn = conn
        channel = sql.Identifier(self._config.channel)
        probe = sql.Identifier(f"{self._config.channel}_probe")
        token = f"probe-{time.monotonic_ns()}"
        notify = None
        with _translated(self._config):
            await conn.execute(sql.SQL("LISTEN {}").format(channel))
            await conn.execute(sql.SQL("LISTEN {}").format(probe))
            await conn.execute("SELECT pg_notify(%s, %s)", [f"{self._config.channel}_probe", token])
            async with contextlib.aclosing(conn.notifies(timeout=_PROBE_SECONDS)) as notifies:
                async for notify in notifies:
                    if notify.payload == token:
                        break
            if notify is None or notify.payload != token:
                raise ConfigError(
                    f"LISTEN/NOTIFY does not reach this connection to {self._config.target()}: "
                    "is it a transaction-pooling PgBouncer? Point the change feed at PostgreSQL "
                    "directly (or at a session-pooling PgBouncer)"
                )

    async def wait(self, seconds: float) -> list[str]:
        assert self._conn is not None
        channel = self._config.channel
        # aclosing: an abandoned notifies() generator would keep the connection locked.
        notifies = self._conn.notifies(timeout=seconds, stop_after=1)
        with _translated(self._config):
            async with contextlib.aclosing(notifies):
                return [n.payload async for n in notifies if n.channel == channel]

    async def ping(self) -> None:
        assert self._conn is not None
        with _translated(self._config):
            await self._conn.execute("SELECT 1")

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


def _listener_name(config: StoreConfig) -> str:
    # application_name keeps 63 bytes; a longer channel name is cut, like the server does.
    return f"pgactors listen {config.channel}"[:63]


async def _connect(conninfo: str, config: StoreConfig) -> _Conn:
    try:
        return await asyncio.wait_for(
            psycopg.AsyncConnection.connect(conninfo, autocommit=True),
            timeout=config.connect_timeout + 1,
        )
    except TimeoutError:
        raise StoreUnavailable(
            f"cannot reach PostgreSQL at {config.target()}: no answer within "
            f"{config.connect_timeout:g} s -- {_hint('timeout')}"
        ) from None
    except (psycopg.Error, OSError) as exc:
        raise translate(exc, config) from None


async def _schema_version(conn: _Conn, queries: _Queries, config: StoreConfig) -> int | None:
    table = schema.identifiers(config)["migrations"]
    cur = await conn.execute(
        queries.migrations_table_exists, {"schema": config.schema, "table": table}
    )
    row = await cur.fetchone()
    if not row or not row[0]:
        return None
    cur = await conn.execute(queries.schema_version)
    row = await cur.fetchone()
    return int(row[0]) if row and row[0] is not None else None


def _too_new(version: int, config: StoreConfig) -> SchemaMismatch:
    return SchemaMismatch(
        f"the database schema {config.schema!r} is at version {version}, newer than this "
        f"pgactors understands ({schema.latest_version()}): upgrade pgactors"
    )


def _batch_conflict(type: str, conflicts: dict[str, tuple[int, int]]) -> VersionConflict:
    first = min(conflicts)
    return VersionConflict(type, first, *conflicts[first], conflicts=conflicts)


__all__ = ["PostgresBackend", "build_conninfo", "translate"]
