"""Reminder benchmarks: how fast reminders are set and fired, and how late they fire.

    python -m benchmarks.reminders [--duration 5] [--dsn DSN]

1. Set: ``--tasks`` tasks call ``store.set_reminder`` for distinct keys (one-shot,
   ``after=3600``) for ``--duration`` seconds: sets per second with coalescing (the
   default) and with ``coalesce=False``.
2. Fire: ``--fire-actors`` actors x ``--fire-names`` reminders (20,000: about 4 s of
   firing, so that the ramp at its start and the 20 ms poll at its end weigh little),
   all due at one moment,
   fired by 1 and then by 4 instances (each a spawned process with its own ``Store`` and
   ``ActorSystem(store, actors=[BenchJob])``; ``on_reminder`` appends the name to the
   actor's state). Timed from the due moment until no ``BenchJob`` reminder is left;
   each instance's share, and a check from the saved states that every reminder fired
   exactly once; the CPU each instance used, and the server's (its processes, from
   /proc, when it runs on this machine) over the timed burst. Before it,
   ``WARMUP_FIRINGS`` reminders of other actors come due (``WARMUP_LEAD`` seconds
   earlier, not timed), as in an application that has been running: the instances'
   pools have their connections and prepared statements. ``--cold`` leaves that out
   and times a first burst instead.
3. Lateness: one instance; reminders due at a steady ``--rate`` per second for
   ``--duration`` seconds (all set in advance with ``at=``). Firing time minus due time,
   taken inside ``on_reminder``: p50, p99, max, and whether the instance kept up.

Each part runs in a fresh schema, dropped at the end. A script, never a timed test.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pgactors import Actor, ActorSystem, Store

from .server import server_cpu_seconds, server_dsn

SET_TARGET = 10_000  # sets per second, coalesced
FIRE_TARGET = 5_000  # firings per second, one instance
LATENESS_TARGET_MS = 200.0  # p99 at --rate due per second
POOL = 16  # pool size of the store that sets
POLL = 0.02  # seconds between polls for reminders left
WARMUP = 0.5  # seconds of unrecorded sets before each set run
WARMUP_FIRINGS = 1000  # reminders fired before the timed burst (one per other actor)
WARMUP_LEAD = 1.5  # seconds between their due time and the timed burst's

# Firing times minus due times (seconds) taken by on_reminder in this process; names
# of the lateness part carry their due time (``t<epoch microseconds>``).
LATENESS: list[float] = []


@dataclass
class Fired:
    names: list[str] = field(default_factory=list)


class BenchJob(Actor[Fired]):
    async def on_reminder(self, name: str) -> None:
        if name.startswith("t"):
            LATENESS.append(time.time() - int(name[1:]) / 1e6)
        self.state.names.append(name)


def platform_note() -> str:
    """CPUs and load average: the client, the instances and the server share them."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"machine has {os.cpu_count()} CPUs, load average {load:.2f} at the end"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (nan when empty)."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


@asynccontextmanager
async def fresh_store(dsn: str, **overrides: Any) -> AsyncIterator[Store]:
    """A store on a new schema, dropped on exit."""
    schema = f"remindbench_{uuid.uuid4().hex[:8]}"
    async with await Store.connect(dsn, schema=schema, **overrides) as store:
        await store.init_schema()
        try:
            yield store
        finally:
            await store.drop_schema()


# -- 1. setting -----------------------------------------------------------------------------


async def set_rate(dsn: str, tasks: int, duration: float, coalesce: bool) -> float:
    """Reminders set per second by ``tasks`` tasks, each for keys of its own."""
    async with fresh_store(dsn, coalesce=coalesce, pool_min_size=POOL, pool_max_size=POOL) as store:

        async def run(seconds: float, prefix: str) -> tuple[int, float]:
            count = 0
            stop = time.perf_counter() + seconds

            async def worker(task: int) -> None:
                nonlocal count
                n = 0
                while time.perf_counter() < stop:
                    await store.set_reminder("BenchSet", f"{prefix}{task}-{n}", "r", after=3600)
                    n += 1
                    count += 1

            started = time.perf_counter()
            await asyncio.gather(*(worker(t) for t in range(tasks)))
            return count, time.perf_counter() - started

        await run(WARMUP, "w")
        count, elapsed = await run(duration, "s")
        return count / elapsed


# -- instances (spawned processes) -----------------------------------------------------------


class CountRetries(logging.Handler):
    """Counts the firings that raised and stay due (``firing.py`` logs a warning)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.sample = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.sample = self.sample or record.getMessage()


def instance(dsn: str, schema: str, ready: Any, done: Any, out: Any) -> None:
    """One application instance: fire ``BenchJob`` reminders until told to stop."""
    retries = CountRetries()
    firing_log = logging.getLogger("pgactors.reminders")
    firing_log.addHandler(retries)
    firing_log.propagate = False

    async def main() -> dict[str, Any]:
        async with await Store.connect(dsn, schema=schema) as store:
            system = ActorSystem(store, actors=[BenchJob])
            await asyncio.sleep(0.5)  # lets the firing task connect its listener
            ready.put(True)
            cpu = time.process_time()
            await asyncio.to_thread(done.wait)
            result = {
                "fired": system.reminders.fired,
                "failed": system.reminders.failed,
                "cpu_s": time.process_time() - cpu,
                "retried": retries.count,
                "retry_sample": retries.sample,
                "lateness": sorted(LATENESS),
            }
            await system.shutdown()
            return result

    out.put(asyncio.run(main()))


class Instances:
    """``count`` spawned instances on one schema: started, ready, then stopped."""

    def __init__(self, dsn: str, schema: str, count: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._ready, self._done, self._out = ctx.Queue(), ctx.Event(), ctx.Queue()
        self._procs = [
            ctx.Process(target=instance, args=(dsn, schema, self._ready, self._done, self._out))
            for _ in range(count)
        ]

    async def start(self) -> None:
        for proc in self._procs:
            proc.start()
        for _ in self._procs:
            await asyncio.to_thread(self._ready.get, True, 120)

    async def stop(self) -> list[dict[str, Any]]:
        self._done.set()
        rows = [await asyncio.to_thread(self._out.get, True, 120) for _ in self._procs]
        for proc in self._procs:
            await asyncio.to_thread(proc.join, 30)
        return rows

    def kill(self) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()


async def set_all(store: Store, keys: list[tuple[str, str, datetime]]) -> float:
    """Set one-shot ``BenchJob`` reminders ``(id, name, at)`` from 64 tasks; seconds taken."""
    started = time.perf_counter()
    queue = iter(keys)

    async def worker() -> None:
        for id, name, at in queue:
            await store.set_reminder("BenchJob", id, name, at=at)

    await asyncio.gather(*(worker() for _ in range(64)))
    return time.perf_counter() - started


async def until_empty(store: Store, deadline: float) -> float:
    """Poll until no reminder is left; the ``time.time()`` at which none was.

    Polled by the indexed ``next_reminder_due``: ``reminder_stats`` counts every row,
    and every ``POLL`` seconds that took server CPU from the instances measured."""
    while await store.next_reminder_due(["BenchJob"]) is not None:
        if time.time() > deadline:
            raise TimeoutError("reminders still left at the deadline")
        await asyncio.sleep(POLL)
    return time.time()


def lead_time(count: int, sets_per_s: float) -> float:
    """Seconds from now to the first due time: setting ``count`` reminders, and a margin."""
    return count / sets_per_s * 1.5 + 1.5


# -- 2. firing throughput ------------------------------------------------------------------------


async def fire_rate(
    dsn: str, count: int, actors: int, names: int, sets_per_s: float, cold: bool = False
) -> dict[str, Any]:
    """``actors x names`` reminders due at once, fired by ``count`` instances (after a
    warm-up round unless ``cold``)."""
    async with fresh_store(dsn) as store:
        instances = Instances(dsn, store.config.schema, count)
        try:
            await instances.start()
            total = actors * names
            warm = 0 if cold else WARMUP_FIRINGS
            lead = lead_time(total + warm, sets_per_s) + (0 if cold else WARMUP_LEAD)
            due = datetime.now(UTC) + timedelta(seconds=lead)
            warm_due = due - timedelta(seconds=WARMUP_LEAD)
            keys = [(f"w{a}", "r0", warm_due) for a in range(warm)]
            keys += [(f"j{a}", f"r{n}", due) for n in range(names) for a in range(actors)]
            took = await set_all(store, keys)
            early = (due - datetime.now(UTC)).total_seconds()
            log(f"  set {total + warm:,} in {took:.1f} s; due in {early:.1f} s")
            await asyncio.sleep(max(0.0, early))
            server_cpu = await asyncio.to_thread(server_cpu_seconds, dsn)
            finished = await until_empty(store, due.timestamp() + 600)
            server_after = await asyncio.to_thread(server_cpu_seconds, dsn)
            rows = await instances.stop()
        finally:
            instances.kill()
        seconds = finished - due.timestamp()
        ids = [f"j{a}" for a in range(actors)]
        records = await store.load_many("BenchJob", ids)
        expected = sorted(f"r{n}" for n in range(names))
        states: dict[str, Any] = {id: record.data for id, record in records.items()}
        wrong = sum(1 for id in ids if sorted(states.get(id, {}).get("names", [])) != expected)
        warmed = await store.load_many("BenchJob", [f"w{a}" for a in range(warm)])
        wrong += sum(1 for r in warmed.values() if r.data != {"names": ["r0"]})
        wrong += warm - len(warmed)
        fired = [row["fired"] for row in rows]
        return {
            "instances": count,
            "reminders": total,
            "seconds": seconds,
            "per_s": total / seconds,
            "shares": [n / max(1, sum(fired)) for n in fired],
            "fired": sum(fired) - warm,  # the warm-up round's are counted apart
            "warmup": warm,
            "failed": sum(row["failed"] for row in rows),
            "retried": sum(row["retried"] for row in rows),
            "retry_sample": next((r["retry_sample"] for r in rows if r["retry_sample"]), ""),
            "cpu_ms_per_firing": sum(row["cpu_s"] for row in rows) * 1000 / max(1, sum(fired)),
            "server_ms_per_firing": (
                None
                if server_cpu is None or server_after is None
                else (server_after - server_cpu) * 1000 / total
            ),
            "wrong_actors": wrong,
            "set_late": early < 0,
        }


# -- 3. lateness at a steady due rate -------------------------------------------------------------


async def lateness(
    dsn: str, rate: int, duration: float, actors: int, sets_per_s: float
) -> dict[str, Any]:
    """Reminders due at ``rate`` per second for ``duration`` seconds, one instance."""
    total = int(rate * duration)
    async with fresh_store(dsn) as store:
        instances = Instances(dsn, store.config.schema, 1)
        try:
            await instances.start()
            start_us = int((time.time() + lead_time(total, sets_per_s)) * 1e6)
            keys = []
            for i in range(total):
                due_us = start_us + i * 1_000_000 // rate
                at = datetime.fromtimestamp(due_us / 1e6, UTC)
                keys.append((f"a{i % actors}", f"t{due_us}", at))
            took = await set_all(store, keys)
            early = start_us / 1e6 - time.time()
            log(f"  set {total:,} in {took:.1f} s; first due in {early:.1f} s")
            last_due = (start_us + (total - 1) * 1_000_000 // rate) / 1e6
            await asyncio.sleep(max(0.0, last_due - time.time()))
            finished = await until_empty(store, last_due + 600)
            (row,) = await instances.stop()
        finally:
            instances.kill()
    late: list[float] = row["lateness"]
    drain = finished - last_due
    return {
        "rate": rate,
        "reminders": total,
        "fired": len(late),
        "p50_ms": percentile(late, 0.50) * 1000,
        "p99_ms": percentile(late, 0.99) * 1000,
        "max_ms": (late[-1] if late else float("nan")) * 1000,
        "cpu_ms_per_firing": row["cpu_s"] * 1000 / max(1, len(late)),
        "drain_s": drain,
        # Kept up: every reminder fired, and the last within a second of its due time.
        "kept_up": len(late) == total and drain < 1.0,
        "set_late": early < 0,
    }


# -- the run and the report --------------------------------------------------------------------


async def run(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    log(f"set: {args.tasks} tasks, {args.duration:g} s, coalesced")
    coalesced = await set_rate(dsn, args.tasks, args.duration, coalesce=True)
    log(f"  {coalesced:,.0f}/s")
    log(f"set: {args.tasks} tasks, {args.duration:g} s, coalesce=False")
    plain = await set_rate(dsn, args.tasks, args.duration, coalesce=False)
    log(f"  {plain:,.0f}/s")
    fires = []
    for count in (1, 4):
        log(f"fire: {args.fire_actors} actors x {args.fire_names} names, {count} instance(s)")
        fires.append(
            await fire_rate(
                dsn, count, args.fire_actors, args.fire_names, coalesced, cold=args.cold
            )
        )
        log(f"  {fires[-1]['per_s']:,.0f}/s")
    log(f"lateness: {args.rate}/s for {args.duration:g} s, one instance")
    late = await lateness(dsn, args.rate, args.duration, args.fire_actors, coalesced)
    log(f"  p99 {late['p99_ms']:.1f} ms")
    return {"set": coalesced, "set_nocoalesce": plain, "fire": fires, "lateness": late}


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    fires: list[dict[str, Any]] = result["fire"]
    late: dict[str, Any] = result["lateness"]
    lines = [
        f"Parameters: --duration {args.duration:g}, {args.tasks} setting tasks (store pool "
        f"{POOL}), {args.fire_actors} actors x {args.fire_names} reminders = "
        f"{args.fire_actors * args.fire_names:,} due at once (set name by name, so "
        f"consecutive reminders belong to different actors; "
        + (
            "a first burst, --cold"
            if args.cold
            else f"after a warm-up round of {WARMUP_FIRINGS:,} other actors' reminders "
            f"due {WARMUP_LEAD:g} s earlier, not timed"
        )
        + f"), lateness at {args.rate}/s "
        f"over {late['reminders']:,} reminders and {args.fire_actors} actors; instances "
        f"are spawned processes with the default store and ActorSystem settings; the "
        f"{platform_note()}.",
        "",
        "| setting reminders (one-shot, distinct keys) | sets/s |",
        "|---|---:|",
        f"| `set_reminder`, coalesced (default) | {result['set']:,.0f} |",
        f"| `set_reminder`, `coalesce=False` | {result['set_nocoalesce']:,.0f} |",
        "",
        "| firing (all due at once) | reminders | seconds | fired/s | instance shares "
        "| fired exactly once | firings retried | instance CPU per firing (warm-up too) "
        "| server CPU per firing |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for row in fires:
        shares = ", ".join(f"{share:.0%}" for share in row["shares"])
        once = row["fired"] == row["reminders"] and row["wrong_actors"] == 0
        check = "yes" if once else f"NO: {row['fired']:,} fired, {row['wrong_actors']} actors wrong"
        if row["failed"]:
            check += f" ({row['failed']} failed turns)"
        if row["set_late"]:
            check += " (setting ran past the due time)"
        ms = row["server_ms_per_firing"]
        server = "n/a (not on this machine)" if ms is None else f"{ms:.2f} ms"
        lines.append(
            f"| {row['instances']} instance(s) | {row['reminders']:,} | {row['seconds']:.2f} "
            f"| {row['per_s']:,.0f} | {shares} | {check} | {row['retried']:,} "
            f"| {row['cpu_ms_per_firing']:.2f} ms | {server} |"
        )
    samples = [row["retry_sample"] for row in fires if row["retry_sample"]]
    if samples:
        lines += [
            "",
            "A retried firing raised, rolled back and stayed due (fired again later); "
            f"for example: `{samples[0]}`",
        ]
    kept = "yes" if late["kept_up"] else "NO"
    lines += [
        "",
        f"| lateness at {late['rate']:,} due/s, one instance | value |",
        "|---|---:|",
        f"| reminders fired / due | {late['fired']:,} / {late['reminders']:,} |",
        f"| lateness p50 | {late['p50_ms']:.1f} ms |",
        f"| lateness p99 | {late['p99_ms']:.1f} ms |",
        f"| lateness max | {late['max_ms']:.1f} ms |",
        f"| all fired, after the last due time | {late['drain_s']:.2f} s |",
        f"| kept up (all fired within 1 s of the last due time) | {kept} |",
        f"| instance CPU per firing | {late['cpu_ms_per_firing']:.2f} ms |",
    ]
    if late["set_late"]:
        lines.append("\nWarning: setting the lateness reminders ran past the first due time.")
    one = fires[0]["per_s"]
    targets = [
        (result["set"] >= SET_TARGET, f"set >= {SET_TARGET:,}/s (coalesced): {result['set']:,.0f}"),
        (one >= FIRE_TARGET, f"fired >= {FIRE_TARGET:,}/s on one instance: {one:,.0f}"),
        (
            late["p99_ms"] < LATENESS_TARGET_MS,
            f"lateness p99 < {LATENESS_TARGET_MS:.0f} ms at {late['rate']:,} due/s: "
            f"{late['p99_ms']:.1f} ms",
        ),
    ]
    lines += ["", "Targets:", ""]
    lines += [f"* {'PASS' if ok else 'FAIL'} {text}" for ok, text in targets]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reminders", description=__doc__)
    parser.add_argument("--dsn", help="PostgreSQL to use (default: a fresh embedded server)")
    parser.add_argument(
        "--duration",
        type=float,
        default=5,
        help="seconds of each set run and of the lateness schedule (default 5)",
    )
    parser.add_argument("--tasks", type=int, default=64, help="setting tasks (default 64)")
    parser.add_argument("--fire-actors", type=int, default=2000, help="actors (default 2000)")
    parser.add_argument(
        "--fire-names", type=int, default=10, help="reminders per actor due at once (default 10)"
    )
    parser.add_argument("--rate", type=int, default=1000, help="due per second (default 1000)")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="time the instances' first burst (no warm-up round before it)",
    )
    args = parser.parse_args()
    with server_dsn(args.dsn, "pgactors-remindbench-") as dsn:
        result = asyncio.run(run(dsn, args))
    print(report(result, args))


if __name__ == "__main__":
    main()
