"""The change feed's source: numbering, reading and pruning the change log; LISTEN."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence

from psycopg import sql
from psycopg.conninfo import make_conninfo

from ..changes import Change, FeedListener
from ..config import StoreConfig
from ..errors import ConfigError, PgActorsError
from .connection import Conn, Connections, connect, json_list, listen_conninfo, translated

SEQUENCE_MAX_ROWS = 10_000
# How long the server's answer to "is a listener connected?" is trusted (seconds).
LISTENED_TTL = 1.0
PRUNE_CHUNK = 10_000
PROBE_SECONDS = 5.0

logger = logging.getLogger("pgactors.changes")


class PostgresFeed:
    """The change log of the state table, read by ``changes.ChangeFeed``."""

    def __init__(self, db: Connections) -> None:
        self._db = db
        self._q = db.statements
        self._config = db.config
        self._connected: set[PostgresListener] = set()  # this process's feed listeners
        self._listened = True
        self._listened_until = 0.0

    async def listened(self) -> bool:
        """Whether a change-feed listener is connected: this store's own at once; any
        other (another process's) as the server last said, asked at most once a second."""
        if self._connected:
            return True
        now = time.monotonic()
        if now >= self._listened_until:
            self._listened_until = now + LISTENED_TTL
            try:
                params = {"listener": listener_name(self._config)}
                rows = await self._db.read(self._q.feed_listened, params)
                self._listened = bool(rows[0][0])
            except PgActorsError as exc:
                self._listened = True  # when in doubt, deliver promptly
                logger.debug("could not count the change feed's listeners: %s", exc)
        return self._listened

    async def sequence_changes(self) -> int:
        params = {"channel": self._config.channel, "max_rows": SEQUENCE_MAX_ROWS}
        rows = await self._db.write(self._q.sequence_changes, params)
        return int(rows[0][0])

    async def feed_state(self) -> tuple[int, int]:
        rows = await self._db.read(self._q.feed_state, {})
        return int(rows[0][0]), int(rows[0][1])

    async def fetch_changes(
        self, after: int, types: Sequence[str] | None, limit: int
    ) -> list[Change]:
        params = {
            "after": after,
            "types": None if types is None else json_list(list(types)),
            "limit": limit,
        }
        return [
            Change(type, id, int(version), op, at, int(position))
            for position, type, id, version, op, at in await self._db.read(
                self._q.changes_after, params
            )
        ]

    async def prune_changes(self) -> int:
        pruned = 0
        params = {"chunk": PRUNE_CHUNK, "retention": self._config.changes_retention}
        while True:
            async with self._db.connection() as conn:
                cur = await conn.execute(self._q.prune_changes, params)
            if not cur.rowcount:
                return pruned
            pruned += 1

    def feed_listener(self) -> FeedListener:
        return PostgresListener(self._listen_conninfo(), self._config, connected=self._connected)

    def check_listen(self) -> None:
        self._listen_conninfo()

    def _listen_conninfo(self) -> str:
        return listen_conninfo(self._config, self._db.conninfo, self._db.pooled)


class PostgresListener:
    """A dedicated autocommit connection, outside the pool, that LISTENs for changes."""

    def __init__(
        self,
        conninfo: str,
        config: StoreConfig,
        channel: str | None = None,
        *,
        connected: set[PostgresListener] | None = None,
    ) -> None:
        self._conninfo = conninfo
        self._config = config
        self._channel = channel or config.channel
        self._conn: Conn | None = None
        # Holds this listener while it listens (the feed's writers number promptly then).
        self._connected = connected

    async def connect(self) -> None:
        await self.close()
        # Named so that `status` can count the listeners of a channel.
        name = listener_name(self._config, self._channel)
        conninfo = make_conninfo(self._conninfo, application_name=name)
        conn = await connect(conninfo, self._config)
        self._conn = conn
        channel = sql.Identifier(self._channel)
        probe = sql.Identifier(f"{self._channel}_probe")
        token = f"probe-{time.monotonic_ns()}"
        notify = None
        with translated(self._config):
            await conn.execute(sql.SQL("LISTEN {}").format(channel))
            await conn.execute(sql.SQL("LISTEN {}").format(probe))
            # Sent from another connection: behind a transaction pooler, this one's own
            # NOTIFY could run in the backend that LISTENs and come back, while a
            # notification sent from elsewhere goes to a backend nobody reads.
            sender = await connect(conninfo, self._config)
            try:
                await sender.execute("SELECT pg_notify(%s, %s)", [f"{self._channel}_probe", token])
            finally:
                await sender.close()
            async with contextlib.aclosing(conn.notifies(timeout=PROBE_SECONDS)) as notifies:
                async for notify in notifies:
                    if notify.payload == token:
                        break
            if notify is None or notify.payload != token:
                raise ConfigError(
                    f"LISTEN/NOTIFY does not reach this connection to {self._config.target()}: "
                    "is it a transaction-pooling PgBouncer? Set listen_dsn (env "
                    "PGACTORS_LISTEN_DSN) to reach PostgreSQL directly (or through a "
                    "session-pooling PgBouncer), and pooler='pgbouncer'"
                )
        if self._connected is not None:
            self._connected.add(self)

    async def wait(self, seconds: float) -> list[str]:
        assert self._conn is not None
        channel = self._channel
        # aclosing: an abandoned notifies() generator would keep the connection locked.
        notifies = self._conn.notifies(timeout=seconds, stop_after=1)
        with translated(self._config):
            async with contextlib.aclosing(notifies):
                return [n.payload async for n in notifies if n.channel == channel]

    async def ping(self) -> None:
        assert self._conn is not None
        with translated(self._config):
            await self._conn.execute("SELECT 1")

    async def close(self) -> None:
        if self._connected is not None:
            self._connected.discard(self)
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


def listener_name(config: StoreConfig, channel: str | None = None) -> str:
    """The application_name of this store's listener connections on ``channel``
    (default: the change feed's)."""
    # application_name keeps 63 bytes; a longer channel name is cut, like the server does.
    return f"pgactors listen {channel or config.channel}"[:63]
