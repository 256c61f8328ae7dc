"""The store's connection pool: psycopg_pool's, with two changes for failover.

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
    """An ``AsyncConnectionPool`` that retries lost connections every
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

    async def _add_connection(
        self, attempt: AttemptWithBackoff | None, growing: bool = False
    ) -> None:
        if attempt is None:
            attempt = _Attempt(timeout=self.reconnect_timeout)
        await super()._add_connection(attempt, growing)
