"""Actors hosted on a real local Ray cluster: routing, restores, silo kills with SIGKILL
while calls are in flight, exactly-once calls, several drivers, the blocking API."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import pytest
from psycopg import sql

ray = pytest.importorskip("ray")

from ray import cloudpickle  # noqa: E402

from pgactors import InvalidInput, PgActorsError, Store  # noqa: E402
from pgactors.actors import Actor  # noqa: E402
from pgactors.errors import ConfigError  # noqa: E402
from pgactors.ray import RayActorSystem, SyncRayActorSystem, silo_index  # noqa: E402

# The silos cannot import this test module: send its classes by value, as Ray does for
# classes defined in a driver's __main__.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.slow


@dataclass
class CountState:
    n: int = 0


class RCounter(Actor[CountState]):
    async def add(self, k: int) -> int:
        self.state.n += k
        return self.state.n

    async def get(self) -> int:
        return self.state.n

    async def fail(self) -> None:
        self.state.n += 1000
        raise KeyError("no such thing")


class Crashy(Actor[CountState]):
    """Kills its silo right after a marked call's state and call id committed, before
    the reply can leave (the hook wraps the silo store's ``save_call``)."""

    crash_after_commit: ClassVar[set[str]] = set()

    async def on_activate(self) -> None:
        store = self._activation.system.store
        if getattr(store, "crash_hook", False):
            return
        original = store.save_call

        async def save_call(type: str, id: str, *args: Any, **kwargs: Any) -> Any:
            record = await original(type, id, *args, **kwargs)
            if type == "Crashy" and id in Crashy.crash_after_commit:
                os.kill(os.getpid(), signal.SIGKILL)
            return record

        store.save_call = save_call  # type: ignore[method-assign]
        store.crash_hook = True  # type: ignore[attr-defined]

    async def add(self, k: int, crash: bool = False) -> int:
        if crash:
            Crashy.crash_after_commit.add(self.id)
        self.state.n += k
        return self.state.n

    async def take(self, k: int, crash: bool = False) -> int:
        """Refuses to go below zero: run twice, the second run would raise."""
        if self.state.n < k:
            raise ValueError(f"only {self.state.n} left")
        return await self.add(-k, crash)


class RTicker(Actor[CountState]):
    async def arm(self, after: float) -> None:
        await self.remind("ping", after=after)

    async def pings(self) -> int:
        return self.state.n

    async def on_reminder(self, name: str) -> None:
        self.state.n += 1


async def _until(check: Any, seconds: float = 60.0, what: Any = None) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not reached in time: {what and what()}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def system(ray_cluster: str, pg_store: Store, pg_dsn: str) -> AsyncIterator[RayActorSystem]:
    started = await RayActorSystem.start(
        pg_dsn, schema=pg_store.config.schema, silos=2, namespace=f"t-{uuid.uuid4().hex[:8]}"
    )
    try:
        yield started
    finally:
        await started.shutdown()


async def test_calls_are_routed_saved_and_restored(system: RayActorSystem, pg_store: Store) -> None:
    refs = [system.actor(RCounter, f"c{n}") for n in range(10)]
    results = await asyncio.gather(*(ref.add(1) for ref in refs for _ in range(5)))
    assert sorted(results) == sorted(list(range(1, 6)) * 10)
    stored = await pg_store.load_many("RCounter", [f"c{n}" for n in range(10)])
    assert {r.data["n"] for r in stored.values()} == {5}  # type: ignore[index, call-overload]
    statuses = await system.status()
    assert [s.index for s in statuses] == [0, 1] and all(s.alive for s in statuses)
    assert sum(s.activations for s in statuses) == 10
    assert sum(s.calls for s in statuses) == 50
    expected = [sum(silo_index("RCounter", f"c{n}", 2) == i for n in range(10)) for i in (0, 1)]
    assert [s.activations for s in statuses] == expected
    assert len({s.pid for s in statuses}) == 2

    # The caller's own exception comes back as itself, and the call changed nothing.
    with pytest.raises(KeyError, match="no such thing"):
        await refs[0].fail()
    assert await refs[0].get() == 5
    with pytest.raises(AttributeError):
        refs[0].missing  # noqa: B018
    # Call ids stay out of the data.
    assert (await pg_store.load("RCounter", "c0")).data == {"n": 5}  # type: ignore[union-attr]

    await system.shutdown()
    assert not any(s.alive for s in await system.status())
    with pytest.raises(PgActorsError, match="shut down"):
        await refs[0].get()


async def test_silos_fire_the_reminders_of_the_actors_they_host(
    ray_cluster: str, pg_store: Store, pg_dsn: str
) -> None:
    system = await RayActorSystem.start(
        pg_dsn,
        schema=pg_store.config.schema,
        silos=2,
        namespace=f"t-{uuid.uuid4().hex[:8]}",
        actors=[RTicker],
    )
    try:
        refs = [system.actor(RTicker, f"t{n}") for n in range(8)]
        await asyncio.gather(*(ref.arm(0.05) for ref in refs))

        async def all_fired() -> bool:
            return await pg_store.reminders() == [] and all(
                n == 1 for n in await asyncio.gather(*(ref.pings() for ref in refs))
            )

        await _until(all_fired, what=lambda: "reminders still set or not fired once")
        stored = await pg_store.load_many("RTicker", [f"t{n}" for n in range(8)])
        assert {r.data["n"] for r in stored.values()} == {1}  # type: ignore[index, call-overload]
        hosted = [sum(silo_index("RTicker", f"t{n}", 2) == i for n in range(8)) for i in (0, 1)]
        assert 0 not in hosted  # both silos host (and fire for) some of them
        # No silo fired for an actor it does not host: that would have activated it there.
        assert [s.activations for s in await system.status()] == hosted
    finally:
        await system.shutdown()


async def test_start_attaches_to_running_silos(
    system: RayActorSystem, pg_store: Store, pg_dsn: str
) -> None:
    namespace = system._cluster.namespace
    schema = pg_store.config.schema
    await system.actor(RCounter, "a").add(1)
    pids = [s.pid for s in await system.status()]
    other = await RayActorSystem.start(pg_dsn, schema=schema, silos=None, namespace=namespace)
    assert [s.pid for s in await other.status()] == pids
    assert await other.actor(RCounter, "a").add(1) == 2  # the same activation
    assert sum(s.activations for s in await other.status()) == 1
    other.detach()
    with pytest.raises(ConfigError, match="runs with 2 silos, not 3"):
        await RayActorSystem.start(pg_dsn, schema=schema, silos=3, namespace=namespace)
    fresh = await RayActorSystem.start(pg_dsn, schema=schema, namespace="nobody-here")
    assert fresh.silos == 2  # none were running: one per CPU of the cluster
    await fresh.shutdown()
    with pytest.raises(InvalidInput, match="silos must be"):
        await RayActorSystem.start(pg_dsn, schema=schema, silos=0, namespace=namespace)
    with pytest.raises(InvalidInput, match="call_retention"):
        await RayActorSystem.start(pg_dsn, call_retention=-1)
    assert await system.actor(RCounter, "a").get() == 2


async def _pid(system: RayActorSystem, index: int) -> int | None:
    status = (await system.status())[index]
    return status.pid if status.alive else None


async def test_kill_silos_while_calls_are_in_flight(
    system: RayActorSystem, pg_store: Store
) -> None:
    actors, callers = 8, 32
    refs = [system.actor(RCounter, f"k{n}") for n in range(actors)]
    results: dict[int, list[int]] = {n: [] for n in range(actors)}
    in_flight = done = 0
    stop = asyncio.Event()

    async def caller(c: int) -> None:
        nonlocal in_flight, done
        while not stop.is_set():  # until three kills are over
            in_flight += 1
            results[c % actors].append(await refs[c % actors].add(1))
            in_flight -= 1
            done += 1

    work = asyncio.gather(*(caller(c) for c in range(callers)))
    kills = []
    for round_ in range(3):
        start = done

        async def ready(start: int = start) -> bool:
            return done >= start + 100 and in_flight > 0

        await _until(ready, what=lambda r=round_: (r, done, in_flight))
        index = random.randrange(2)
        pid = await _pid(system, index)
        assert pid is not None
        kills.append((in_flight, done))
        os.kill(pid, signal.SIGKILL)

        async def restarted(index: int = index, pid: int = pid) -> bool:
            new = await _pid(system, index)
            return new is not None and new != pid

        await _until(restarted, what=lambda r=round_: ("restart", r, done, in_flight))
    killed_at = done

    async def more_calls_after_the_last_kill() -> bool:
        return done >= killed_at + 100

    await _until(more_calls_after_the_last_kill)
    stop.set()
    await asyncio.wait_for(work, 180)
    # Calls were in flight at each kill, and calls completed after each of them.
    assert len(kills) == 3 and all(flying > 0 for flying, _ in kills), kills
    stored = await pg_store.load_many("RCounter", [f"k{n}" for n in range(actors)])
    for n in range(actors):
        # Exactly once: every call saw its own count; none applied twice, none lost.
        assert sorted(results[n]) == list(range(1, len(results[n]) + 1)), n
        assert stored[f"k{n}"].data == {"n": len(results[n])}
    assert sum(map(len, results.values())) == done


async def test_kill_right_after_the_state_committed(
    system: RayActorSystem, pg_store: Store, pg_dsn: str
) -> None:
    ref = system.actor(Crashy, "x")
    assert await ref.add(1) == 1
    index = silo_index("Crashy", "x", 2)
    pid = await _pid(system, index)
    # The silo dies after the commit, before replying; Ray restarts it and retries the
    # call, which is answered from the recorded call instead of running again.
    assert await ref.add(10, crash=True) == 11
    assert await _pid(system, index) not in (None, pid)  # it did die
    record = await pg_store.load("Crashy", "x")
    assert record is not None and record.data == {"n": 11} and record.version == 2
    with psycopg.connect(pg_dsn) as conn:
        table = sql.Identifier(pg_store.config.schema, f"{pg_store.config.table_prefix}_calls")
        rows = conn.execute(
            sql.SQL("SELECT result FROM {} WHERE type = 'Crashy' ORDER BY applied_at").format(table)
        ).fetchall()
    assert [r[0] for r in rows] == [1, 11]
    # A retry whose second run would fail is still answered with the first outcome.
    pid = await _pid(system, index)
    assert await ref.take(11, crash=True) == 0
    assert await _pid(system, index) not in (None, pid)
    assert (await pg_store.load("Crashy", "x")).data == {"n": 0}  # type: ignore[union-attr]
    assert await ref.add(1) == 1


_DRIVER = textwrap.dedent(
    """
    import asyncio, json, sys
    from dataclasses import dataclass

    import ray
    from pgactors.actors import Actor
    from pgactors.ray import RayActorSystem


    @dataclass
    class Tally:
        n: int = 0
        activations: int = 0


    class SharedCounter(Actor[Tally]):
        async def on_activate(self) -> None:
            self.state.activations += 1

        async def add(self, k: int) -> int:
            self.state.n += k
            return self.state.n


    async def main(address: str, namespace: str, dsn: str, schema: str) -> None:
        ray.init(address=address, log_to_driver=False)
        system = await RayActorSystem.start(dsn, schema=schema, silos=2, namespace=namespace)
        ref = system.actor(SharedCounter, "shared")
        print(json.dumps(await asyncio.gather(*(ref.add(1) for _ in range(100)))))
        system.detach()


    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_two_drivers_share_one_activation(
    ray_cluster: str, pg_store: Store, pg_dsn: str, tmp_path: Path
) -> None:
    """Two driver processes, classes defined in their __main__, call one actor: one
    activation serves both, so no compare-and-set ever races."""
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    args = [ray_cluster, namespace, pg_dsn, pg_store.config.schema]
    drivers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            *args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [await asyncio.wait_for(d.communicate(), 120) for d in drivers]
    for driver, (_, err) in zip(drivers, outputs, strict=True):
        assert driver.returncode == 0, err.decode()[-3000:]
    results = [n for out, _ in outputs for n in json.loads(out.decode().splitlines()[-1])]
    assert sorted(results) == list(range(1, 201))
    record = await pg_store.load("SharedCounter", "shared")
    assert record is not None and record.data == {"n": 200, "activations": 1}
    attached = await RayActorSystem.start(
        pg_dsn, schema=pg_store.config.schema, silos=None, namespace=namespace
    )
    statuses = await attached.status()
    assert sum(s.reruns for s in statuses) == 0  # never a compare-and-set conflict
    assert sum(s.calls for s in statuses) == 200
    await attached.shutdown()


_NEW_CLUSTER = textwrap.dedent(
    """
    import asyncio, json, sys
    from dataclasses import dataclass

    import ray
    from pgactors.actors import Actor
    from pgactors.ray import RayActorSystem


    @dataclass
    class CountState:
        n: int = 0


    class RCounter(Actor[CountState]):
        async def add(self, k: int) -> int:
            self.state.n += k
            return self.state.n


    async def main(dsn: str, schema: str) -> None:
        ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)  # a new cluster
        system = await RayActorSystem.start(dsn, schema=schema)  # one silo per CPU: 3
        refs = [system.actor(RCounter, f"r{n}") for n in range(1, 21)]
        counts = await asyncio.gather(*(ref.add(1) for ref in refs))
        activations = [s.activations for s in await system.status()]
        await system.shutdown()
        print(json.dumps({"silos": system.silos, "counts": counts, "activations": activations}))


    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_a_new_cluster_with_another_silo_count_restores_every_actor(
    ray_cluster: str, pg_store: Store, pg_dsn: str, tmp_path: Path
) -> None:
    schema = pg_store.config.schema
    first = await RayActorSystem.start(pg_dsn, schema=schema, silos=2, namespace="restore-a")
    await asyncio.gather(*(first.actor(RCounter, f"r{n}").add(n) for n in range(1, 21)))
    await first.shutdown()
    # Another Ray cluster (started by another driver process), with 3 silos.
    script = tmp_path / "new_cluster.py"
    script.write_text(_NEW_CLUSTER)
    driver = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        pg_dsn,
        schema,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(driver.communicate(), 120)
    assert driver.returncode == 0, err.decode()[-3000:]
    report = json.loads(out.decode().splitlines()[-1])
    assert report["silos"] == 3
    assert report["counts"] == [n + 1 for n in range(1, 21)]
    assert report["activations"] == [
        sum(silo_index("RCounter", f"r{n}", 3) == i for n in range(1, 21)) for i in range(3)
    ]


async def test_two_activations_of_one_actor_are_fenced_by_versions(
    ray_cluster: str, pg_store: Store, pg_dsn: str
) -> None:
    """Two systems with different silo counts both host the actor (as when the count
    changed while old silos still ran): neither overwrites the other's newer state."""
    schema = pg_store.config.schema
    # Not following changes: each activation learns of the other's writes only by
    # losing a compare-and-set, so the race is certain, not a matter of timing.
    one = await RayActorSystem.start(
        pg_dsn, schema=schema, silos=1, namespace="fence-a", follow_changes=False
    )
    two = await RayActorSystem.start(
        pg_dsn, schema=schema, silos=2, namespace="fence-b", follow_changes=False
    )
    try:
        refs = [one.actor(RCounter, "f"), two.actor(RCounter, "f")]
        # one saves 1; two activates on 1 and saves 2; one, still at 1, must lose once.
        assert [await refs[0].add(1), await refs[1].add(1), await refs[0].add(1)] == [1, 2, 3]
        results = await asyncio.gather(*(refs[n % 2].add(1) for n in range(97)))
        assert sorted(results) == list(range(4, 101))  # each call saw its own count
        statuses = await one.status() + await two.status()
        assert sum(s.activations for s in statuses) == 2  # two activations raced
        assert sum(s.reruns for s in statuses) > 0  # ...and lost compare-and-sets
    finally:
        await one.shutdown()
        await two.shutdown()
    assert (await pg_store.load("RCounter", "f")).data == {"n": 100}  # type: ignore[union-attr]


def test_blocking_api(ray_cluster: str, pg_dsn: str, schema_name: str) -> None:
    with Store_sync(pg_dsn, schema_name):
        pass
    system = SyncRayActorSystem.start(
        pg_dsn, schema=schema_name, silos=1, namespace=f"t-{uuid.uuid4().hex[:8]}"
    )
    try:
        ref = system.actor(RCounter, "s")
        assert [ref.add(2) for _ in range(3)] == [2, 4, 6]
        with pytest.raises(KeyError):
            ref.fail()
        assert ref.get() == 6
        [status] = system.status()
        assert status.alive and status.activations == 1 and status.calls == 5
    finally:
        system.shutdown()
    assert not system.status()[0].alive


class Store_sync:
    """Install the schema with the blocking store, for the blocking test."""

    def __init__(self, dsn: str, schema: str) -> None:
        from pgactors import SyncStore

        self._store = SyncStore.connect(dsn, schema=schema)

    def __enter__(self) -> None:
        self._store.init_schema()

    def __exit__(self, *exc: object) -> None:
        self._store.close()


async def test_the_dashboard_overview_shows_the_silos(
    system: RayActorSystem, pg_store: Store
) -> None:
    import httpx

    from pgactors.ui import create_app

    await system.actor(RCounter, "dash").add(1)
    app = create_app(pg_store, silos=system.status)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        reply = await client.get("/api/overview")
    assert reply.status_code == 200, reply.text
    silos = reply.json()["silos"]
    assert silos["error"] is None
    assert [s["index"] for s in silos["silos"]] == [0, 1]
    assert all(s["alive"] and s["pid"] for s in silos["silos"])
    assert sum(s["activations"] for s in silos["silos"]) == 1
