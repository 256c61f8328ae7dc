"""The dashboard's overview at scale: 1,000,000 records over 1,000 types.

    python -m benchmarks.ui [--records 1000000] [--types 1000] [--requests 50] [--dsn DSN]

Creates the records server-side (``INSERT ... SELECT generate_series``, change logging
off for that session), runs ANALYZE as autovacuum would, serves ``create_app`` with
uvicorn on 127.0.0.1 and times, from an HTTP client on the same machine, ``GET /`` (the
page), ``GET /api/overview`` (the figures the page polls) and ``GET /api/types``, after
one warm-up request each. Reports p50, p95 and max in ms (target: under 100 ms), and
whether the counts are estimates. For reference, it also times the exact per-type
count (``store.types()``) the overview avoids. A script, never a timed test.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import threading
import time
import uuid

import httpx
import psycopg
import uvicorn
from psycopg import sql

from benchmarks.server import server_dsn
from pgactors import Store
from pgactors.ui import create_app

TARGET_MS = 100.0
FILL = """
INSERT INTO {state} (type, id, version, data, created_at, updated_at)
SELECT 't' || lpad((n %% %(types)s)::text, 4, '0'), 'r' || n, 1,
       jsonb_build_object('n', n, 'level', n %% 7), now(), now()
FROM generate_series(1, %(records)s) AS n
"""


def fill(dsn: str, schema: str, records: int, types: int) -> float:
    """Insert the records in one statement; return the seconds it took."""
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET pgactors.changes = off")
        state = sql.Identifier(schema, "pgactors_state")
        conn.execute(sql.SQL(FILL).format(state=state), {"types": types, "records": records})
        conn.execute(sql.SQL("ANALYZE {}").format(state))
    return time.perf_counter() - started


class ReadyServer(uvicorn.Server):
    """A uvicorn server that says when it listens."""

    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


class Served:
    """uvicorn serving the dashboard of ``schema`` in a thread."""

    def __init__(self, dsn: str, schema: str, port: int) -> None:
        self.dsn, self.schema, self.port = dsn, schema, port
        self.ready = threading.Event()
        self.server: uvicorn.Server | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self.serve()), daemon=True)

    async def serve(self) -> None:
        async with await Store.connect(self.dsn, schema=self.schema) as store:
            config = uvicorn.Config(
                create_app(store), port=self.port, log_level="warning", lifespan="off"
            )
            self.server = ReadyServer(config, self.ready)
            await self.server.serve()

    def __enter__(self) -> Served:
        self.thread.start()
        if not self.ready.wait(60):
            raise RuntimeError("the dashboard did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.should_exit = True
        self.thread.join(30)


def timed_gets(client: httpx.Client, path: str, requests: int) -> list[float]:
    """Milliseconds per GET of ``path`` (after one warm-up)."""
    client.get(path).raise_for_status()
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        client.get(path).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return times


def report(path: str, times: list[float]) -> bool:
    """Print p50/p95/max; True if p95 is under the target."""
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    ok = p95 < TARGET_MS
    print(
        f"GET {path:<14} p50 {statistics.median(ordered):6.1f} ms   p95 {p95:6.1f} ms   "
        f"max {ordered[-1]:6.1f} ms   {'ok' if ok else 'OVER ' + str(TARGET_MS) + ' ms'}"
    )
    return ok


async def exact_counts_ms(dsn: str, schema: str) -> float:
    """One exact count per type (``store.types()``), for comparison."""
    async with await Store.connect(dsn, schema=schema) as store:
        started = time.perf_counter()
        await store.types()
        return (time.perf_counter() - started) * 1000


def main(args: argparse.Namespace) -> int:
    schema = f"bench_ui_{uuid.uuid4().hex[:8]}"
    with server_dsn(args.dsn, "pgactors-bench-ui-") as dsn:

        async def init() -> None:
            async with await Store.connect(dsn, schema=schema) as store:
                await store.init_schema()

        asyncio.run(init())
        try:
            seconds = fill(dsn, schema, args.records, args.types)
            print(f"{args.records:,} records over {args.types:,} types: filled in {seconds:.1f} s")
            ok = True
            with (
                Served(dsn, schema, args.port),
                httpx.Client(base_url=f"http://127.0.0.1:{args.port}") as client,
            ):
                body = client.get("/api/types").json()
                print(
                    f"/api/types lists {len(body['types']):,} types, estimated: {body['estimated']}"
                )
                for path in ("/", "/api/overview", "/api/types"):
                    ok &= report(path, timed_gets(client, path, args.requests))
            exact = asyncio.run(exact_counts_ms(dsn, schema))
            print(f"for reference, exact counts per type (store.types()): {exact:.0f} ms")
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    return 0 if ok else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ui", description=__doc__)
    parser.add_argument("--dsn", default=None, help="server (default: a new embedded one)")
    parser.add_argument("--records", type=int, default=1_000_000, help="records to create")
    parser.add_argument("--types", type=int, default=1000, help="types they spread over")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per address")
    parser.add_argument("--port", type=int, default=8479, help="port to serve on (127.0.0.1)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
