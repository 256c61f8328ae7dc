"""Actor benchmarks: call throughput per persistence policy, against the store's own saves.

    python -m benchmarks.actors [--dsn DSN] [--duration 5]

1. Write-behind calls on one actor system (in-memory turn; the state is flushed every
   second in the background): calls per second from 16 tasks over 16 actors.
2. Write-through calls spread over 16 actors (each call saves with compare-and-set
   before it returns), against ``store.save`` from 16 tasks on the same 16 keys. The
   two alternate over four rounds (``--duration`` each in all) and are averaged.

A script, never a timed test; quote the ratios from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass

from pgactors import Actor, ActorSystem, Store

from .server import server_dsn

_ROUNDS = 4


@dataclass
class CounterState:
    n: int = 0


class BenchCounter(Actor[CounterState]):
    async def add(self, k: int) -> int:
        self.state.n += k
        return self.state.n


async def _calls(system: ActorSystem, duration: float, actors: int = 16) -> float:
    refs = [system.actor(BenchCounter, f"a{n}") for n in range(actors)]
    for ref in refs:
        await ref.add(0)
    count = 0
    stop = time.perf_counter() + duration

    async def worker(ref: object) -> None:
        nonlocal count
        add = ref.add  # type: ignore[attr-defined]
        while time.perf_counter() < stop:
            await add(1)
            count += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(r) for r in refs))
    return count / (time.perf_counter() - started)


async def _saves(store: Store, duration: float, keys: int = 16) -> float:
    count = 0
    stop = time.perf_counter() + duration

    async def worker(n: int) -> None:
        nonlocal count
        while time.perf_counter() < stop:
            await store.save("BenchSave", f"a{n}", {"n": count})
            count += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(keys)))
    return count / (time.perf_counter() - started)


async def run(dsn: str, duration: float) -> dict[str, float]:
    schema = f"actorbench_{uuid.uuid4().hex[:8]}"
    async with await Store.connect(dsn, schema=schema, pool_max_size=16) as store:
        await store.init_schema()
        behind = ActorSystem(store, persistence="write_behind", follow_changes=False)
        write_behind = await _calls(behind, duration)
        await behind.shutdown()
        # Alternate the two parts over several short rounds, so drift on a shared
        # machine (other load, checkpoints) falls on both alike.
        through_rates: list[float] = []
        save_rates: list[float] = []
        part = duration / _ROUNDS
        for round in range(_ROUNDS):
            for which in ("through", "saves") if round % 2 == 0 else ("saves", "through"):
                if which == "saves":
                    save_rates.append(await _saves(store, part))
                    continue
                through = ActorSystem(store, persistence="write_through", follow_changes=False)
                through_rates.append(await _calls(through, part))
                await through.shutdown()
        write_through = sum(through_rates) / _ROUNDS
        saves = sum(save_rates) / _ROUNDS
        await store.drop_schema()
    return {
        "write_behind_calls_per_s": write_behind,
        "write_through_calls_per_s": write_through,
        "store_saves_per_s": saves,
        "write_through_vs_saves": write_through / saves,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.actors", description=__doc__)
    parser.add_argument("--dsn", help="PostgreSQL to use (default: a fresh embedded server)")
    parser.add_argument("--duration", type=float, default=5, help="seconds per part")
    args = parser.parse_args()
    with server_dsn(args.dsn, "pgactors-actorbench-") as dsn:
        result = asyncio.run(run(dsn, args.duration))
    print("| actors (16 tasks over 16 actors) | value |\n|---|---:|")
    print(f"| write-behind calls/s (in-memory turn) | {result['write_behind_calls_per_s']:,.0f} |")
    print(f"| write-through calls/s | {result['write_through_calls_per_s']:,.0f} |")
    print(f"| store.save/s, same 16 keys | {result['store_saves_per_s']:,.0f} |")
    print(f"| write-through / store.save | {result['write_through_vs_saves']:.2f}x |")


if __name__ == "__main__":
    main()
