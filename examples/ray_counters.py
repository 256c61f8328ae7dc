"""Counters hosted on a Ray cluster, durable in PostgreSQL, with exactly-once calls.

    pip install "pgactors[ray]"
    python examples/ray_counters.py

Starts a local Ray cluster (or joins the one in ``RAY_ADDRESS``) and the silos (one per
CPU), sends 400 concurrent ``add(1)`` calls to four counters, and kills a silo with
SIGKILL while they are in flight. Ray restarts the silo and retries its calls; each
call is still applied exactly once, so every call sees its own count. The store is
``PGACTORS_DSN`` (and the rest of the environment), else the embedded server.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass

import ray

from pgactors import Actor, Store
from pgactors.ray import RayActorSystem


@dataclass
class CounterState:
    n: int = 0


class Counter(Actor[CounterState]):
    async def add(self, k: int) -> int:
        self.state.n += k
        return self.state.n


async def main() -> None:
    async with await Store.open() as store:  # start fresh on every run
        await store.init_schema()
        await store.delete_many("Counter", [f"c{n}" for n in range(4)])

    ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False)
    system = await RayActorSystem.start(namespace="pgactors-example")
    print(f"{system.silos} silos: {[s.pid for s in await system.status()]}")
    counters = [system.actor(Counter, f"c{n}") for n in range(4)]
    results: list[list[int]] = [[] for _ in counters]
    quarter_done = asyncio.Event()

    async def caller(n: int) -> None:
        for _ in range(10):
            results[n % 4].append(await counters[n % 4].add(1))
            if sum(map(len, results)) >= 100:
                quarter_done.set()

    calls = asyncio.gather(*(caller(n) for n in range(40)))
    await quarter_done.wait()  # some calls done, many still in flight
    victim = (await system.status())[0]
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    print(f"killed silo {victim.index} (pid {victim.pid}) with calls in flight")
    await calls

    for n, seen in enumerate(results):
        once = sorted(seen) == list(range(1, 101))
        print(f"c{n}: {len(seen)} calls, final count {max(seen)}, each applied once: {once}")
    print(f"silo 0 now runs as pid {(await system.status())[0].pid}")
    await system.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
