"""Actors on a Ray cluster: calls/s through pgactors' silos, against plain Ray actors.

    python -m benchmarks.ray_actors [--dsn DSN] [--duration 10] [--silos N] [--callers 64]

Starts a local Ray cluster on loopback (``num_cpus=2``) and measures, one after the
other, ``--callers`` asyncio tasks in the driver calling ``add(1)`` on random actors
among ``--actors`` (1,000):

1. plain Ray: as many async Ray actors as silos, each holding its counters in a dict, the
   same routing by hash; no persistence at all;
2. pgactors on Ray: ``RayActorSystem`` with ``--silos`` silos (default: the system's
   default, one per CPU of the cluster), write-through, each call committed to
   PostgreSQL with its call id before it returns (the defaults);
3. the in-process ``ActorSystem``, write-through, the same callers and actors.

Prints calls/s and the ratios. A script, never a timed test; quote ratios from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pgactors import Actor, ActorSystem, Store

from .server import server_dsn


@dataclass
class CounterState:
    n: int = 0


class RayBenchCounter(Actor[CounterState]):
    async def add(self, k: int) -> int:
        self.state.n += k
        return self.state.n


class PlainSilo:
    """A plain Ray actor hosting counters in memory: what Ray gives without pgactors."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    async def add(self, id: str, k: int) -> int:
        n = self.counts.get(id, 0) + k
        self.counts[id] = n
        return n


async def _drive(call: Any, actors: int, callers: int, duration: float) -> float:
    ids = [f"a{n}" for n in range(actors)]
    count = 0
    stop = time.perf_counter() + duration

    async def caller() -> None:
        nonlocal count
        rng = random.Random()
        while time.perf_counter() < stop:
            await call(rng.choice(ids))
            count += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return count / (time.perf_counter() - started)


async def _plain_ray(silos: int, actors: int, callers: int, duration: float) -> float:
    import ray

    from pgactors.ray import silo_index

    remote = ray.remote(PlainSilo)
    # Ray's stubs do not type a handle's remote methods (as in pgactors.ray).
    handles: list[Any] = [
        remote.options(num_cpus=0, max_concurrency=1000).remote() for _ in range(silos)
    ]
    await asyncio.gather(*(h.add.remote("warm", 0) for h in handles))

    async def call(id: str) -> int:
        result: int = await handles[silo_index("RayBenchCounter", id, silos)].add.remote(id, 1)
        return result

    rate = await _drive(call, actors, callers, duration)
    for handle in handles:
        ray.kill(handle)
    return rate


async def _pgactors_ray(
    dsn: str, schema: str, silos: int, actors: int, callers: int, duration: float
) -> float:
    from pgactors.ray import RayActorSystem

    system = await RayActorSystem.start(
        dsn, schema=schema, silos=silos, namespace=f"bench-{uuid.uuid4().hex[:8]}"
    )
    refs = {f"a{n}": system.actor(RayBenchCounter, f"a{n}") for n in range(actors)}
    await asyncio.gather(*(ref.add(0) for ref in refs.values()))  # activated: steady state

    async def call(id: str) -> int:
        return await refs[id].add(1)  # type: ignore[no-any-return]

    rate = await _drive(call, actors, callers, duration)
    await system.shutdown()
    return rate


async def _in_process(dsn: str, schema: str, actors: int, callers: int, duration: float) -> float:
    async with await Store.connect(dsn, schema=schema) as store, ActorSystem(store) as system:
        refs = {f"a{n}": system.actor(RayBenchCounter, f"a{n}") for n in range(actors)}
        await asyncio.gather(*(ref.add(0) for ref in refs.values()))

        async def call(id: str) -> int:
            return await refs[id].add(1)  # type: ignore[no-any-return]

        return await _drive(call, actors, callers, duration)


async def run(
    dsn: str, duration: float, silos: int | None, actors: int, callers: int
) -> dict[str, float]:
    import ray

    schema = f"raybench_{uuid.uuid4().hex[:8]}"
    async with await Store.connect(dsn, schema=schema) as store:
        await store.init_schema()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    silos = silos or int(resources["CPU"])  # as RayActorSystem.start does
    try:
        plain = await _plain_ray(silos, actors, callers, duration)
        on_ray = await _pgactors_ray(dsn, schema, silos, actors, callers, duration)
    finally:
        ray.shutdown()
    in_process = await _in_process(dsn, schema, actors, callers, duration)
    async with await Store.connect(dsn, schema=schema) as store:
        await store.drop_schema()
    return {
        "silos": silos,
        "plain_ray": plain,
        "pgactors_ray": on_ray,
        "in_process": in_process,
        "ray_vs_plain": on_ray / plain,
        "ray_vs_in_process": on_ray / in_process,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ray_actors", description=__doc__)
    parser.add_argument("--dsn", help="PostgreSQL to use (default: a fresh embedded server)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per part")
    parser.add_argument("--silos", type=int, default=None)
    parser.add_argument("--actors", type=int, default=1000)
    parser.add_argument("--callers", type=int, default=64)
    args = parser.parse_args()
    # A one-machine cluster: Ray's services listen on loopback only.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    with server_dsn(args.dsn, "pgactors-raybench-") as dsn:
        r = asyncio.run(run(dsn, args.duration, args.silos, args.actors, args.callers))
    print(
        f"| {args.callers} callers over {args.actors} actors, {r['silos']:.0f} silos "
        "| calls/s |\n|---|---:|"
    )
    print(f"| plain Ray actors (no persistence) | {r['plain_ray']:,.0f} |")
    print(f"| pgactors on Ray (write-through, exactly-once) | {r['pgactors_ray']:,.0f} |")
    print(f"| in-process ActorSystem (write-through) | {r['in_process']:,.0f} |")
    print(f"| pgactors on Ray / plain Ray | {r['ray_vs_plain']:.2f}x |")
    print(f"| pgactors on Ray / in-process | {r['ray_vs_in_process']:.2f}x |")


if __name__ == "__main__":
    main()
