"""One packaged statement on a pooled connection, through libpq directly.

psycopg's async cursor costs about 100 us of Python per statement on the machines we
measure on, against about 20 us for the same exchange made on its libpq connection
(``conn.pgconn``): for a load coalesced with seven others, that was a third of the
client's work. So the store's own statements skip the cursor. Everything else is
psycopg's: its ``Transformer`` dumps the parameters and loads the rows (with the
connection's adapters, our JSON loader included), errors are raised as psycopg's own
exceptions (``Connections.fetch`` translates them as before), and a caller cancelled
mid-statement has it cancelled in the server, as psycopg does.
"""

from __future__ import annotations

import asyncio
import itertools
import weakref
from collections.abc import Sequence
from typing import Any

from psycopg import abc, errors, pq
from psycopg.adapt import PyFormat, Transformer

from .pool import Conn

# Seconds to wait for the server to cancel a statement whose caller was cancelled.
CANCEL_WAIT = 5.0
_OK = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK, pq.ExecStatus.EMPTY_QUERY)
_NUMBERS = itertools.count()
# Prepared here, apart from psycopg's own ("_pg3_N"): by query and parameter types.
_Names = dict[tuple[bytes, tuple[int, ...]], bytes]


class Wire:
    """Runs statements on checked-out connections; remembers what each one prepared."""

    def __init__(self) -> None:
        self._prepared: weakref.WeakKeyDictionary[Conn, _Names] = weakref.WeakKeyDictionary()

    async def fetch(
        self, conn: Conn, query: bytes, values: Sequence[Any], *, prepare: bool
    ) -> list[tuple[Any, ...]]:
        """The rows of ``query`` (``$n`` placeholders) run with ``values``; ``prepare``:
        as a prepared statement of this connection (prepared on first use)."""
        tx, result = await self._run(conn, query, values, prepare)
        if result is None or result.status != pq.ExecStatus.TUPLES_OK:
            return []
        tx.set_pgresult(result)
        rows: list[tuple[Any, ...]] = tx.load_rows(0, result.ntuples, tuple)
        return rows

    async def count(self, conn: Conn, query: bytes, values: Sequence[Any], *, prepare: bool) -> int:
        """How many rows ``query`` changed (or returned), as ``fetch`` runs it."""
        _, result = await self._run(conn, query, values, prepare)
        return 0 if result is None else result.command_tuples or 0

    async def _run(
        self, conn: Conn, query: bytes, values: Sequence[Any], prepare: bool
    ) -> tuple[abc.Transformer, pq.abc.PGresult | None]:
        """Run ``query``: the Transformer that dumped its values, and its last result."""
        # A new one each time (0.4 us): a Transformer holds its connection, so one kept
        # here, by a weak key, would keep every connection the pool let go alive.
        tx: abc.Transformer = Transformer(conn)
        params = tx.dump_sequence(values, [PyFormat.TEXT] * len(values))
        types = tuple(tx.types or ())
        pgconn = conn.pgconn
        try:
            if not prepare:
                pgconn.send_query_params(query, params, param_types=types)
                return tx, await self._result(conn)
            names = self._prepared.get(conn)
            if names is None:
                names = self._prepared[conn] = {}
            name = names.get((query, types))
            if name is None:
                # Never a name used before: a prepare whose caller was cancelled may
                # exist in the server without being noted here.
                name = b"pgactors_%d" % next(_NUMBERS)
                pgconn.send_prepare(name, query, param_types=types)
                await self._result(conn)
                names[(query, types)] = name
            pgconn.send_query_prepared(name, params)
            return tx, await self._result(conn)
        except BaseException:
            if pgconn.transaction_status == pq.TransactionStatus.ACTIVE:
                await self._stop(conn)
            raise

    async def _stop(self, conn: Conn) -> None:
        """The caller was cancelled mid-statement: ask the server to cancel it too (as
        psycopg does), and read its results away, so that it neither commits later nor
        greets the connection's next user. If that fails, the connection is closed
        (the pool replaces it)."""
        try:
            await conn.cancel_safe(timeout=CANCEL_WAIT)
            await asyncio.wait_for(self._result(conn), CANCEL_WAIT)
        except errors.QueryCanceled:
            pass  # as asked
        except BaseException as exc:
            await conn.close()
            if not isinstance(exc, Exception):
                raise

    async def _result(self, conn: Conn) -> pq.abc.PGresult | None:
        """Send what is buffered, then read every result; the last one (None if none)."""
        pgconn = conn.pgconn
        loop = asyncio.get_running_loop()
        while pgconn.flush():
            await _ready(loop, pgconn.socket, write=True)
        results: list[pq.abc.PGresult] = []
        waited = False
        while True:
            pgconn.consume_input()
            while pgconn.is_busy():
                await _ready(loop, pgconn.socket, write=False)
                waited = True
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:
                break
            results.append(result)
        if not waited:
            # The answer was there already (the server ran while we sent). Still let
            # other tasks run, as a statement through psycopg always does.
            await asyncio.sleep(0)
        for result in results:
            if result.status not in _OK:
                raise errors.error_from_result(result, encoding=conn.info.encoding)
        return results[-1] if results else None


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    """Wait until ``fd`` can be written (``write``) or read."""
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


WIRE = Wire()
"""The one ``Wire``: what it prepared is kept per connection, whichever pool it is from."""
