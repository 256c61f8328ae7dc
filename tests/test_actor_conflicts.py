"""Actors under conflicts, with default settings: write-behind flushes that lose, turns
that keep losing the compare-and-set race, and calls that raise."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import psycopg
import pytest

from pgactors import PgActorsError, Store, VersionConflict
from pgactors.actors import PESSIMISTIC_AFTER, Actor, ActorSystem


@dataclass
class CounterState:
    n: int = 0


class Tally(Actor[CounterState]):
    persistence = "write_behind"

    async def add(self, k: int) -> int:
        self.state.n += k
        return self.state.n

    async def get(self) -> int:
        return self.state.n


async def _until(condition: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_lost_flush_is_counted_once_and_the_committed_state_wins(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    system = ActorSystem(store, flush_interval=3600, follow_changes=False)
    ref = system.actor(Tally, "t")
    await ref.add(1)
    await system.flush()
    await ref.add(5)  # dirty: 6 in memory, 1 stored
    await store.save("Tally", "t", {"n": 100}, expected_version=1)  # another instance wins
    with caplog.at_level(logging.WARNING, logger="pgactors.actors"):
        await system.flush()
        await system.flush()
        await system.flush()
    assert system.flush_conflicts == 1
    assert sum("lost to a concurrent change" in r.getMessage() for r in caplog.records) == 1
    assert await ref.get() == 100  # reloaded: the committed state won
    assert await ref.add(1) == 101
    await system.shutdown()
    assert (await store.load("Tally", "t")).data == {"n": 101}  # type: ignore[union-attr]
    assert system.flush_conflicts == 1


async def test_shutdown_flushes_every_other_actor_when_one_lost(store: Store) -> None:
    system = ActorSystem(store, flush_interval=3600, follow_changes=False)
    refs = [system.actor(Tally, f"a{n}") for n in range(5)]
    for ref in refs:
        await ref.add(1)
    await system.flush()
    for ref in refs:
        await ref.add(1)
    await store.save("Tally", "a2", {"n": 50}, expected_version=1)
    await system.shutdown()  # does not raise
    stored = await store.load_many("Tally", [f"a{n}" for n in range(5)])
    assert {k: r.data["n"] for k, r in stored.items()} == {  # type: ignore[call-overload, index]
        "a0": 2,
        "a1": 2,
        "a2": 50,
        "a3": 2,
        "a4": 2,
    }
    assert system.flush_conflicts == 1


async def test_background_work_survives_conflicts_and_failing_hooks(store: Store) -> None:
    class Fragile(Actor[CounterState]):
        persistence = "write_behind"
        fail = True

        async def add(self, k: int) -> int:
            self.state.n += k
            return self.state.n

        async def on_deactivate(self) -> None:
            if Fragile.fail:
                Fragile.fail = False
                raise RuntimeError("hook failed once")

    system = ActorSystem(store, flush_interval=0.02, idle_timeout=0.05, follow_changes=False)
    lost = system.actor(Tally, "lost")
    await lost.add(1)
    await _until(lambda: system.active == 0)  # flushed and deactivated
    await lost.add(1)  # active again, dirty
    await store.save("Tally", "lost", {"n": 7})  # its next flush conflicts
    await _until(lambda: system.flush_conflicts == 1)
    await system.actor(Fragile, "f").add(3)  # its first deactivation raises
    later = system.actor(Tally, "later")
    await later.add(2)
    # The background task is still flushing and deactivating after both.
    await _until(lambda: system.active == 0)
    assert system._background is not None and not system._background.done()
    assert (await store.load("Tally", "later")).data == {"n": 2}  # type: ignore[union-attr]
    assert (await store.load("Fragile", "f")).data == {"n": 3}  # type: ignore[union-attr]
    assert (await store.load("Tally", "lost")).data == {"n": 7}  # type: ignore[union-attr]
    assert system.flush_conflicts == 1
    await system.shutdown()


async def test_shutdown_reports_actors_it_could_not_flush(store: Store) -> None:
    system = ActorSystem(store, flush_interval=3600, follow_changes=False)
    await system.actor(Tally, "ok").add(1)
    await system.actor(Tally, "doomed").add(1)
    await system.flush()
    await system.actor(Tally, "ok").add(1)
    await system.actor(Tally, "doomed").add(1)
    original = store.save

    async def failing_save(type: str, id: str, *args: object, **kwargs: object) -> object:
        if id == "doomed":
            raise PgActorsError("the store went away")
        return await original(type, id, *args, **kwargs)  # type: ignore[arg-type]

    store.save = failing_save  # type: ignore[method-assign]
    with pytest.raises(PgActorsError, match=r"1 actor.*could not be flushed.*doomed"):
        await system.shutdown()
    assert (await store.load("Tally", "ok")).data == {"n": 2}  # type: ignore[union-attr]


class Contended(Actor[CounterState]):
    """Another instance wins the save of each of the first ``interfere`` runs (it writes
    the record while the turn runs); ``gate`` holds a run until the test opens it."""

    interfere = 0
    gate: asyncio.Event | None = None
    running = asyncio.Event()

    async def add(self, k: int) -> int:
        if Contended.interfere > 0:
            Contended.interfere -= 1
            store: Store = self._activation.system.store
            await store.update("Contended", self.id, lambda d: {"n": d["n"] + 1000})
        elif Contended.gate is not None:
            Contended.running.set()
            await Contended.gate.wait()
        self.state.n += k
        return self.state.n


async def test_a_turn_that_keeps_losing_takes_a_row_lock(store: Store) -> None:
    Contended.gate = None
    async with ActorSystem(store, follow_changes=False) as system:
        ref = system.actor(Contended, "c")
        assert await ref.add(1) == 1
        Contended.interfere = PESSIMISTIC_AFTER  # loses every optimistic attempt
        assert await ref.add(1) == 1 + 1000 * PESSIMISTIC_AFTER + 1
        assert system.reruns == PESSIMISTIC_AFTER
        assert system.locked_turns == 1
    stored = await store.load("Contended", "c")
    assert stored is not None and stored.data == {"n": 1 + 1000 * PESSIMISTIC_AFTER + 1}


async def test_a_locked_turn_makes_other_writers_wait(pg_store: Store, pg_dsn: str) -> None:
    other = await Store.connect(pg_dsn, schema=pg_store.config.schema)
    async with other, ActorSystem(pg_store, follow_changes=False) as system:
        ref = system.actor(Contended, "w")
        await ref.add(1)
        Contended.interfere, Contended.gate = PESSIMISTIC_AFTER, asyncio.Event()
        Contended.running.clear()
        turn = asyncio.create_task(ref.add(1))
        await asyncio.wait_for(Contended.running.wait(), 10)  # the locked run is under way
        version = (await other.load("Contended", "w")).version  # type: ignore[union-attr]
        writer = asyncio.create_task(
            other.save("Contended", "w", {"n": -1}, expected_version=version)
        )

        # The writer is blocked on the row lock held by the turn (pg_locks says so).
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            deadline = time.monotonic() + 10
            while True:
                cur = await conn.execute(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
                )
                row = await cur.fetchone()
                if row is not None and row[0] > 0:
                    break
                assert time.monotonic() < deadline, "the writer never waited on the lock"
                await asyncio.sleep(0.01)
        assert not writer.done()
        Contended.gate.set()
        assert await turn == 1 + 1000 * PESSIMISTIC_AFTER + 1
        with pytest.raises(VersionConflict):
            await writer  # it waited, then found the turn's newer version
        Contended.gate = None


class Account(Actor[CounterState]):
    async def withdraw(self, k: int) -> int:
        self.state.n -= k
        if self.state.n < 0:
            raise OSError(f"insufficient funds for {k}")  # an OSError: no store error
        return self.state.n

    async def deposit(self, k: int) -> int:
        self.state.n += k
        return self.state.n


async def test_a_call_that_raises_changes_nothing_and_raises_as_itself(store: Store) -> None:
    async with ActorSystem(store) as system:
        ref = system.actor(Account, "a")
        await ref.deposit(10)
        with pytest.raises(OSError, match="insufficient funds for 15") as raised:
            await ref.withdraw(15)
        assert type(raised.value) is OSError
        assert await ref.deposit(0) == 10  # the failed call's change was undone
        assert await ref.withdraw(4) == 6
    stored = await store.load("Account", "a")
    assert stored is not None and stored.data == {"n": 6} and stored.version == 2
