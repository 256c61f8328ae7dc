"""Run concurrent clients against a store while faults are injected, then check.

``run_history`` connects a store, starts ``clients`` tasks doing reads, compare-and-set
writes and blind writes on ``keys`` registers, a change-feed consumer on a second store,
and a fault loop that injects each fault in turn (``interval`` seconds apart, each at
least once). When the time is up it stops the faults, lets the clients finish, reads the
final state, waits (with a deadline) for the consumer to catch up, and runs the checks.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pgactors import ChangesExpired, PgActorsError, Store, StoreUnavailable

from .checks import Anomaly, FeedChange, FinalState, check_feed, check_registers, lost_writes
from .faults import Cluster, Fault, FaultEvent
from .record import History, token_of

TYPE = "Register"
# How long to wait, once faults stop, for clients to finish, the final state to be
# readable and the feed consumer to catch up. Liveness deadlines, not correctness ones.
SETTLE_SECONDS = 60.0


@dataclass
class RunConfig:
    duration: float = 20.0
    clients: int = 8
    keys: int = 6
    faults: Sequence[Fault] = ()
    interval: float = 2.0  # quiet time before the first fault, between faults, after the last
    schema: str = "history"
    seed: int | None = None
    # Replaces methods of the clients' store: how tests plant a bug.
    plant: Callable[[Store], None] | None = None
    settle: float = SETTLE_SECONDS


@dataclass
class RunResult:
    history: History
    events: list[FaultEvent]
    changes: list[FeedChange]
    final: dict[str, FinalState]
    anomalies: list[Anomaly]
    seconds: float
    feed_reconnects: int = 0  # the consumer store's listener reconnections
    feed_resumes: int = 0  # streams the consumer reopened from its last position
    stuck: int = 0  # client operations that never completed
    evidence: list[dict[str, int]] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return lost_writes(self.anomalies)

    def faults_by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for event in self.events:
            counts[event.kind] = counts.get(event.kind, 0) + 1
        return counts

    def table(self) -> str:
        """The soak summary, as a Markdown table."""
        counts = self.history.counts()
        rows = [
            ("duration (s)", f"{self.seconds:.0f}"),
            ("operations run", str(len(self.history.ops))),
            *((f"  {name}", str(n)) for name, n in sorted(counts.items())),
            *(
                (f"    unknown: {name}", str(n))
                for name, n in sorted(self.history.errors().items())
            ),
            ("faults injected", str(len(self.events))),
            *((f"  {kind}", str(n)) for kind, n in sorted(self.faults_by_kind().items())),
            ("feed changes checked", str(len(self.changes))),
            ("feed listener reconnects", str(self.feed_reconnects)),
            ("anomalies found", str(len(self.anomalies))),
            ("acknowledged writes lost", str(self.lost)),
        ]
        width = max(len(name) for name, _ in rows)
        digits = max(5, *(len(value) for _, value in rows))
        lines = [
            f"| {'':{width}} | {'value':>{digits}} |",
            f"|{'-' * (width + 2)}|{'-' * (digits + 1)}:|",
        ]
        lines += [f"| {name:{width}} | {value:>{digits}} |" for name, value in rows]
        return "\n".join(lines)


def evidence(history: History, event: FaultEvent, window: float) -> dict[str, int]:
    """What the history shows around one fault: operations acknowledged in the
    ``window`` before it began and after it ended, operations that ended in an error
    (unknown outcome) during it or just after, and operations stalled across it."""
    before = after = disturbed = stalled = 0
    for op in history.ops:
        if op.outcome == "ok" and event.start - window <= op.end < event.start:
            before += 1
        if op.outcome == "ok" and event.end < op.end <= event.end + window:
            after += 1
        if op.outcome == "unknown" and event.start <= op.end <= event.end + window:
            disturbed += 1
        if op.invoke < event.start and op.end > event.end:
            stalled += 1
    return {"acked_before": before, "acked_after": after, "unknown": disturbed, "stalled": stalled}


async def run_history(cluster: Cluster, config: RunConfig) -> RunResult:
    rng = random.Random(config.seed)
    keys = [f"k{i}" for i in range(config.keys)]
    history = History()
    began = time.monotonic()
    store = await Store.connect(cluster.dsn, schema=config.schema)
    watcher = await Store.connect(cluster.dsn, schema=config.schema)
    try:
        await store.init_schema()
        if config.plant is not None:
            config.plant(store)
        consumer = _Consumer(watcher, history)
        consuming = asyncio.create_task(consumer.run())
        stop = asyncio.Event()
        clients = [
            asyncio.create_task(_client(store, history, n, keys, stop, random.Random(rng.random())))
            for n in range(config.clients)
        ]
        try:
            events = await _inject(cluster, config)
        except BaseException:  # a fault that broke: no checking, but no stray tasks
            for task in [*clients, consuming]:
                task.cancel()
            await asyncio.gather(*clients, consuming, return_exceptions=True)
            raise
        stop.set()
        _, pending = await asyncio.wait(clients, timeout=config.settle)
        for task in pending:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        final = await _final_state(cluster, config.schema, keys, config.settle)
        await consumer.catch_up(final, time.monotonic() + config.settle)
        consuming.cancel()
        await asyncio.gather(consuming, return_exceptions=True)
        feed = watcher._feed
        reconnects = feed.reconnects if feed is not None else 0
    finally:
        await store.close()
        await watcher.close()
    anomalies = check_registers(history, final)
    anomalies += check_feed(consumer.changes, history, final)
    anomalies += [Anomaly("leak", leak) for leak in history.leaks]
    if consumer.expired is not None:
        anomalies.append(
            Anomaly("feed-expired", f"the consumer's resume failed: {consumer.expired}")
        )
    stuck = sum(1 for op in history.ops if op.complete is None)
    anomalies += [Anomaly("stuck", f"{stuck} operations never completed")] if stuck else []
    return RunResult(
        history,
        events,
        consumer.changes,
        final,
        anomalies,
        time.monotonic() - began,
        feed_reconnects=reconnects,
        feed_resumes=consumer.resumes,
        stuck=stuck,
        evidence=[evidence(history, event, config.interval) for event in events],
    )


async def _inject(cluster: Cluster, config: RunConfig) -> list[FaultEvent]:
    """Each fault in turn, ``interval`` apart, until the duration is up and every fault
    ran at least once; then a quiet ``interval`` so writes are acknowledged after the
    last one."""
    events: list[FaultEvent] = []
    end = time.monotonic() + config.duration
    await asyncio.sleep(config.interval)
    for n, fault in enumerate(itertools.cycle(config.faults)):
        if n >= len(config.faults) and time.monotonic() >= end:
            break
        events.append(await fault.inject(cluster))
        await asyncio.sleep(config.interval)
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    return events


async def _client(
    store: Store,
    history: History,
    n: int,
    keys: list[str],
    stop: asyncio.Event,
    rng: random.Random,
) -> None:
    """Reads (40%, and whenever the key's version is not known), compare-and-set writes
    on the last version seen (45%), blind writes (5%) and ``update()``s (10%), until
    told to stop."""
    known: dict[str, int] = {}
    for i in itertools.count():
        if stop.is_set():
            return
        key, dice = rng.choice(keys), rng.random()
        if dice < 0.4 or key not in known:
            async with history.invoke(n, "read", key) as call:
                record = await store.load(TYPE, key)
                version = record.version if record else 0
                call.ok(version, token_of(record.data) if record else None)
                known[key] = version
        elif dice < 0.9:
            token = f"c{n}-{i}"
            expected = known[key] if dice < 0.85 else None
            async with history.invoke(n, "write", key, token=token, expected=expected) as call:
                record = await store.save(TYPE, key, {"token": token}, expected_version=expected)
                call.ok(record.version)
                known[key] = record.version
        else:
            # update(): compare-and-set re-run inside the store until it wins.
            token = f"c{n}-{i}"
            async with history.invoke(n, "write", key, token=token) as call:
                record = await store.update(TYPE, key, lambda _, t=token: {"token": t}, default={})
                call.ok(record.version)
                known[key] = record.version
        if call.op.outcome != "ok":
            known.pop(key, None)  # read it before writing it again
        if call.op.outcome == "unknown":
            await asyncio.sleep(0.05)  # pacing while the server is away


class _Consumer:
    """Reads the whole change feed; reopens its stream from the last position it got
    if the stream ever fails. Errors that are not a ``PgActorsError`` are leaks."""

    def __init__(self, store: Store, history: History) -> None:
        self.store = store
        self.history = history
        self.changes: list[FeedChange] = []
        self.resumes = 0
        self.expired: ChangesExpired | None = None

    async def run(self) -> None:
        while True:
            last = self.changes[-1].position if self.changes else 0
            try:
                async with self.store.changes(since=last) as stream:
                    async for change in stream:
                        self.changes.append(FeedChange(change.id, change.version, change.position))
            except ChangesExpired as exc:
                self.expired = exc
                return
            except PgActorsError:
                pass
            except Exception as exc:
                self.history.leaks.append(f"change feed: {type(exc).__module__}.{exc!r}")
            self.resumes += 1
            await asyncio.sleep(0.1)

    async def catch_up(self, final: dict[str, FinalState], deadline: float) -> None:
        """Wait until the feed has carried every key to its final version."""
        while time.monotonic() < deadline:
            newest: dict[str, int] = {}
            for change in self.changes:
                newest[change.key] = max(newest.get(change.key, 0), change.version)
            if all(newest.get(key, 0) >= state.version for key, state in final.items()):
                return
            await asyncio.sleep(0.05)


async def _final_state(
    cluster: Cluster, schema: str, keys: list[str], settle: float
) -> dict[str, FinalState]:
    """Each key's state, read by a fresh store once the server answers."""
    deadline = time.monotonic() + settle
    while True:
        try:
            async with await Store.connect(cluster.dsn, schema=schema) as store:
                records = await store.load_many(TYPE, keys)
            break
        except StoreUnavailable:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.2)
    return {
        key: FinalState(r.version, token_of(r.data))
        if (r := records.get(key))
        else FinalState(0, None)
        for key in keys
    }
