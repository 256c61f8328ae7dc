"""The actor runtime: turns, persistence policies, multi-instance correctness, watch."""

from __future__ import annotations

import asyncio
import multiprocessing
from dataclasses import dataclass, field
from typing import Any

import pytest

from pgactors import InvalidInput, Store
from pgactors.actors import Actor, ActorSystem


@dataclass
class CounterState:
    n: int = 0


class Counter(Actor[CounterState]):
    async def add(self, k: int) -> int:
        self.state.n += k
        return self.state.n

    async def get(self) -> int:
        return self.state.n

    async def slow_add(self, k: int) -> int:
        current = self.state.n
        await asyncio.sleep(0.001)
        self.state.n = current + k
        return self.state.n


@dataclass
class PairState:
    a: int = 0
    b: int = 0
    log: list[str] = field(default_factory=list)


class Pair(Actor[PairState]):
    persistence = "write_behind"

    async def bump(self) -> None:
        self.state.a += 1
        await asyncio.sleep(0)  # a flush must never see a != b
        self.state.b += 1


class Hooked(Actor[CounterState]):
    events: list[str] = []  # noqa: RUF012

    async def on_activate(self) -> None:
        Hooked.events.append(f"activate {self.id} n={self.state.n}")

    async def on_deactivate(self) -> None:
        Hooked.events.append(f"deactivate {self.id} n={self.state.n}")

    async def add(self, k: int) -> int:
        self.state.n += k
        return self.state.n


async def test_write_through_persists_before_returning(store: Store) -> None:
    async with ActorSystem(store) as system:
        ref = system.actor(Counter, "c1")
        assert await ref.add(2) == 2
        assert await ref.add(3) == 5
        stored = await store.load("Counter", "c1")
        assert stored is not None and stored.data == {"n": 5} and stored.version == 2
        assert await ref.get() == 5
        assert (await store.load("Counter", "c1")).version == 2  # type: ignore[union-attr]


async def test_one_call_at_a_time_per_actor_and_concurrency_across_actors(store: Store) -> None:
    async with ActorSystem(store) as system:
        ref = system.actor(Counter, "turns")
        await asyncio.gather(*(ref.slow_add(1) for _ in range(50)))
        assert await ref.get() == 50

        everyone_in = asyncio.Event()
        inside: list[str] = []

        class Sleeper(Actor[CounterState]):
            async def nap(self) -> None:
                inside.append(self.id)
                if len(inside) == 5:
                    everyone_in.set()
                # Returns only once all five turns are running at the same time.
                await asyncio.wait_for(everyone_in.wait(), 10)

        await asyncio.gather(*(system.actor(Sleeper, f"s{n}").nap() for n in range(5)))
        assert sorted(inside) == [f"s{n}" for n in range(5)]


async def test_shutdown_then_new_system_continues(store: Store) -> None:
    system = ActorSystem(store)
    await system.actor(Counter, "c").add(7)
    await system.shutdown()
    again = ActorSystem(store)
    assert await again.actor(Counter, "c").add(1) == 8
    await again.shutdown()


async def test_write_behind_10_actors_x_200_calls(store: Store) -> None:
    system = ActorSystem(store, persistence="write_behind", flush_interval=0.05)
    refs = [system.actor(Counter, f"wb{n}") for n in range(10)]

    async def hammer(ref: object) -> None:
        for _ in range(200):
            await ref.add(1)  # type: ignore[attr-defined]

    await asyncio.gather(*(hammer(r) for r in refs))
    await system.shutdown()
    stored = await store.load_many("Counter", [f"wb{n}" for n in range(10)])
    assert {k: r.data for k, r in stored.items()} == {f"wb{n}": {"n": 200} for n in range(10)}


async def test_flush_never_writes_a_torn_state(store: Store) -> None:
    system = ActorSystem(store, flush_interval=0.002)
    ref = system.actor(Pair, "p")
    seen: list[tuple[int, int]] = []

    async def sample() -> None:
        for _ in range(200):
            record = await store.load("Pair", "p")
            if record is not None:
                seen.append((record.data["a"], record.data["b"]))  # type: ignore[index, call-overload]
            await asyncio.sleep(0.001)

    async def mutate() -> None:
        for _ in range(300):
            await ref.bump()

    await asyncio.gather(sample(), mutate())
    await system.shutdown()
    assert seen and all(a == b for a, b in seen)
    final = await store.load("Pair", "p")
    assert final is not None and final.data["a"] == final.data["b"] == 300  # type: ignore[index, call-overload]


async def test_manual_persistence_saves_only_when_asked(store: Store) -> None:
    class Manual(Actor[CounterState]):
        persistence = "manual"

        async def add(self, k: int) -> None:
            self.state.n += k

        async def commit(self) -> None:
            await self.save()

    async with ActorSystem(store) as system:
        ref = system.actor(Manual, "m")
        await ref.add(3)
        assert await store.load("Manual", "m") is None
        await ref.commit()
        assert (await store.load("Manual", "m")).data == {"n": 3}  # type: ignore[union-attr]


async def test_hooks_and_idle_deactivation_flush_first(store: Store) -> None:
    Hooked.events.clear()
    system = ActorSystem(store, persistence="write_behind", flush_interval=0.05, idle_timeout=0.1)
    await system.actor(Hooked, "h").add(4)
    assert Hooked.events == ["activate h n=0"]
    for _ in range(50):
        if system.active == 0:
            break
        await asyncio.sleep(0.05)
    assert system.active == 0
    assert Hooked.events == ["activate h n=0", "deactivate h n=4"]
    assert (await store.load("Hooked", "h")).data == {"n": 4}  # type: ignore[union-attr]
    assert await system.actor(Hooked, "h").add(1) == 5
    await system.shutdown()


async def test_direct_store_change_reaches_cached_actor(store: Store) -> None:
    async with ActorSystem(store) as system:
        ref = system.actor(Counter, "shared")
        assert await ref.add(1) == 1
        await store.save("Counter", "shared", {"n": 100}, expected_version=1)
        for _ in range(50):
            if await ref.get() == 100:
                break
            await asyncio.sleep(0.05)
        assert await ref.get() == 100
        assert await ref.add(1) == 101


async def test_conflicting_write_reruns_the_call(store: Store) -> None:
    async with ActorSystem(store, follow_changes=False) as system:
        ref = system.actor(Counter, "rerun")
        await ref.add(1)
        await store.save("Counter", "rerun", {"n": 10})  # the cached actor does not know
        assert await ref.add(1) == 11
        assert system.reruns == 1


async def test_watch_sees_changes_from_another_instance(pg_store: Store, pg_dsn: str) -> None:
    other_store = await Store.connect(pg_dsn, schema=pg_store.config.schema)
    async with other_store, ActorSystem(pg_store) as mine, ActorSystem(other_store) as theirs:
        watched = mine.actor(Counter, "w")
        subscribed = asyncio.Event()
        states: list[int | None] = []

        async def watch() -> None:
            async for state in watched.watch():
                states.append(None if state is None else state.n)
                subscribed.set()
                if states[-1] == 20:
                    return

        watcher = asyncio.create_task(watch())
        await asyncio.wait_for(subscribed.wait(), 10)  # the first item: subscribed
        remote = theirs.actor(Counter, "w")
        for _ in range(20):
            await remote.add(1)
        await asyncio.wait_for(watcher, 10)
    assert states[0] is None  # the state when the watch began: never saved
    seen = [n for n in states[1:] if n is not None]
    assert seen == sorted(set(seen)), states  # never backwards, never twice
    assert seen[-1] == 20


async def test_bad_configuration_refused(store: Store) -> None:
    with pytest.raises(InvalidInput):
        ActorSystem(store, persistence="sometimes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):

        class Bad(Actor[CounterState]):
            persistence = "never"  # type: ignore[assignment]

    with pytest.raises(InvalidInput):
        ActorSystem(store).actor(CounterState, "x")  # type: ignore[arg-type]


def _hammer_process(dsn: str, schema: str, tasks: int, calls: int, go: Any, out: Any) -> None:
    async def run() -> None:
        async with await Store.connect(dsn, schema=schema) as store:
            system = ActorSystem(store)  # default settings: max_retries, backoff, locking
            ref = system.actor(Counter, "hot")
            await ref.get()  # activated and subscribed before the race starts
            go.wait()
            results: list[int] = []

            async def worker() -> None:
                for _ in range(calls):
                    results.append(await ref.add(1))

            await asyncio.gather(*(worker() for _ in range(tasks)))
            await system.shutdown()
            out.put((results, system.reruns, system.locked_turns))

    asyncio.run(run())


@pytest.mark.slow
def test_two_processes_8_tasks_x_250_calls_on_one_actor(pg_dsn: str, pg_store_sync: object) -> None:
    schema = pg_store_sync.config.schema  # type: ignore[attr-defined]
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_hammer_process, args=(pg_dsn, schema, 8, 250, go, out))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    go.set()
    reports = [out.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    results = [n for r in reports for n in r[0]]
    reruns = sum(r[1] for r in reports)
    # The race happened: both processes lost compare-and-sets and reran calls.
    assert all(r[1] > 0 for r in reports), reports[0][1:] + reports[1][1:]
    record = pg_store_sync.load("Counter", "hot")  # type: ignore[attr-defined]
    assert record is not None and record.data == {"n": 4000}
    # Every call was applied exactly once: each saw its own count.
    assert sorted(results) == list(range(1, 4001)), reruns
