"""Failover: a synchronous standby of the embedded server, promoted after the primary is
SIGKILLed while writers run; the same Store and change feed follow it through the
multi-host DSN, and nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pgactors import Change, ServerError, Store, StoreUnavailable, SyncStore, VersionConflict
from pgactors.embedded import EmbeddedServer, bin_path
from pgactors.postgres.pool import MAX_RECONNECT_DELAY
from pgactors.standby import Standby, failover_dsn
from wheel_psql import psql

WRITERS = 8
# Writes acknowledged before the kill, and after the promotion, before the test stops.
BEFORE, AFTER = 150, 150
DEADLINE = 30.0
PGACTORS = shutil.which("pgactors", path=str(Path(sys.executable).parent)) or "pgactors"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[EmbeddedServer, Standby]]:
    """A running primary and its synchronous, streaming standby."""
    primary = EmbeddedServer(tmp_path / "primary")
    standby = Standby(primary, tmp_path / "standby")
    try:
        primary.start()
        standby.start()
        yield primary, standby
    finally:
        standby.stop()
        primary.stop()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition()`` until true; fail naming ``what`` after ``DEADLINE``."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@dataclass
class History:
    """What the writers know: acknowledged writes, and writes whose outcome is unknown."""

    # key -> (version, data) of every write that returned success, in order
    acked: dict[str, list[tuple[int, dict[str, int]]]] = field(default_factory=dict)
    # key -> data of writes that raised StoreUnavailable: maybe applied, maybe not
    unknown: dict[str, list[dict[str, int]]] = field(default_factory=dict)
    # (start, end) monotonic times of the writes that raised StoreUnavailable
    failed_at: list[tuple[float, float]] = field(default_factory=list)
    count: int = 0

    def ack(self, key: str, version: int, data: dict[str, int]) -> None:
        self.acked.setdefault(key, []).append((version, data))
        self.count += 1


async def writer(store: Store, n: int, history: History, stop: asyncio.Event) -> None:
    """Compare-and-set saves and updates of one key, retrying through the failover."""
    key = f"k{n}"
    known = 0  # the version this writer last saw
    i = 0
    while not stop.is_set():
        i += 1
        data = {"writer": n, "i": i}
        started = time.monotonic()
        try:
            if i % 3:
                record = await store.save("K", key, data, expected_version=known)
            else:
                record = await store.update("K", key, lambda _, new=data: new, default={})
            history.ack(key, record.version, data)
            known = record.version
        except StoreUnavailable:
            # The outcome is unknown: it may have committed. Never count it as lost.
            history.unknown.setdefault(key, []).append(data)
            history.failed_at.append((started, time.monotonic()))
            known = await reread(store, key, stop)
            await asyncio.sleep(0.02)
        except VersionConflict:
            known = await reread(store, key, stop)


async def reread(store: Store, key: str, stop: asyncio.Event) -> int:
    """The stored version of ``key``, retrying while the database is unreachable."""
    while True:
        try:
            record = await store.load("K", key)
            return record.version if record is not None else 0
        except StoreUnavailable:
            if stop.is_set():
                return 0
            await asyncio.sleep(0.02)


async def test_failover_loses_no_acknowledged_write_and_the_feed_has_no_gap(
    pair: tuple[EmbeddedServer, Standby],
) -> None:
    """The primary is SIGKILLed while writes wait for the standby to confirm their commit
    (the primary has them, the standby may not); the standby is promoted."""
    primary, standby = pair
    dsn = failover_dsn(primary, standby.server)
    assert psql(primary.dsn, "SELECT sync_state FROM pg_stat_replication") == "sync"
    history = History()
    received: list[Change] = []
    stop = asyncio.Event()
    async with await Store.connect(dsn, schema="failover") as store:
        await store.init_schema()
        stream = await store.changes().start()

        async def consume() -> None:
            async for change in stream:
                received.append(change)

        consumer = asyncio.create_task(consume())
        writers = [asyncio.create_task(writer(store, n, history, stop)) for n in range(WRITERS)]
        try:
            await until(lambda: history.count >= BEFORE, "writes before the kill")
            # Hold the standby's WAL receiver: commits now reach the primary's disk but
            # are not confirmed, so no write can be acknowledged until the standby has it.
            receiver = int(psql(standby.dsn, "SELECT pid FROM pg_stat_wal_receiver"))
            os.kill(receiver, signal.SIGSTOP)
            try:
                # Saves are batched, so one session waiting may hold several writers' saves.
                await until_waiting_for_standby(primary)
                acked_before_kill = history.count
                killed_at = time.monotonic()
                # In a thread: the writers' event loop goes on while the primary dies.
                await asyncio.to_thread(primary.kill)
            finally:
                os.kill(receiver, signal.SIGCONT)
            assert not primary.is_running()
            await asyncio.to_thread(standby.promote)
            promoted = history.count
            await until(lambda: history.count >= promoted + AFTER, "writes after the promotion")
        finally:
            stop.set()
            await asyncio.gather(*writers)
        # Writes were acknowledged before the kill and after it, and the writes in flight
        # when it came (waiting for the standby) failed with an unknown outcome.
        in_flight = [start for start, end in history.failed_at if start < killed_at < end]
        assert acked_before_kill >= BEFORE and history.count >= promoted + AFTER
        assert in_flight, history.failed_at

        # Every acknowledged write is on the new primary, reached by the same Store.
        assert psql(standby.dsn, "SELECT pg_is_in_recovery()") == "f"
        # A version acknowledged twice means the first of them was lost and its number
        # given again.
        for key, acks in history.acked.items():
            versions = [version for version, _ in acks]
            assert versions == sorted(set(versions)), f"{key}: acknowledged {versions}"
            record = await store.load("K", key)
            assert record is not None, key
            last, data = acks[-1]
            assert record.version >= last, f"{key}: acknowledged v{last}, found v{record.version}"
            possible = [data] if record.version == last else history.unknown.get(key, [])
            assert record.data in possible, f"{key} v{record.version}: {record.data}"

        # The feed followed the switch: contiguous positions, every acknowledged write.
        wanted = {(key, version) for key, acks in history.acked.items() for version, _ in acks}
        await until(lambda: wanted <= {(c.id, c.version) for c in received}, "the feed to catch up")
        await stream.close()
        await consumer
        feed = store._feed
        assert feed is not None and feed.reconnects >= 1
    positions = [c.position for c in received]
    assert positions == list(range(positions[0], positions[0] + len(positions)))
    last_seen: dict[str, int] = {}
    for change in received:
        assert change.version > last_seen.get(change.id, 0), "a version went backwards"
        last_seen[change.id] = change.version


async def until_waiting_for_standby(primary: EmbeddedServer) -> None:
    """Poll until a session on the primary waits for the standby to confirm its commit."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
    deadline = time.monotonic() + DEADLINE
    while int(await asyncio.to_thread(psql, primary.dsn, query)) < 1:
        assert time.monotonic() < deadline, "no write waited for the standby"
        await asyncio.sleep(0.01)


def test_a_synchronous_standby_holds_the_primarys_writes_until_released(
    pair: tuple[EmbeddedServer, Standby],
) -> None:
    primary, standby = pair
    standby.stop()
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
    argv = [str(bin_path("psql")), primary.dsn, "-X", "-c", "CREATE TABLE held (n int)"]
    write = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + DEADLINE
        while psql(primary.dsn, waiting) != "1":
            assert time.monotonic() < deadline, "the write did not wait for the standby"
            time.sleep(0.01)
        assert write.poll() is None  # committed on the primary, not acknowledged
        standby.set_synchronous(False)
        assert write.wait(DEADLINE) == 0
    finally:
        write.kill()
        write.wait()
    standby.start()  # streams again, asynchronously now
    assert psql(primary.dsn, "SELECT sync_state FROM pg_stat_replication") == "async"
    standby.set_synchronous(True)
    assert psql(primary.dsn, "SELECT sync_state FROM pg_stat_replication") == "sync"
    assert psql(standby.dsn, "SELECT count(*) FROM pg_class WHERE relname = 'held'") == "1"


async def test_a_commit_the_standby_never_confirmed_is_not_reported_as_a_success(
    pair: tuple[EmbeddedServer, Standby],
) -> None:
    """A cancel request ends a commit's wait for the standby with only a warning: the
    commit stays on the primary alone, and PostgreSQL reports success. Not to the store's
    callers: to them it is a write of unknown outcome."""
    primary, standby = pair
    dsn = failover_dsn(primary, standby.server)
    # statement_timeout does not end that wait (shown below): a cancel request does.
    async with await Store.connect(dsn, schema="unconfirmed", statement_timeout=0.2) as store:
        await store.init_schema()
        await asyncio.to_thread(standby.stop)
        try:
            for n, write in enumerate(
                [
                    lambda: store.save("K", "k", {"n": 1}),
                    lambda: store.update("K", "k", lambda _: {"n": 2}),
                ],
                start=1,
            ):
                pending = asyncio.create_task(write())
                deadline = time.monotonic() + DEADLINE
                while await asyncio.to_thread(psql, primary.dsn, WAITED_LONG) == "0":
                    assert time.monotonic() < deadline, "the write did not wait for the standby"
                assert not pending.done()
                await asyncio.to_thread(psql, primary.dsn, CANCEL_WAITING)
                with pytest.raises(StoreUnavailable, match="standby did not confirm"):
                    await pending
                # It did commit on the primary: unknown, not failed.
                record = await store.load("K", "k")
                assert record is not None and record.data == {"n": n}
        finally:
            # Else the store could not close: its last numbering of changes would wait.
            await asyncio.to_thread(standby.set_synchronous, False)
        assert (await store.save("K", "k", {"n": 3})).version == 3


# Sessions waiting for the standby for longer than the statement_timeout above.
WAITED_LONG = """SELECT count(*) FROM pg_stat_activity
WHERE wait_event = 'SyncRep' AND clock_timestamp() - query_start > interval '0.5 s'"""
CANCEL_WAITING = "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"


def test_standby_mistakes_are_refused_with_a_reason(tmp_path: Path) -> None:
    primary = EmbeddedServer(tmp_path / "p")
    with pytest.raises(ServerError, match="not running"):
        Standby(primary, tmp_path / "s").start()
    with pytest.raises(ServerError, match="lower-case letters"):
        Standby(primary, tmp_path / "s", name="Bad-Name")
    with pytest.raises(ServerError, match="of its own"):
        Standby(primary, tmp_path / "p")
    with pytest.raises(ServerError, match="not running"):
        failover_dsn(primary)


def test_promote_refuses_while_the_primary_runs(pair: tuple[EmbeddedServer, Standby]) -> None:
    _, standby = pair
    with pytest.raises(ServerError, match="still running"):
        standby.promote()
    assert standby.is_standby()
    assert psql(standby.dsn, "SELECT pg_is_in_recovery()") == "t"


async def test_the_pool_comes_back_soon_after_a_long_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """psycopg_pool doubles the wait between attempts to replace a lost connection (1, 2,
    4, 8 s...): after a failover that took 7 s it would stay away 8 s more. The store's
    pool waits at most MAX_RECONNECT_DELAY."""
    server = EmbeddedServer(tmp_path / "outage")
    server.start()
    try:
        # One connection, so that its attempts are the only ones and can be counted.
        config = {"pool_min_size": 1, "pool_max_size": 1}
        async with await Store.connect(server.dsn, schema="outage", **config) as store:
            await store.init_schema()
            await store.save("K", "k", {})
            await asyncio.to_thread(server.kill)
            load = asyncio.create_task(store.load("K", "k"))  # waits for a connection

            def attempts() -> int:
                return sum(r.getMessage().startswith("error connecting") for r in caplog.records)

            # Uncapped, the 4th attempt comes 7 s after the loss and the 5th at 15 s.
            await until(lambda: attempts() >= 4, "four failed attempts to reconnect")
            await asyncio.to_thread(server.start)
            started = time.monotonic()
            assert await load is not None
            assert time.monotonic() - started < MAX_RECONNECT_DELAY + 1.5
    finally:
        server.stop()


def cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run the ``pgactors`` command as a user would, on the embedded server of ``data_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGACTORS_", "PG"))}
    env["PGACTORS_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [PGACTORS, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_cli_standby_and_promote(tmp_path: Path) -> None:
    primary, standby = EmbeddedServer(tmp_path / "p"), EmbeddedServer(tmp_path / "s")
    second = EmbeddedServer(tmp_path / "s2")
    try:
        assert cli("server", "start", data_dir=primary.data_dir).returncode == 0
        made = cli("server", "standby", str(standby.data_dir), data_dir=primary.data_dir)
        assert made.returncode == 0, made.stderr
        assert f"synchronous standby started: {standby.data_dir}" in made.stdout
        dsn = made.stdout.splitlines()[-1]
        assert dsn == failover_dsn(primary, standby)
        psql(dsn, "CREATE TABLE t (n int); INSERT INTO t VALUES (1)")
        assert psql(standby.dsn, "SELECT pg_is_in_recovery(), count(*) FROM t") == "t|1"

        refused = cli("server", "promote", str(standby.data_dir), data_dir=primary.data_dir)
        assert refused.returncode == 2 and "still running" in refused.stderr
        primary.kill()
        # Nothing takes writes until the standby is promoted, and the error says so.
        with pytest.raises(StoreUnavailable, match="read-only until promoted"):
            SyncStore.connect(dsn, connect_timeout=5)
        promoted = cli("server", "promote", str(standby.data_dir), data_dir=primary.data_dir)
        assert promoted.returncode == 0, promoted.stderr
        assert promoted.stdout.splitlines()[-1] == standby.dsn
        assert psql(dsn, "INSERT INTO t VALUES (2); SELECT count(*) FROM t") == "INSERT 0 1\n2"

        # The promoted server gets a standby of its own, ready for the next failover.
        again = cli("server", "standby", str(second.data_dir), data_dir=standby.data_dir)
        assert again.returncode == 0, again.stderr
        assert psql(standby.dsn, "SELECT sync_state FROM pg_stat_replication") == "sync"
        psql(again.stdout.splitlines()[-1], "INSERT INTO t VALUES (3)")
        assert psql(second.dsn, "SELECT pg_is_in_recovery(), count(*) FROM t") == "t|3"
    finally:
        second.stop()
        standby.stop()
        primary.stop()
