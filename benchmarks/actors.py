"""Actor benchmarks: call throughput per persistence policy, against the store's own saves.

    python -m benchmarks.actors [--dsn DSN] [--duration 5]

1. Write-behind calls on one actor system (in-memory turn; the state is flushed every
   second in the background): calls per second from 16 tasks over 16 actors.
2. Write-through calls spread over 16 actors (each call saves with compare-and-set
   before it returns), against ``store.save`` from 16 tasks on the same 16 keys. The
   two alternate over four rounds (``--duration`` each in all) and are averaged.
3. Contention: 16 tasks calling one hot actor, hosted by one process (turns queue in
   memory), then by two processes, 8 tasks each (they race by compare-and-set): with
   the default fallback to a row-locked turn after ``PESSIMISTIC_AFTER`` conflicts,
   and optimistic only (fallback off, retries unbounded). Reruns per call, the share
   of locked turns, and the slower process's share of the calls (0.5 is fair).

A script, never a timed test; quote the ratios from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pgactors import Actor, ActorSystem, Store, turns

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


async def _hot(systems: list[ActorSystem], tasks: int, duration: float) -> dict[str, float]:
    """``tasks`` tasks per system calling one actor; calls/s, reruns and locked turns."""
    refs = [system.actor(BenchCounter, "hot") for system in systems]
    for ref in refs:
        await ref.add(0)
    for system in systems:
        system.reruns = system.locked_turns = 0
    count = 0
    stop = time.perf_counter() + duration

    async def worker(ref: object) -> None:
        nonlocal count
        add = ref.add  # type: ignore[attr-defined]
        while time.perf_counter() < stop:
            await add(1)
            count += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(ref) for ref in refs for _ in range(tasks)))
    elapsed = time.perf_counter() - started
    reruns = sum(system.reruns for system in systems)
    locked = sum(system.locked_turns for system in systems)
    return {
        "calls_per_s": count / elapsed,
        "reruns_per_call": reruns / count,
        "locked_share": locked / count,
    }


def _hot_process(
    dsn: str, schema: str, duration: float, optimistic: bool, go: Any, out: Any
) -> None:
    async def main() -> dict[str, float]:
        if optimistic:
            turns.PESSIMISTIC_AFTER = 1 << 30
        async with await Store.connect(dsn, schema=schema) as store:
            system = ActorSystem(store, max_retries=1 << 20 if optimistic else 50)
            await system.actor(BenchCounter, "hot").add(0)
            go.wait()
            result = await _hot([system], 8, duration)
            await system.shutdown()
            return result

    out.put(asyncio.run(main()))


def _two_processes(dsn: str, schema: str, duration: float, optimistic: bool) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_hot_process, args=(dsn, schema, duration, optimistic, go, out))
        for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    go.set()
    rows = [out.get(timeout=duration + 120) for _ in procs]
    for proc in procs:
        proc.join()
    calls = [row["calls_per_s"] for row in rows]
    return {
        "calls_per_s": sum(calls),
        # Reruns and locked turns per call, weighted by each process's calls.
        "reruns_per_call": sum(r["reruns_per_call"] * r["calls_per_s"] for r in rows) / sum(calls),
        "locked_share": sum(r["locked_share"] * r["calls_per_s"] for r in rows) / sum(calls),
        "slower_share": min(calls) / sum(calls),
    }


async def contention(dsn: str, schema: str, duration: float) -> dict[str, dict[str, float]]:
    """The hot-actor workload three ways (see the module docstring)."""
    out: dict[str, dict[str, float]] = {}
    async with await Store.connect(dsn, schema=schema) as store:
        system = ActorSystem(store)
        out["one process, 16 tasks"] = await _hot([system], 16, duration)
        out["one process, 16 tasks"]["slower_share"] = 0.5
        await system.shutdown()
    for name, optimistic in (("default", False), ("optimistic only", True)):
        out[f"two processes x 8 tasks, {name}"] = await asyncio.to_thread(
            _two_processes, dsn, schema, duration, optimistic
        )
    return out


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
        hot = await contention(dsn, schema, duration)
        await store.drop_schema()
    return {
        "write_behind_calls_per_s": write_behind,
        "write_through_calls_per_s": write_through,
        "store_saves_per_s": saves,
        "write_through_vs_saves": write_through / saves,
        "contention": hot,  # type: ignore[dict-item]
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
    hot: dict[str, dict[str, float]] = result["contention"]  # type: ignore[assignment]
    print(
        "\n| one hot actor | calls/s | reruns per call | locked turns | slower process |"
        "\n|---|---:|---:|---:|---:|"
    )
    for name, row in hot.items():
        print(
            f"| {name} | {row['calls_per_s']:,.0f} | {row['reruns_per_call']:.2f} "
            f"| {row['locked_share']:.0%} | {row['slower_share']:.0%} |"
        )


if __name__ == "__main__":
    main()
