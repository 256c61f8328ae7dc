"""How often a writing store numbers its changes: promptly while a listener waits for
them, sparingly while none does. Each numbering pass stamps its changes with one time,
so the distinct stamps in the log count the passes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import sql

from pgactors import Store, StoreConfig
from pgactors.changes import Sequencer
from pgactors.postgres import backend
from pgactors.postgres.backend import SEQUENCE_INTERVAL, SEQUENCE_QUIET_INTERVAL
from pgactors.postgres.feed import listener_name

CALLERS = 16
TIMEOUT = 15.0


# -- the sequencer alone ------------------------------------------------------------------


class FakeRuns:
    def __init__(self) -> None:
        self.times: list[float] = []
        self.listening = False
        self.rate = 0.0  # changes a second written, if more than one per run

    async def run(self) -> int:
        now = asyncio.get_running_loop().time()
        since = now - self.times[-1] if self.times else 0.0
        self.times.append(now)
        return max(1, round(self.rate * since))

    async def listened(self) -> bool:
        return self.listening


async def kick_for(sequencer: Sequencer, seconds: float) -> None:
    """A stream of writes: one kick every loop turn."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        sequencer.kick()
        await asyncio.sleep(0)  # a kick every loop turn
    await sequencer.drain()


async def test_runs_are_spaced_by_whether_anyone_listens() -> None:
    runs = FakeRuns()
    sequencer = Sequencer(
        runs.run, max_rows=100, min_interval=0.002, quiet_interval=0.05, listened=runs.listened
    )
    await kick_for(sequencer, 0.5)
    quiet = len(runs.times)
    gaps = [b - a for a, b in zip(runs.times, runs.times[1:], strict=False)]
    assert quiet >= 2, runs.times
    assert min(gaps) >= 0.05 - 0.001, gaps
    assert quiet <= 0.5 / 0.05 + 3, quiet  # the first, one per interval, the one after

    runs.times.clear()
    runs.listening = True
    await kick_for(sequencer, 0.5)
    gaps = [b - a for a, b in zip(runs.times, runs.times[1:], strict=False)]
    assert len(runs.times) > 3 * quiet, (len(runs.times), quiet)
    assert min(gaps) >= 0.002 - 0.001, gaps


async def test_a_heavy_stream_spaces_listened_runs_further() -> None:
    runs = FakeRuns()
    runs.listening = True
    sequencer = Sequencer(
        runs.run,
        max_rows=10_000,
        min_interval=0.002,
        quiet_interval=0.05,
        heavy=(5000.0, 0.02),
        listened=runs.listened,
    )
    await kick_for(sequencer, 0.3)
    light = len(runs.times)
    runs.times.clear()
    runs.rate = 10_000.0
    await kick_for(sequencer, 0.5)
    gaps = [b - a for a, b in zip(runs.times, runs.times[1:], strict=False)]
    assert min(gaps[1:]) >= 0.02 - 0.001, gaps  # the first follows the light spacing
    assert len(runs.times) <= 0.5 / 0.02 + 3, len(runs.times)
    # Light again: runs are prompt once more.
    runs.times.clear()
    runs.rate = 0.0
    await kick_for(sequencer, 0.3)
    assert len(runs.times) > 3 * (0.3 / 0.02 + 3), (len(runs.times), light)


async def test_a_lone_write_after_a_pause_is_numbered_at_once() -> None:
    runs = FakeRuns()
    quiet = 0.5
    sequencer = Sequencer(
        runs.run, max_rows=100, min_interval=0.002, quiet_interval=quiet, listened=runs.listened
    )
    loop = asyncio.get_running_loop()
    sequencer.kick()
    await sequencer.drain()
    # No stream any more: the last run is further back than the spacing.
    await asyncio.sleep(runs.times[-1] + quiet - loop.time())
    kicked = loop.time()
    sequencer.kick()
    await sequencer.drain()
    assert len(runs.times) == 2
    assert runs.times[1] - kicked < quiet / 2, runs.times[1] - kicked


# -- on PostgreSQL ----------------------------------------------------------------------


@pytest.fixture
async def writer(pg_dsn: str, schema_name: str) -> AsyncIterator[Store]:
    """A store with the default configuration, on a channel of its own (so that no other
    test's listener counts)."""
    async with await Store.connect(pg_dsn, schema=schema_name, channel=f"ch_{schema_name}") as st:
        await st.init_schema()
        yield st


async def passes_during_saves(store: Store, dsn: str, seconds: float) -> tuple[int, float]:
    """Save from CALLERS tasks for ``seconds``; the numbering passes that numbered those
    saves (distinct stamps of their changes), and how long the saves ran."""
    kind = f"T{time.monotonic_ns()}"
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + seconds

    async def caller(n: int) -> None:
        k = 0
        while loop.time() < end:
            await store.save(kind, f"{n}-{k % 20}", {"k": k})
            k += 1

    await asyncio.gather(*(caller(n) for n in range(CALLERS)))
    elapsed = loop.time() - start
    await store.sequence_changes()
    table = sql.Identifier(store.config.schema, "pgactors_changes")
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            sql.SQL("SELECT count(DISTINCT at), count(*) FROM {} WHERE type = %s").format(table),
            [kind],
        )
        row = await cur.fetchone()
    assert row is not None and row[1] > CALLERS, row  # the saves did run, and were logged
    return int(row[0]), elapsed


def quiet_bound(elapsed: float) -> float:
    # One pass per quiet interval, one when the stream began, the final one, and one
    # for a pass that starts as the saves end, before the final one takes the lock.
    return elapsed / SEQUENCE_QUIET_INTERVAL + 3


async def until_numbering(store: Store, dsn: str, *, prompt: bool) -> None:
    """Stream saves in half-second windows until the passes are prompt (more than three
    times the quiet bound) or quiet (within it), or fail after TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        passes, elapsed = await passes_during_saves(store, dsn, 0.5)
        if (passes > 3 * quiet_bound(elapsed)) if prompt else (passes <= quiet_bound(elapsed)):
            return
        assert time.monotonic() < deadline, f"still {passes} passes in {elapsed:.2f} s"


async def test_without_a_listener_writes_are_numbered_sparingly(writer: Store, pg_dsn: str) -> None:
    passes, elapsed = await passes_during_saves(writer, pg_dsn, 1.0)
    assert passes <= quiet_bound(elapsed), (passes, elapsed)


async def test_a_stream_of_this_store_gets_prompt_numbering(writer: Store, pg_dsn: str) -> None:
    async with writer.changes() as stream:
        passes, elapsed = await passes_during_saves(writer, pg_dsn, 1.0)
        assert stream.position is not None
    # Every 2 ms, or 10 ms if the saves come faster than 8,000 a second: well beyond
    # what the quiet spacing allows.
    assert passes > 3 * quiet_bound(elapsed), (passes, elapsed)
    assert SEQUENCE_INTERVAL < SEQUENCE_QUIET_INTERVAL


async def test_a_listener_elsewhere_gets_prompt_numbering(
    writer: Store, pg_dsn: str, schema_name: str
) -> None:
    passes, elapsed = await passes_during_saves(writer, pg_dsn, 0.5)
    assert passes <= quiet_bound(elapsed), (passes, elapsed)
    # Another process's store, as the server sees it: its own connections.
    async with (
        await Store.connect(pg_dsn, schema=schema_name, channel=writer.config.channel) as other,
        other.changes(),
    ):
        await until_numbering(writer, pg_dsn, prompt=True)
    # Once it is gone, the writer learns it within LISTENED_TTL and goes quiet again.
    await until_numbering(writer, pg_dsn, prompt=False)


async def test_a_plain_listen_client_named_as_a_listener_counts(writer: Store, pg_dsn: str) -> None:
    name = listener_name(StoreConfig.resolve(pg_dsn, channel=writer.config.channel))
    async with await psycopg.AsyncConnection.connect(
        pg_dsn, autocommit=True, application_name=name
    ) as conn:
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(writer.config.channel)))
        await until_numbering(writer, pg_dsn, prompt=True)


async def test_a_heavy_stream_is_numbered_every_heavy_interval(
    pg_dsn: str, schema_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any stream is heavy at 1 change a second, whatever this machine's pace.
    monkeypatch.setattr(backend, "SEQUENCE_HEAVY_RATE", 1.0)
    channel = f"ch_{schema_name}"
    async with await Store.connect(pg_dsn, schema=schema_name, channel=channel) as writer:
        await writer.init_schema()
        async with writer.changes():
            passes, elapsed = await passes_during_saves(writer, pg_dsn, 1.0)
    assert passes <= elapsed / backend.SEQUENCE_HEAVY_INTERVAL + 3, (passes, elapsed)
    assert passes > 2 * quiet_bound(elapsed), (passes, elapsed)  # still prompt
