"""The store's connection pool: psycopg_pool's, handing out connections most recently
used first, with two changes for failover.

psycopg_pool hands out the connection idle the longest: every connection, and its
server process, takes turns, and a pool of 16 spreads 16 callers' work over 16 cold
processes. Taking the most recently used one instead (PgBouncer's default, LIFO)
keeps the work on as few processes as the load needs; the others stay idle, and
``max_idle`` can close them. Measured on 2 cores, 16 callers saving through a pool of
16: about 40 instead of 57 µs of server CPU per save.

Lost connections are retried at least every ``MAX_RECONNECT_DELAY`` (psycopg_pool doubles
its wait, 1, 2, 4, 8 s..., so after an outage of T s it came back up to T s after the
server did). And connections note the warning of a commit whose wait for a synchronous
standby was cancelled, so that such a commit is not reported as an acknowledged write.
"""

from __future__ import annotations

import weakref
from typing import Any

import psycopg
import psycopg.errors
from psycopg_pool import AsyncConnectionPool
from psycopg_pool.base import AttemptWithBackoff

from . import decoding

Conn = psycopg.AsyncConnection[Any]

MAX_RECONNECT_DELAY = 2.0
# The warning of a commit whose wait for a synchronous standby was cancelled (a cancel
# request; statement_timeout does not end that wait): the commit stands on the primary
# alone, and PostgreSQL reports it as a success.
UNCONFIRMED_COMMIT = "canceling wait for synchronous replication"


class _Attempt(AttemptWithBackoff):
    """psycopg_pool's reconnection backoff, waiting at most ``MAX_RECONNECT_DELAY``."""

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, MAX_RECONNECT_DELAY)


class Pool(AsyncConnectionPool[Conn]):
    """An ``AsyncConnectionPool`` that hands out the most recently used connection
    first, retries lost connections every
    ``MAX_RECONNECT_DELAY`` at most, keeps, in ``unconfirmed``, the connections on
    which a commit went unconfirmed by the synchronous standby, and decodes JSON
    columns with ``decoding``."""

    def __init__(self, conninfo: str, **kwargs: Any) -> None:
        self.unconfirmed: weakref.WeakSet[Conn] = weakref.WeakSet()
        super().__init__(conninfo, configure=self._configure, **kwargs)

    async def _configure(self, conn: Conn) -> None:
        decoding.register(conn)
        owner, unconfirmed = weakref.ref(conn), self.unconfirmed

        def notice(diagnostic: psycopg.errors.Diagnostic) -> None:
            warned = owner()
            if warned is not None and (diagnostic.message_primary or "").startswith(
                UNCONFIRMED_COMMIT
            ):
                unconfirmed.add(warned)

        conn.add_notice_handler(notice)

    async def _get_ready_connection(self, timeout: float | None) -> Conn | None:  # noqa: ASYNC109
        # psycopg_pool takes from the left and returns to the right; turning the
        # newest to the left makes it the one taken, and leaves the least recently
        # used at the left, where shrinking closes them.
        self._pool.rotate(1)
        return await super()._get_ready_connection(timeout)

    async def _add_connection(
        self, attempt: AttemptWithBackoff | None, growing: bool = False
    ) -> None:
        if attempt is None:
            attempt = _Attempt(timeout=self.reconnect_timeout)
        await super()._add_connection(attempt, growing)
