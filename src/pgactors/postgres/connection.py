"""Connections: the pool, the named statements, and translating driver errors.

Every driver exception becomes a ``PgActorsError`` here; connection failures name
the host and port (never the password) and say what to check. The caller's own
exceptions pass through untouched.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import msgspec
import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.errors import DeadlockDetected, DuplicatePreparedStatement, InvalidSqlStatementName
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .. import schema
from ..config import StoreConfig, redact
from ..errors import (
    ConfigError,
    DatabaseError,
    InvalidInput,
    PgActorsError,
    RetryableError,
    SchemaMismatch,
    StoreTimeout,
    StoreUnavailable,
)
from ..stats import PoolStats
from .pool import Pool
from .wire import WIRE

Conn = psycopg.AsyncConnection[Any]
logger = logging.getLogger("pgactors")
# A connection idle for longer than this is pinged before use, so a restarted
# server does not hand out dead connections; busy connections skip the ping.
IDLE_CHECK_SECONDS = 2.0
POOL_WAIT_SECONDS = 30.0
_ENCODE = msgspec.json.encode
RETRIES = 3
# Queries with placeholders beyond the configured identifiers, composed on use.
_TEMPLATES = frozenset({"create_state_partition", "export_fetch", "history_create_trigger"})


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


def tls_hint(message: str) -> str | None:
    """What to check, for a connection failure's message that is about TLS; else None."""
    lowered = message.lower()
    if "does not match host name" in lowered:
        return (
            "TLS certificate verification failed: the host name is not one the server's "
            "certificate names: connect by a name it lists (the embedded server's: "
            "localhost or 127.0.0.1), or use sslmode=verify-ca to skip the host name check"
        )
    if "certificate verify failed" in lowered:
        return (
            "TLS certificate verification failed: check sslrootcert (the CA that signed "
            "the server's certificate; the embedded server's is tls/ca.crt in its data "
            "directory)"
        )
    if "root certificate file" in lowered:
        return "TLS: the sslrootcert file cannot be read: check its path"
    refused_by_server = "alert" in lowered and ("unknown ca" in lowered or "certificate" in lowered)
    if (
        refused_by_server
        or "certificate authentication failed" in lowered
        or "client certificate" in lowered
    ):
        return (
            "TLS client certificate refused: check sslcert and sslkey (a certificate "
            "signed by the server's CA, for this user)"
        )
    if "tls connections only" in lowered or "no encryption" in lowered:
        return "the server accepts TLS connections only: set sslmode=verify-full (or require)"
    if "server does not support ssl" in lowered:
        return (
            "the server does not offer TLS: start it with TLS (`pgactors server start "
            "--tls` for the embedded one) or change sslmode"
        )
    if "ssl" in lowered or "certificate" in lowered:
        return (
            "the TLS handshake failed: check sslmode, sslrootcert, and sslcert and sslkey "
            "(the server may have refused the client certificate)"
        )
    return None


def hint(message: str) -> str:
    """What to check, for a connection failure's message."""
    tls = tls_hint(message)
    if tls is not None:
        return tls
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
    if "session is read-only" in lowered or "is in hot standby" in lowered:
        return (
            "no server listed accepts writes: a standby is read-only until promoted "
            "(after a failover: promote the standby, e.g. `pgactors server promote`)"
        )
    if "timeout" in lowered or "timed out" in lowered:
        return "the server did not answer in time: check host, port and any firewall"
    if "could not translate host name" in lowered or "name or service not known" in lowered:
        return "the host name does not resolve: check the host"
    if "unsupported startup parameter" in lowered:
        return (
            "a pooler (PgBouncer?) refused a startup parameter: statement_timeout and "
            "changes=False travel as the startup option 'options'; set them on the server "
            "instead (ALTER ROLE ... SET ...) and set pooler='pgbouncer'"
        )
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
    if isinstance(
        exc,
        psycopg.errors.UndefinedTable
        | psycopg.errors.UndefinedFunction
        | psycopg.errors.UndefinedColumn,
    ):
        return SchemaMismatch(
            f"the pgactors schema in {config.schema!r} (table prefix "
            f"{config.table_prefix!r}) is missing, or older than this pgactors "
            f"(schema version {schema.latest_version()}): run `pgactors init` or "
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
            f"cannot reach PostgreSQL at {config.target()}: {message} -- {hint(message)}"
        )
    return DatabaseError(f"PostgreSQL error on {config.target()}: {message}")


@contextmanager
def translated(config: StoreConfig) -> Iterator[None]:
    """Driver exceptions become ``PgActorsError``s; anything else (ours, or the caller's
    own, raised inside a transaction or by the lines of an import) passes untouched."""
    try:
        yield
    except (psycopg.Error, PoolTimeout) as exc:
        raise translate(exc, config) from None


async def connect(conninfo: str, config: StoreConfig) -> Conn:
    """A new autocommit connection outside the pool (for checks and the listener)."""
    try:
        return await asyncio.wait_for(
            psycopg.AsyncConnection.connect(conninfo, autocommit=True, prepare_threshold=None),
            timeout=config.connect_timeout + 1,
        )
    except TimeoutError:
        raise StoreUnavailable(
            f"cannot reach PostgreSQL at {config.target()}: no answer within "
            f"{config.connect_timeout:g} s -- {hint('timeout')}"
        ) from None
    except (psycopg.Error, OSError) as exc:
        raise translate(exc, config) from None


async def read_schema_version(conn: Conn, queries: Statements, config: StoreConfig) -> int | None:
    """The newest applied migration, or None when the schema is not installed."""
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


async def connect_pair(conninfo: str, config: StoreConfig) -> tuple[Conn, Conn]:
    """Two connections opened at once (or none: the first failure is raised)."""
    results = await asyncio.gather(
        connect(conninfo, config), connect(conninfo, config), return_exceptions=True
    )
    conns = [r for r in results if not isinstance(r, BaseException)]
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        for conn in conns:
            await conn.close()
        raise failures[0]
    return conns[0], conns[1]


async def transaction_pooled(first: Conn, second: Conn) -> bool:
    """True if these two connections are served by a transaction pooler (PgBouncer).

    A PostgreSQL backend serves one client connection for its whole life. So if one
    connection's statements run in different backends, or two open connections run
    statements in the same backend, something in between hands backends out per
    transaction. Never wrong when True; a busy pooler may hand out other backends
    each time, and then this says False (set ``pooler='pgbouncer'`` to be sure)."""
    pids: list[int] = []
    for conn in (first, second, first, second):
        cur = await conn.execute("SELECT pg_backend_pid()")
        row = await cur.fetchone()
        pids.append(int(row[0]) if row else 0)
    own_first, own_second = {pids[0], pids[2]}, {pids[1], pids[3]}
    return len(own_first) > 1 or len(own_second) > 1 or bool(own_first & own_second)


def listen_conninfo(config: StoreConfig, conninfo: str, pooled: bool) -> str:
    """Where LISTEN connections go: ``listen_dsn``, else the store's own server.

    ConfigError when a transaction pooler stands in front and no ``listen_dsn`` is set:
    LISTEN needs a session, and a transaction pooler hands the session to others."""
    if config.listen_dsn is not None:
        params = {"connect_timeout": str(max(1, math.ceil(config.connect_timeout)))}
        try:
            return make_conninfo(config.listen_dsn, **params)
        except psycopg.ProgrammingError as exc:
            message = redact(str(exc), config)
            raise ConfigError(f"listen_dsn is not a valid connection string: {message}") from None
    if pooled:
        raise ConfigError(
            f"the change feed and reminder notifications LISTEN, which needs a session, but "
            f"{config.target()} is a transaction pooler (pooler={config.pooler!r}): set "
            "listen_dsn (env PGACTORS_LISTEN_DSN) to a DSN that reaches PostgreSQL directly "
            "or through a session-pooling PgBouncer"
        )
    return conninfo


def too_new(version: int, config: StoreConfig) -> SchemaMismatch:
    """The error for a schema newer than this pgactors."""
    return SchemaMismatch(
        f"the database schema {config.schema!r} is at version {version}, newer than this "
        f"pgactors understands ({schema.latest_version()}): upgrade pgactors"
    )


def json_list(values: Sequence[object]) -> str:
    """A list as one JSON text parameter."""
    # Lists travel as one JSON text parameter: far cheaper for the client to build
    # than a PostgreSQL array literal, and cheap for the server to unpack. msgspec
    # builds it ten times as fast as json.dumps; a lone surrogate, which it refuses,
    # is left for json.dumps (and the server) to reject as before.
    try:
        return _ENCODE(values).decode()
    except UnicodeEncodeError:
        return json.dumps(values, ensure_ascii=False)


def key_params(keys: list[tuple[str, str]]) -> dict[str, str]:
    """``(type, id)`` keys as the ``types`` and ``ids`` parameters."""
    return {"types": json_list([k[0] for k in keys]), "ids": json_list([k[1] for k in keys])}


class Statements:
    """The named queries (``sql/queries.sql``), composed once with the configured identifiers."""

    def __init__(self, config: StoreConfig) -> None:
        self._idents = {k: sql.Identifier(v) for k, v in schema.identifiers(config).items()}
        self.by_name = {
            name: self.compose(text)
            for name, text in schema.queries().items()
            if name not in _TEMPLATES
        }
        # Each statement with PostgreSQL's own placeholders ($1...) and its parameter
        # names in their order: sent through a raw cursor, it is not parsed for
        # placeholders on every run (psycopg caches that only for statements under 4 KB).
        self.numbered = {query: numbered(query) for query in self.by_name.values()}

    def compose(self, text: str, **extra: sql.Composable) -> bytes:
        """SQL text with its ``{name}`` identifiers (and ``extra``) filled in, quoted by psycopg."""
        return sql.SQL(text).format(**self._idents, **extra).as_string().encode()

    def composable(self, name: str) -> sql.Composable:
        """A named query as a fragment to compose into a larger statement."""
        return sql.SQL(self.by_name[name].decode())

    def __getattr__(self, name: str) -> bytes:
        try:
            return self.by_name[name]
        except KeyError:
            raise AttributeError(name) from None


async def run_numbered(
    conn: Conn,
    statement: tuple[bytes, tuple[str, ...]],
    params: Mapping[str, Any],
    *,
    prepare: bool,
) -> list[tuple[Any, ...]]:
    """The rows of a ``numbered`` statement, through the wire (``prepare``: as a
    prepared statement of the connection)."""
    query, names = statement
    values = [params[name] for name in names]
    return await WIRE.fetch(conn, query, values, prepare=prepare)


_PLACEHOLDER = re.compile(rb"%\((\w+)\)s")


def numbered(query: bytes) -> tuple[bytes, tuple[str, ...]]:
    """``query`` with ``$n`` placeholders instead of ``%(name)s``, and the names in order."""
    names: list[str] = []

    def number(match: re.Match[bytes]) -> bytes:
        name = match.group(1).decode()
        if name not in names:
            names.append(name)
        return b"$%d" % (names.index(name) + 1)

    return _PLACEHOLDER.sub(number, query).replace(b"%%", b"%"), tuple(names)


class Connections:
    """The connection pool, with the statements and the error translation every role uses."""

    def __init__(
        self,
        config: StoreConfig,
        conninfo: str,
        pool: Pool,
        statements: Statements,
        last_used: weakref.WeakKeyDictionary[Conn, float],
        pooled: bool = False,
    ) -> None:
        self.config = config
        self._config = config
        self.conninfo = conninfo
        self.pool = pool
        self.statements = statements
        self._last_used = last_used
        self.retries = {"read": 0, "deadlock": 0}
        # A transaction pooler stands in front: no prepared statements, no LISTEN here.
        self.pooled = pooled
        # Called after a write commits (the backend points it at the change sequencer).
        self.changed: Callable[[], None] = _nothing

    @classmethod
    async def open(cls, config: StoreConfig) -> Connections:
        """Check that the server is reachable and the schema compatible, then open the pool."""
        conninfo = build_conninfo(config)
        statements = Statements(config)
        pooled = config.pooler == "pgbouncer"
        second: Conn | None = None
        if config.pooler == "auto":
            conn, second = await connect_pair(conninfo, config)
        else:
            conn = await connect(conninfo, config)
        try:
            with translated(config):
                if second is not None:
                    pooled = await transaction_pooled(conn, second)
                version = await read_schema_version(conn, statements, config)
        finally:
            await conn.close()
            if second is not None:
                await second.close()
        if version is not None and version > schema.latest_version():
            raise too_new(version, config)
        # Recorded by our own code rather than a pool ``reset`` callback: a reset
        # callback sends every returned connection through the pool's worker tasks,
        # which cost a third of the throughput.
        last_used: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()

        async def check(conn: Conn) -> None:
            if time.monotonic() - last_used.get(conn, 0.0) > IDLE_CHECK_SECONDS:
                await AsyncConnectionPool.check_connection(conn)

        # psycopg never prepares on these connections: once it has prepared a statement
        # of its own, a rollback or any ALTER or DROP makes it DEALLOCATE ALL, which
        # would also drop the wire's, unknown to the wire. The wire prepares the store's
        # own statements, unless ``pooled``.
        kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": None}
        pool = Pool(
            conninfo,
            kwargs=kwargs,
            min_size=config.pool_min_size,
            max_size=config.pool_max_size,
            open=False,
            check=check,
            timeout=max(POOL_WAIT_SECONDS, config.connect_timeout),
            reconnect_timeout=max(60.0, config.connect_timeout),
            name=f"pgactors-{config.schema}-{config.table_prefix}",
        )
        try:
            await pool.open(wait=True, timeout=config.connect_timeout + 1)
        except (PoolTimeout, psycopg.Error) as exc:
            await pool.close()
            raise translate(exc, config) from None
        return cls(config, conninfo, pool, statements, last_used, pooled)

    async def close(self) -> None:
        """Close every connection."""
        await self.pool.close()

    def stop_preparing(self) -> None:
        """Treat the server as behind a transaction pooler from now on."""
        if not self.pooled:
            logger.warning(
                "%s behaves like a transaction pooler (a prepared statement was missing or "
                "taken): pgactors stops preparing statements; set pooler='pgbouncer' to say "
                "so from the start",
                self._config.target(),
            )
        self.pooled = True

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A pooled connection; driver errors in the block become ``PgActorsError``s."""
        with translated(self._config):
            async with self.pool.connection() as conn:
                try:
                    yield conn
                finally:
                    self._last_used[conn] = time.monotonic()
                self._check_confirmed(conn)

    def _check_confirmed(self, conn: Conn) -> None:
        """Raise if a commit on ``conn`` was reported without its standby's confirmation."""
        if conn in self.pool.unconfirmed:
            self.pool.unconfirmed.discard(conn)
            raise StoreUnavailable(
                f"a write committed on PostgreSQL at {self._config.target()} but its "
                "synchronous standby did not confirm it (the wait was cancelled): it is on "
                "the primary only, so whether it survives a failover is unknown"
            )

    async def read(self, query: bytes, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of a statement that changes nothing (retried on a dead connection)."""
        return await self.fetch(query, params, idempotent=True)

    async def write(self, query: bytes, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of a statement that writes."""
        return await self.fetch(query, params, idempotent=False)

    async def rows_on(
        self, conn: Conn, query: bytes, params: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        """The rows of a packaged statement on ``conn``, already taken (a transaction's,
        or one held for several statements), through the wire: prepared unless a
        pooler stands in front."""
        raw = self.statements.numbered[query]
        return await run_numbered(conn, raw, params, prepare=not self.pooled)

    async def count_on(self, conn: Conn, query: bytes, params: Mapping[str, Any]) -> int:
        """How many rows a packaged statement changed on ``conn``, as ``rows_on`` runs it."""
        query_, names = self.statements.numbered[query]
        values = [params[name] for name in names]
        return await WIRE.count(conn, query_, values, prepare=not self.pooled)

    async def fetch(
        self,
        query: bytes,
        params: Mapping[str, Any],
        *,
        idempotent: bool,
        prepare: bool = True,
    ) -> list[tuple[Any, ...]]:
        """Run one statement on a pooled connection and return its rows (a packaged
        statement is prepared unless ``prepare`` is False or a pooler stands in front).

        A read retries once on a connection that died while idle; any statement
        retries when PostgreSQL picked it as a deadlock victim (only possible
        against a user transaction locking rows out of order): it was atomic, so
        nothing was applied.
        """
        for attempt in range(RETRIES + 1):
            conn = None
            try:
                # getconn/putconn, not pool.connection(): the connection is in autocommit,
                # so the commit that context manager ends with has nothing to do, and
                # costs 5 us of locking per statement.
                conn = await self.pool.getconn()
                try:
                    raw = self.statements.numbered.get(query)
                    if raw is None:
                        cur = await conn.execute(query, params)
                        rows = await cur.fetchall()
                    else:
                        prepared = prepare and not self.pooled
                        rows = await run_numbered(conn, raw, params, prepare=prepared)
                    self._check_confirmed(conn)
                    return rows
                finally:
                    self._last_used[conn] = time.monotonic()
                    await self.pool.putconn(conn)
            except PoolTimeout as exc:
                raise translate(exc, self._config) from None
            except DeadlockDetected as exc:
                if attempt == RETRIES:
                    raise translate(exc, self._config) from None
                self.retries["deadlock"] += 1
            except (InvalidSqlStatementName, DuplicatePreparedStatement) as exc:
                # Our prepared statement was missing, or the name taken, in the backend
                # that got the statement: a transaction pooler that detection missed.
                # The statement did not run, so it is safe to send again, unprepared.
                if self.pooled or attempt > 0:
                    raise translate(exc, self._config) from None
                self.stop_preparing()
            except psycopg.OperationalError as exc:
                if not idempotent or attempt > 0 or conn is None or not conn.broken:
                    raise translate(exc, self._config) from None
                self.retries["read"] += 1
            except psycopg.Error as exc:
                raise translate(exc, self._config) from None
        raise AssertionError("unreachable")

    def pool_stats(self) -> PoolStats:
        """The pool's usage now."""
        stats = self.pool.get_stats()
        return PoolStats(
            min_size=stats.get("pool_min", self._config.pool_min_size),
            max_size=stats.get("pool_max", self._config.pool_max_size),
            size=stats.get("pool_size", 0),
            available=stats.get("pool_available", 0),
            waiting=stats.get("requests_waiting", 0),
            requests=stats.get("requests_num", 0),
            requests_queued=stats.get("requests_queued", 0),
            requests_wait_seconds=stats.get("requests_wait_ms", 0) / 1000,
            connections_lost=stats.get("connections_lost", 0),
        )

    def retry_counts(self) -> dict[str, int]:
        """Statements retried so far, by reason."""
        return dict(self.retries)


def _nothing() -> None:
    pass
