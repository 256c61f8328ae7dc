"""The change feed: ordering, gap-free catch-up, crashes, retention, notifications."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pgactors import (
    Change,
    ChangesExpired,
    ChangesLost,
    ChangeStream,
    InMemoryStore,
    InvalidInput,
    Store,
    StoreConfig,
    StoreUnavailable,
)
from pgactors.changes import parse_range, range_payload
from pgactors.embedded import EmbeddedServer

TIMEOUT = 15


async def take(stream: ChangeStream, n: int) -> list[Change]:
    got: list[Change] = []

    async def read() -> None:
        async for change in stream:
            got.append(change)
            if len(got) == n:
                return

    await asyncio.wait_for(read(), TIMEOUT)
    return got


async def nothing_more(stream: ChangeStream, wait: float = 1.5) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(stream.__anext__(), wait)


def keys(changes: list[Change]) -> list[tuple[str, str, str, int]]:
    return [(c.op, c.type, c.id, c.version) for c in changes]


# -- both backends ---------------------------------------------------------------------


async def test_saves_deletes_and_batches_in_order(store: Store) -> None:
    async with store.changes() as stream:
        await store.save("U", "a", {"n": 1})
        await store.save("U", "a", {"n": 2})
        assert await store.delete("U", "a")
        await store.save_many("U", {"b": 1, "c": 2})
        assert await store.delete_many("U", ["b", "c", "zz"]) == 2
        got = await take(stream, 7)
    assert keys(got) == [
        ("save", "U", "a", 1),
        ("save", "U", "a", 2),
        ("delete", "U", "a", 2),
        ("save", "U", "b", 1),
        ("save", "U", "c", 1),
        ("delete", "U", "b", 1),
        ("delete", "U", "c", 1),
    ]
    positions = [c.position for c in got]
    assert positions == sorted(positions) and len(set(positions)) == 7
    assert all(c.at.tzinfo is not None for c in got)


async def test_rolled_back_writes_produce_nothing(store: Store) -> None:
    async with store.changes() as stream:
        with pytest.raises(RuntimeError):
            async with store.transaction() as tx:
                await tx.save("U", "ghost", {})
                raise RuntimeError("roll back")
        await store.save("U", "real", {})
        got = await take(stream, 1)
        assert keys(got) == [("save", "U", "real", 1)]
        await nothing_more(stream)


async def test_several_updates_in_one_transaction_end_at_final_version(store: Store) -> None:
    async with store.changes() as stream:
        async with store.transaction() as tx:
            for n in range(4):
                await tx.save("U", "multi", {"n": n})
        got = await take(stream, 4)
    assert [c.version for c in got] == [1, 2, 3, 4]
    assert got[-1].version == (await store.load("U", "multi")).version  # type: ignore[union-attr]


async def test_resume_from_stored_position_gives_exactly_the_rest(store: Store) -> None:
    for n in range(10):
        await store.save("U", f"r{n}", {"n": n})
    async with store.changes(since=0) as stream:
        first = await take(stream, 10)
    stored = str(first[3].position)  # positions survive being stored as text
    async with store.changes(since=int(stored)) as resumed:
        rest = await take(resumed, 6)
        await nothing_more(resumed, 0.5)
    assert [c.id for c in rest] == [f"r{n}" for n in range(4, 10)]
    assert rest == first[4:]


async def test_type_filter(store: Store) -> None:
    async with store.changes(["Room"]) as stream:
        await store.save("User", "u", {})
        await store.save("Room", "r", {})
        await store.save("User", "u2", {})
        await store.save("Room", "r2", {})
        got = await take(stream, 2)
        await nothing_more(stream, 0.5)
    assert [c.id for c in got] == ["r", "r2"]


async def test_several_streams_fan_out(store: Store) -> None:
    a, b = store.changes(), store.changes("U")
    async with a, b:
        await store.save("U", "x", {})
        await store.save("V", "y", {})
        assert [c.id for c in await take(a, 2)] == ["x", "y"]
        assert [c.id for c in await take(b, 1)] == ["x"]


async def test_closing_the_store_ends_open_streams(store: Store) -> None:
    stream = await store.changes().start()
    await store.save("U", "last", {})
    assert [c.id for c in await take(stream, 1)] == ["last"]
    assert store._feed is not None
    await store._feed.close()
    remaining = [c async for c in stream]
    assert remaining == []


async def test_concurrent_first_reads_subscribe_once(store: Store) -> None:
    stream = store.changes()
    await asyncio.gather(*(stream.start() for _ in range(5)))
    assert store._feed is not None and len(store._feed._subscribers) == 1
    await store.save("U", "once", {})
    assert [c.id for c in await take(stream, 1)] == ["once"]
    await stream.close()


async def test_bad_since_and_types_refused(store: Store) -> None:
    with pytest.raises(InvalidInput):
        await store.changes(since=-1).start()
    with pytest.raises(InvalidInput):
        await store.changes(["9bad"]).start()


@pytest.fixture(params=["memory", "postgres"])
async def short_retention_store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    config = StoreConfig(changes_retention=1)
    if request.param == "memory":
        yield InMemoryStore(config)
        return
    dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("schema_name")
    async with await Store.connect(config.replace(dsn=dsn, schema=schema)) as store:
        await store.init_schema()
        yield store


async def test_subscriber_past_retention_gets_changes_expired(
    short_retention_store: Store,
) -> None:
    store = short_retention_store
    await store.save("U", "old1", {})
    await store.save("U", "old2", {})
    async with store.changes(since=0) as stream:
        first = await take(stream, 2)
    await asyncio.sleep(1.3)
    await store.prune_changes()
    assert (await store.feed_stats()).pruned_through == first[1].position
    with pytest.raises(ChangesExpired) as info:
        await store.changes(since=first[0].position).start()
    assert info.value.since == first[0].position
    async with store.changes(since=0) as from_oldest:
        await store.save("U", "new", {})
        assert [c.id for c in await take(from_oldest, 1)] == ["new"]


async def test_resume_point_beyond_the_log_is_changes_lost(store: Store) -> None:
    """A consumer's position beyond the newest change means changes it saw are gone
    (a failover to a standby that had not received them): positions after it may be
    numbered again, so resuming there would silently skip the new ones."""
    await store.save("U", "a", {})
    async with store.changes(since=0) as stream:
        (seen,) = await take(stream, 1)
    with pytest.raises(ChangesLost) as info:
        await store.changes(since=seen.position + 5).start()
    assert info.value.since == seen.position + 5 and info.value.oldest == seen.position
    assert isinstance(info.value, ChangesExpired)  # handled as an expired resume point
    async with store.changes(since=seen.position) as stream:  # the newest: fine
        await store.save("U", "b", {})
        assert [c.id for c in await take(stream, 1)] == ["b"]


# -- PostgreSQL ----------------------------------------------------------------------------


async def test_slow_transaction_with_earlier_number_commits_later(
    pg_store: Store, pg_dsn: str
) -> None:
    """A naive `seq > last` reader skips A; commit-ordered positions must not."""
    table = sql.Identifier(pg_store.config.schema, "pgactors_state")
    insert = sql.SQL("INSERT INTO {} (type, id, version, data) VALUES ('U', %s, 1, '{{}}')").format(
        table
    )
    async with pg_store.changes() as stream:
        async with await psycopg.AsyncConnection.connect(pg_dsn) as slow:
            await slow.execute(insert, ["A-early-number"])  # takes the lower log number
            await pg_store.save("U", "B", {})
            await pg_store.save("U", "C", {})
            early = await take(stream, 2)
            assert [c.id for c in early] == ["B", "C"]
            await slow.commit()
        await pg_store.sequence_changes()
        late = await take(stream, 1)
    assert late[0].id == "A-early-number"
    assert late[0].position == early[-1].position + 1


async def test_a_store_that_only_listens_numbers_writes_nobody_numbered(
    pg_store: Store, pg_dsn: str
) -> None:
    """Plain psycopg writers (or a writer that died right after committing) leave their
    changes unnumbered; a store that only listens numbers and delivers them."""
    table = sql.Identifier(pg_store.config.schema, "pgactors_state")
    insert = sql.SQL("INSERT INTO {} (type, id, version, data) VALUES ('P', %s, 1, '{{}}')")
    async with pg_store.changes("P") as stream:
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as plain:
            for id in ("p1", "p2", "p3"):
                await plain.execute(insert.format(table), [id])
        # Nothing here writes through a store or calls sequence_changes, so only the
        # listening store's polls can number (and then deliver) these changes.
        got = await take(stream, 3)
    assert [(c.id, c.op) for c in got] == [("p1", "save"), ("p2", "save"), ("p3", "save")]
    assert [c.position for c in got] == list(range(got[0].position, got[0].position + 3))


async def _notifications_until_marker(conn: psycopg.AsyncConnection[object]) -> list[str]:
    """The payloads on pgactors_changes before a marker, sent now, comes back: NOTIFY
    delivers in commit order, so nothing sent earlier can still be on its way."""
    marker = f"marker-{time.monotonic_ns()}"
    async with await psycopg.AsyncConnection.connect(conn.info.dsn, autocommit=True) as other:
        await other.execute("SELECT pg_notify('pgactors_changes', %s)", [marker])
    received: list[str] = []
    deadline = time.monotonic() + TIMEOUT
    while marker not in received:
        assert time.monotonic() < deadline, f"the marker never came back: {received}"
        notifies = conn.notifies(timeout=0.5, stop_after=1)
        received += [n.payload async for n in notifies if n.channel == "pgactors_changes"]
    return received[: received.index(marker)]


async def _read_range(
    conn: psycopg.AsyncConnection[object], schema: str, payload: str
) -> list[tuple[object, ...]]:
    """What a plain LISTEN client does with a notification: read the range from the log."""
    bounds = json.loads(payload)
    cur = await conn.execute(
        sql.SQL(
            "SELECT position, type, id, version, op FROM {} "
            "WHERE position BETWEEN %s AND %s ORDER BY position"
        ).format(sql.Identifier(schema, "pgactors_changes")),
        [bounds["from"], bounds["to"]],
    )
    return await cur.fetchall()


async def test_plain_listen_sees_a_range_then_reads_keys_not_state(
    pg_store: Store, pg_dsn: str
) -> None:
    big = {"blob": "x" * 20_000}
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute("LISTEN pgactors_changes")
        await pg_store.save("Big", "b1", big)
        # The save's own pass runs in the background: this one follows it.
        await pg_store.sequence_changes()
        received = await _notifications_until_marker(conn)
        assert len(received) == 1
        payload = json.loads(received[0])
        assert set(payload) == {"from", "to"}
        assert payload["from"] == payload["to"]
        rows = await _read_range(conn, pg_store.config.schema, received[0])
    assert rows == [(payload["from"], "Big", "b1", 1, "save")]
    assert "x" * 100 not in received[0]


async def test_one_notification_per_numbering_pass(pg_store: Store, pg_dsn: str) -> None:
    """Many changes numbered by one pass: one notification, naming all of them."""
    table = sql.Identifier(pg_store.config.schema, "pgactors_state")
    insert = sql.SQL("INSERT INTO {} (type, id, version, data) VALUES ('N', %s, 1, '{{}}')")
    writes = 40
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute("LISTEN pgactors_changes")
        # Plain writes, one transaction each: nobody numbers them until we ask.
        for n in range(writes):
            await conn.execute(insert.format(table), [f"n{n}"])
        assert await pg_store.sequence_changes() == writes
        received = await _notifications_until_marker(conn)
        assert len(received) == 1, received
        rows = await _read_range(conn, pg_store.config.schema, received[0])
    assert [r[2] for r in rows] == [f"n{n}" for n in range(writes)]
    assert [r[0] for r in rows] == list(range(rows[0][0], rows[0][0] + writes))


async def test_memory_backend_notifies_one_range_per_batch() -> None:
    store = InMemoryStore()
    listener = store._backend.feed.feed_listener()  # type: ignore[attr-defined]
    await listener.connect()
    try:
        await store.save("M", "first", {})
        await store.save_many("M", {f"k{n}": n for n in range(5)})
        payloads = await listener.wait(1.0)
    finally:
        await listener.close()
    assert [parse_range(p) for p in payloads] == [(1, 1), (2, 6)]


async def test_upgrade_keeps_numbered_changes_and_numbers_the_rest(
    pg_dsn: str, schema_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log from before 0008 (numbered by UPDATE) is moved to the lean layout in place."""
    from pgactors import schema as schema_module

    before = tuple(m for m in schema_module.migrations() if m.version < 8)
    monkeypatch.setattr(schema_module, "migrations", lambda: before)
    async with await Store.connect(pg_dsn, schema=schema_name) as old:
        assert await old.init_schema() == len(before)
    state = sql.Identifier(schema_name, "pgactors_state")
    insert = sql.SQL("INSERT INTO {} (type, id, version, data) VALUES ('O', %s, 1, '{{}}')")
    old_sequencer = sql.SQL("SELECT {}('pgactors_changes', 2)").format(
        sql.Identifier(schema_name, "pgactors_sequence_changes")
    )
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        for id in ("o1", "o2", "o3"):
            await conn.execute(insert.format(state), [id])
        await conn.execute(old_sequencer)  # numbers o1 and o2 only; o3 is left pending
    monkeypatch.undo()
    async with await Store.connect(pg_dsn, schema=schema_name) as store:
        assert await store.init_schema() == len(schema_module.migrations()) - len(before)
        assert all(present for _, _, present in await store.verify_schema())
        async with store.changes(since=0) as stream:
            await store.save("O", "o4", {})
            got = await take(stream, 4)
    assert [(c.id, c.position) for c in got] == [("o1", 1), ("o2", 2), ("o3", 3), ("o4", 4)]


async def test_writes_from_another_store_instance(pg_store: Store, pg_dsn: str) -> None:
    other = await Store.connect(pg_dsn, schema=pg_store.config.schema)
    async with other, pg_store.changes() as stream:
        await other.save("U", "from-other", {"v": 1})
        got = await take(stream, 1)
    assert got[0].id == "from-other"


async def test_in_memory_changes_off_logs_nothing() -> None:
    store = InMemoryStore(StoreConfig(changes=False))
    await store.save("U", "silent", {})
    assert (await store.feed_stats()).rows == 0


async def test_changes_off_writes_nothing_to_the_log(pg_store: Store, pg_dsn: str) -> None:
    quiet = await Store.connect(pg_dsn, schema=pg_store.config.schema, changes=False)
    async with quiet, pg_store.changes() as stream:
        await quiet.save("U", "silent", {})
        await pg_store.save("U", "loud", {})
        got = await take(stream, 1)
        await nothing_more(stream, 0.5)
    assert got[0].id == "loud"
    assert (await pg_store.feed_stats()).rows == 1


async def test_postgres_sends_the_payload_the_memory_backend_sends(pg_store: Store) -> None:
    """The range payload is built in SQL (``sequence_changes``) and in Python
    (``range_payload``, for the in-memory twin): they must carry the same fields."""
    listener = pg_store._backend.feed.feed_listener()  # type: ignore[attr-defined]
    await listener.connect()
    try:
        await pg_store.save_many("P", {"one": 1, "two": 2, "three": 3})
        deadline = time.monotonic() + 10
        payloads: list[str] = []
        while not payloads:
            assert time.monotonic() < deadline, "no notification arrived"
            payloads = await listener.wait(0.5)
    finally:
        await listener.close()
    head, _ = await pg_store._backend.feed.feed_state()  # type: ignore[attr-defined]
    assert parse_range(payloads[0]) == (head - 2, head)
    assert json.loads(payloads[0]) == json.loads(range_payload(head - 2, head))
    assert parse_range("not json") is None and parse_range('{"position": 3}') is None


WRITER = """
import asyncio, sys
from pgactors import Store, StoreUnavailable

async def main(dsn, schema, n):
    store = None
    unsure = False
    for i in range(n):
        while True:
            try:
                if store is None:
                    store = await Store.connect(dsn, schema=schema, connect_timeout=2)
                if unsure:
                    # The connection died mid-save: it may have committed. Saving again
                    # would be a second write, so look first.
                    record = await store.load("K", f"k{i % 7}")
                    unsure = False
                    if record is not None and record.data == {"i": i}:
                        print(i, flush=True)
                        break
                await store.save("K", f"k{i % 7}", {"i": i})
                print(i, flush=True)
                break
            except StoreUnavailable:
                unsure = True
                await asyncio.sleep(0.2)
        await asyncio.sleep(0.005)
    await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


@pytest.mark.slow
async def test_server_crash_loses_no_acknowledged_change(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path / "crash")
    server.start()
    writes, kill_after = 300, 100
    try:
        async with await Store.connect(server.dsn, schema="crash") as store:
            await store.init_schema()
            stream = await store.changes().start()
            writer = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                WRITER,
                server.dsn,
                "crash",
                str(writes),
                stdout=subprocess.PIPE,
                env=os.environ.copy(),
            )
            acknowledged: list[str] = []

            async def read_acks() -> None:
                assert writer.stdout is not None
                async for line in writer.stdout:
                    acknowledged.append(line.decode().strip())

            received: list[Change] = []

            async def consume() -> None:
                async for change in stream:
                    received.append(change)
                    if len(received) >= writes:
                        return

            reader = asyncio.create_task(read_acks())
            consumer = asyncio.create_task(consume())
            deadline = time.monotonic() + 60
            while len(acknowledged) < kill_after:  # the crash comes mid-stream of writes
                assert time.monotonic() < deadline, "the writer never got going"
                await asyncio.sleep(0.01)
            before_kill = len(acknowledged)
            server.kill()
            server.start()
            assert await asyncio.wait_for(writer.wait(), 120) == 0
            await reader
            # Writes were acknowledged before the kill and after it.
            assert kill_after <= before_kill < writes and len(acknowledged) == writes
            await asyncio.wait_for(consumer, 60)
            await stream.close()
            feed = store._feed
            assert feed is not None and feed.reconnects >= 1  # the stream lived through it
    finally:
        server.stop()
    seen: dict[str, int] = {}
    for change in received:
        assert change.version > seen.get(change.id, 0), "a version went backwards"
        seen[change.id] = change.version
    positions = [c.position for c in received]
    assert positions == sorted(set(positions))
    final_versions = {f"k{k}": len(range(k, writes, 7)) for k in range(7)}
    assert seen == final_versions


async def test_store_unavailable_is_not_raised_to_streams(tmp_path: Path) -> None:
    """A stream waits through an outage and catches up; it does not die."""
    server = EmbeddedServer(tmp_path / "outage")
    server.start()
    try:
        async with await Store.connect(server.dsn, schema="outage") as store:
            await store.init_schema()
            async with store.changes() as stream:
                await store.save("U", "before", {})
                assert [c.id for c in await take(stream, 1)] == ["before"]
                server.stop()
                with pytest.raises(StoreUnavailable):
                    await store.save("U", "during", {})
                server.start()
                for _ in range(100):
                    try:
                        await store.save("U", "after", {})
                        break
                    except StoreUnavailable:
                        await asyncio.sleep(0.1)
                got = await take(stream, 1)
                assert got[0].id == "after"
                assert store._feed is not None and store._feed.reconnects >= 1
    finally:
        server.stop()


def test_watch_command_streams_changes(pg_dsn: str, pg_store_sync: object) -> None:
    pgactors = shutil.which("pgactors", path=str(Path(sys.executable).parent)) or "pgactors"
    schema = pg_store_sync.config.schema  # type: ignore[attr-defined]
    env = {**os.environ, "PGACTORS_DSN": pg_dsn, "PGACTORS_SCHEMA": schema}
    pg_store_sync.save("User", "w1", {"a": 1})  # type: ignore[attr-defined]
    proc = subprocess.Popen(
        [pgactors, "watch", "User", "--since", "0", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        pg_store_sync.delete("User", "w1")  # type: ignore[attr-defined]
        second = proc.stdout.readline()  # type: ignore[union-attr]
    finally:
        proc.terminate()
        proc.wait(10)
    first_change = json.loads(line)
    assert (first_change["op"], first_change["id"], first_change["version"]) == ("save", "w1", 1)
    assert json.loads(second)["op"] == "delete"


async def test_a_close_cancelled_midway_does_not_stop_the_next_stream() -> None:
    # A web server cancels a stream's body when its client goes away, and (anyio)
    # cancels every await of the cleanup too: the feed must still serve new streams.
    import anyio

    store = InMemoryStore()
    stream = await store.changes("t").start()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await stream.close()
    async with store.changes("t") as again:
        await store.save("t", "a", {})
        change = await asyncio.wait_for(anext(aiter(again)), 5)
    assert change.id == "a"


@pytest.mark.parametrize("store", ["memory", "postgres"], indirect=True)
async def test_a_stream_subscribing_while_the_last_one_closes_lives(store: Store) -> None:
    first = await store.changes().start()
    closing = asyncio.create_task(first.close())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not closing.done()  # the last stream is still stopping the listener
    async with store.changes() as second:
        await closing
        await store.save("T", "after", {})
        change = await asyncio.wait_for(anext(second), 15)
        assert (change.type, change.id) == ("T", "after")
