"""Reminders: stored on both backends, fired exactly once by whichever instance runs."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgactors import (
    Actor,
    ActorSystem,
    CallAlreadyApplied,
    InvalidInput,
    Store,
    VersionConflict,
    firing,
)
from pgactors.firing import RETRY_DELAY
from pgactors.reminders import HORIZON

DEADLINE = 30.0


@dataclass
class Log:
    fired: list[str] = field(default_factory=list)


class Session(Actor[Log]):
    async def touch(self, after: float) -> None:
        await self.remind("expire", after=after)

    async def tick(self, every: float, after: float | None = None) -> None:
        await self.remind("tick", every=every, after=after)

    async def stop(self) -> None:
        await self.cancel_reminder("tick")

    async def note_and_remind(self) -> None:
        self.state.fired.append("noted")
        await self.remind("expire", after=3600)

    async def fail_after_reminding(self) -> None:
        self.state.fired.append("not kept")
        await self.remind("doomed", after=0.01)
        await self.cancel_reminder("kept")
        raise RuntimeError("the turn fails")

    async def fired(self) -> list[str]:
        return list(self.state.fired)

    async def on_reminder(self, name: str) -> None:
        self.state.fired.append(name)


class Unstorable(Actor[Log]):
    async def on_reminder(self, name: str) -> None:
        self.state.fired.append({1, 2})  # type: ignore[arg-type]  # not JSON: cannot be saved


class Flaky(Actor[Log]):
    async def on_reminder(self, name: str) -> None:
        self.state.fired.append(name)
        raise ValueError("not now")


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.fixture
async def system(store: Store) -> AsyncIterator[ActorSystem]:
    async with ActorSystem(store, actors=[Session, Flaky]) as system:
        yield system


async def test_set_replace_list_and_cancel(store: Store) -> None:
    at = datetime.now(UTC) + timedelta(hours=1)
    first = await store.set_reminder("Session", "a", "expire", at=at)
    assert (first.name, first.due_at, first.period) == ("expire", at, None)
    await store.set_reminder("Session", "b", "tick", every=60)
    replaced = await store.set_reminder("Session", "a", "expire", after=7200, every=30)
    assert replaced.period == 30 and replaced.due_at > at
    listed = await store.reminders()
    assert [(r.id, r.name) for r in listed] == [("b", "tick"), ("a", "expire")]
    assert [r.name for r in await store.reminders("Session", "a")] == ["expire"]
    assert await store.reminders(due_before=at) == [listed[0]]
    stats = await store.reminder_stats()
    assert (stats.total, stats.overdue, stats.oldest_overdue) == (2, 0, None)
    assert await store.cancel_reminder("Session", "a", "expire") is True
    assert await store.cancel_reminder("Session", "a", "expire") is False
    assert [r.id for r in await store.reminders()] == ["b"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"after": 0}, "after must be a finite number"),
        ({"after": -1}, "after must be a finite number"),
        ({"after": math.nan}, "after must be a finite number"),
        ({"every": math.inf}, "every must be a finite number"),
        ({"after": True}, "after must be a finite number"),
        ({"at": datetime(2030, 1, 1)}, "timezone-aware"),
        ({"at": datetime.now(UTC), "after": 1}, "not both"),
        ({}, "needs at, after or every"),
    ],
)
async def test_bad_schedules_are_refused_and_store_nothing(
    store: Store, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        await store.set_reminder("Session", "a", "x", **kwargs)
    with pytest.raises(InvalidInput, match="reminder name"):
        await store.set_reminder("Session", "a", "bad name", after=1)
    assert await store.reminders() == []


async def test_a_one_shot_fires_once_then_is_gone(
    store: Store, system: ActorSystem, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pgactors.reminders")
    ref = system.actor(Session, "s1")
    await ref.touch(0.05)
    assert [r.name for r in await store.reminders("Session", "s1")] == ["expire"]
    await until(lambda: _fired(ref, "expire", 1), "the reminder to fire")
    # Moved on (deleted) right after its firing committed.
    await until(lambda: _none_left(store), "the one-shot to go")
    assert await ref.fired() == ["expire"] and system.reminders.fired == 1
    lateness = store.metrics().operations["reminder_fired"]
    assert lateness.count == 1 and lateness.sum_seconds < DEADLINE
    assert caplog.records == []  # no firing failed on the way


async def test_a_periodic_reminder_fires_until_cancelled(store: Store, system: ActorSystem) -> None:
    ref = system.actor(Session, "s2")
    await ref.tick(0.05)
    await until(lambda: _fired(ref, "tick", 3), "three ticks")
    (reminder,) = await store.reminders()
    assert reminder.period == 0.05
    await ref.stop()
    assert await store.reminders() == []
    # Nothing is left to fire: the count is final.
    count = len(await ref.fired())
    assert await store.next_reminder_due(["Session"]) is None
    assert len(await ref.fired()) == count == system.reminders.fired


async def test_a_sleeping_instance_is_woken_for_an_earlier_reminder(
    store: Store, system: ActorSystem
) -> None:
    await store.set_reminder("Session", "far", "later", after=3600)
    await until(lambda: _asleep(system), "the instance to sleep")
    # Sleeping until min(next due, HORIZON): only the notification can wake it sooner.
    assert HORIZON >= 30
    started = time.monotonic()
    await store.set_reminder("Session", "near", "now", after=0.05)
    await until(lambda: _fired(system.actor(Session, "near"), "now", 1), "the new reminder")
    assert time.monotonic() - started < HORIZON / 3


async def _asleep(system: ActorSystem) -> bool:
    return system.reminders.sleeps > 0


async def test_missed_periods_fire_once_then_the_period_resumes(store: Store) -> None:
    # Due ten periods ago, as if no instance ran meanwhile.
    start = datetime.now(UTC) - timedelta(seconds=10.3)
    await store.set_reminder("Session", "late", "tick", at=start, every=1.0)
    async with ActorSystem(store, actors=[Session]) as system:
        ref = system.actor(Session, "late")
        await until(lambda: _fired(ref, "tick", 1), "the first firing")
        await until(lambda: _moved_on(store), "the reminder to move on")
        (reminder,) = await store.reminders()
        now = datetime.now(UTC)
        assert now < reminder.due_at <= now + timedelta(seconds=1.0)
        periods = (reminder.due_at - start).total_seconds()
        assert periods == pytest.approx(round(periods)) and periods >= 11  # on the grid
        assert await ref.fired() == ["tick"]  # once, not ten times
        await until(lambda: _fired(ref, "tick", 2), "the next period")
        assert (await ref.fired()).count("tick") == 2


async def test_a_failing_turn_sets_and_cancels_nothing(store: Store, system: ActorSystem) -> None:
    await store.set_reminder("Session", "s3", "kept", after=3600)
    ref = system.actor(Session, "s3")
    with pytest.raises(RuntimeError, match="the turn fails"):
        await ref.fail_after_reminding()
    assert [r.name for r in await store.reminders()] == ["kept"]
    assert await ref.fired() == []


async def test_a_reminder_set_in_a_turn_commits_with_its_state(store: Store) -> None:
    async with ActorSystem(store) as system:  # fires nothing: no classes registered
        await system.actor(Session, "s4").note_and_remind()
    record = await store.load("Session", "s4")
    assert record is not None and record.data == {"fired": ["noted"]}
    assert [r.name for r in await store.reminders("Session", "s4")] == ["expire"]


async def test_a_failing_on_reminder_is_retried_later(store: Store, system: ActorSystem) -> None:
    await store.set_reminder("Flaky", "f", "once", after=0.01)
    await until(lambda: _retried(store), "the failed firing to be put off")
    (reminder,) = await store.reminders()
    put_off = (reminder.due_at - datetime.now(UTC)).total_seconds()
    assert 0 < put_off <= RETRY_DELAY
    assert await store.load("Flaky", "f") is None  # the failed turn saved nothing
    assert system.reminders.fired == 0 and system.reminders.failed >= 1


async def _none_left(store: Store) -> bool:
    return await store.reminders() == []


async def _moved_on(store: Store) -> bool:
    return all(r.due_at > datetime.now(UTC) for r in await store.reminders())


async def _fired(ref: Any, name: str, times: int) -> bool:
    return bool((await ref.fired()).count(name) >= times)


async def _retried(store: Store) -> bool:
    found = await store.reminders()
    return bool(found) and found[0].due_at > datetime.now(UTC) + timedelta(seconds=1)


# -- several processes, and crashes (PostgreSQL) ---------------------------------------------


async def test_save_call_moves_on_the_reminder_it_fired(store: Store) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    await store.save("Rec", "x", {"n": 0})
    for name in ("once", "again", "stale", "other"):
        await store.set_reminder("Rec", "x", name, at=past)
    await store.set_reminder("Rec", "x", "tick", at=past, every=60)
    due = {r.name: r for r in await store.lease_reminders(["Rec"])}
    assert sorted(due) == ["again", "once", "other", "stale", "tick"]

    # Saved: the one-shot is gone, the periodic one moved to its next due time.
    record = await store.save_call(
        "Rec", "x", {"n": 1}, expected_version=1, call_id="c1", advance=due["once"]
    )
    record = await store.save_call(
        "Rec", "x", {"n": 2}, expected_version=record.version, call_id="c2", advance=due["tick"]
    )
    left = {r.name: r for r in await store.reminders("Rec", "x")}
    assert sorted(left) == ["again", "other", "stale", "tick"]
    assert left["tick"].due_at > datetime.now(UTC)

    # Recorded before (a repeated firing): nothing saved, and the reminder moved on.
    with pytest.raises(CallAlreadyApplied):
        await store.save_call(
            "Rec",
            "x",
            {"n": 9},
            expected_version=record.version,
            call_id="c1",
            advance=due["again"],
        )
    # A stale version: nothing saved, and the reminder stays due as it was.
    with pytest.raises(VersionConflict):
        await store.save_call(
            "Rec", "x", {"n": 9}, expected_version=1, call_id="c3", advance=due["stale"]
        )
    # A reminder of another record is refused before anything is written.
    elsewhere = replace(due["other"], id="y")
    with pytest.raises(InvalidInput, match="advance must be a Reminder of Rec/x"):
        await store.save_call(
            "Rec",
            "x",
            {"n": 9},
            expected_version=record.version,
            call_id="c4",
            advance=elsewhere,
        )
    left = {r.name: r for r in await store.reminders("Rec", "x")}
    assert sorted(left) == ["other", "stale", "tick"]
    assert left["stale"].due_at == due["stale"].due_at
    loaded = await store.load("Rec", "x")
    assert loaded is not None and (loaded.data, loaded.version) == ({"n": 2}, 3)
    assert await store.applied_call("Rec", "x", "c4") is None


async def test_an_actor_is_not_reloaded_for_a_change_it_made_itself(store: Store) -> None:
    # The change feed may tell of a firing's save before the save has returned to the
    # turn. Here every save waits until it has (the race made certain): that change is
    # the activation's own, and no reason to reload it.
    past = datetime.now(UTC) - timedelta(seconds=1)
    for n in range(5):
        await store.set_reminder("Session", "s", f"r{n}", at=past)
    system = ActorSystem(store, actors=[Session])
    activation = await system.activation(Session, "s")
    save_call, heard_first = store.save_call, []

    async def save_call_heard_first(*args: Any, **kwargs: Any) -> Any:
        record = await save_call(*args, **kwargs)
        await until(lambda: _heard(activation.heard, record.version), "the feed told of it")
        heard_first.append(record.version)
        return record

    store.save_call = save_call_heard_first  # type: ignore[method-assign]
    async with system:
        await until(lambda: _fired_all(system, 5), "every reminder fired")
        assert sorted(await system.actor(Session, "s").fired()) == [f"r{n}" for n in range(5)]
        assert await store.reminders() == []
    assert heard_first == [1, 2, 3, 4, 5]
    assert store.metrics().operations["load"].count == 1  # the activation's only


async def _heard(heard: int, version: int) -> bool:
    return heard >= version


async def _fired_all(system: ActorSystem, count: int) -> bool:
    return system.reminders.fired >= count


async def test_due_reminders_pages_in_due_order(store: Store) -> None:
    base = datetime.now(UTC) - timedelta(seconds=10)
    for i in range(7):
        await store.set_reminder("Session", f"s{i % 3}", f"r{i}", at=base + timedelta(seconds=i))
    pages, after = [], None
    while page := await store.due_reminders(["Session"], limit=3, after=after):
        pages.append([r.name for r in page])
        after = page[-1]
    assert pages == [["r0", "r1", "r2"], ["r3", "r4", "r5"], ["r6"]]
    with pytest.raises(InvalidInput, match="after must be a Reminder"):
        await store.due_reminders(["Session"], after="r3")  # type: ignore[arg-type]


async def test_a_silo_fires_its_own_reminders_behind_a_backlog_of_others(store: Store) -> None:
    # A Ray silo fires only its own actors' reminders; more than a page of older ones
    # belonging to other silos must not hide its own.
    past = datetime.now(UTC) - timedelta(seconds=60)
    await asyncio.gather(
        *(store.set_reminder("Session", f"other{i}", "r", at=past) for i in range(600))
    )
    await store.set_reminder("Session", "mine", "r", at=past + timedelta(seconds=30))
    mine = ActorSystem(store, actors=[Session], owns=lambda type, id: id == "mine")
    async with mine:
        await until(lambda: _fired_all(mine, 1), "the silo's own reminder")
        assert await mine.actor(Session, "mine").fired() == ["r"]
    assert len(await store.reminders("Session")) == 600  # the others' are left alone


async def test_a_reminder_that_cannot_be_fired_is_not_polled_in_a_tight_loop(
    store: Store,
) -> None:
    await store.set_reminder("Unstorable", "u", "r", after=0.01)
    async with ActorSystem(store, actors=[Unstorable]) as system:
        await until(lambda: _slept(system, 1), "the first look")
        started, first = time.monotonic(), system.reminders.sleeps
        await until(lambda: _slept(system, first + 8), "eight more looks")
        # Backing off (20 ms doubling to 1 s): eight looks take over two seconds; a
        # tight loop would make them in milliseconds.
        assert time.monotonic() - started > 1.0
        assert system.reminders.fired == 0
        (reminder,) = await store.reminders()
        assert reminder.due_at < datetime.now(UTC)  # still due: nothing was lost


async def _slept(system: ActorSystem, times: int) -> bool:
    return system.reminders.sleeps >= times


class Held(Actor[Log]):
    release = asyncio.Event()
    runs = 0

    async def on_reminder(self, name: str) -> None:
        Held.runs += 1
        self.state.fired.append(name)
        await Held.release.wait()


async def test_in_flight_counts_firings_until_they_settle(store: Store) -> None:
    Held.release = asyncio.Event()
    at = datetime.now(UTC) + timedelta(seconds=0.05)  # due together: taken in one lease
    for n in range(3):
        await store.set_reminder("Held", f"h{n}", "r", at=at)
    async with ActorSystem(store, actors=[Held]) as system:

        async def taken() -> bool:
            return system.reminders.in_flight == 3

        await until(taken, "the three firings to start")
        assert system.reminders.fired == 0 and len(await store.reminders()) == 3
        Held.release.set()

        async def settled() -> bool:
            return system.reminders.in_flight == 0

        await until(settled, "the firings to settle")
        # Once nothing is in flight, the counters are final: every firing is counted.
        assert system.reminders.fired == 3 and await store.reminders() == []


async def test_a_slow_on_reminder_holds_up_no_other_reminder(store: Store) -> None:
    Held.release = asyncio.Event()
    await store.set_reminder("Held", "h", "r", after=0.01)
    async with ActorSystem(store, actors=[Held, Session]) as system:

        async def held() -> bool:
            return system.reminders.in_flight == 1

        await until(held, "the slow firing to start")
        # Due after the slow firing started, so not in its lease: taken by a later look.
        await store.set_reminder("Session", "s", "expire", after=0.05)
        await store.set_reminder("Session", "t", "tick", every=0.05)

        async def others_fired() -> bool:
            return system.reminders.fired >= 4

        await until(others_fired, "the other reminders to fire")
        assert system.reminders.in_flight <= 2  # the slow one is still firing
        assert await system.actor(Session, "s").fired() == ["expire"]
        assert [r.id for r in await store.reminders("Held")] == ["h"]
        Held.release.set()

        async def settled() -> bool:
            return [r.id for r in await store.reminders("Held")] == []

        await until(settled, "the slow firing to commit")


async def test_a_firing_outlasting_its_lease_is_not_taken_twice_by_its_instance(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(firing, "LEASE", 0.1)
    Held.release, Held.runs = asyncio.Event(), 0
    await store.set_reminder("Held", "h", "r", after=0.01)
    async with ActorSystem(store, actors=[Held]) as system:

        async def held() -> bool:
            return Held.runs == 1

        await until(held, "the slow firing to start")
        expired = time.monotonic() + 0.1
        looks = system.reminders.sleeps

        async def looked_again() -> bool:
            return time.monotonic() > expired and system.reminders.sleeps >= looks + 3

        # Looks after the lease ran out: each took the reminder again, as due and free.
        await until(looked_again, "looks after the lease ran out")
        assert Held.runs == 1 and system.reminders.in_flight == 1
        Held.release.set()

        async def settled() -> bool:
            return system.reminders.in_flight == 0

        await until(settled, "the firing to settle")
        assert (system.reminders.fired, system.reminders.repeated, Held.runs) == (1, 0, 1)
        assert await store.reminders() == []


async def test_hung_firings_that_outlast_their_lease_do_not_stop_the_instance(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More hung on_reminder calls than an instance lets run before it takes more: once
    their lease has ended they no longer count, and the instance fires the others."""
    monkeypatch.setattr(firing, "LEASE", 0.2)
    Held.release, Held.runs = asyncio.Event(), 0
    hung = firing.ROUND // 2 + 44
    at = datetime.now(UTC) + timedelta(seconds=0.05)  # due together: taken in one lease
    for n in range(hung):
        await store.set_reminder("Held", f"h{n}", "r", at=at)
    async with ActorSystem(store, actors=[Held, Session]) as system:

        async def all_hung() -> bool:
            return Held.runs == hung

        await until(all_hung, "every held firing to start")
        assert system.reminders.in_flight == hung > firing.ROUND // 2
        await store.set_reminder("Session", "s", "expire", after=0.01)

        async def other_fired() -> bool:
            return system.reminders.fired == 1

        await until(other_fired, "the other reminder to fire beside the hung ones")
        assert await system.actor(Session, "s").fired() == ["expire"]
        assert system.reminders.in_flight == hung and Held.runs == hung
        Held.release.set()

        async def settled() -> bool:
            return system.reminders.in_flight == 0

        await until(settled, "the held firings to settle")
        # Each ran once: the instance took none of them again after its lease ended.
        assert (system.reminders.fired, system.reminders.repeated) == (hung + 1, 0)
        assert Held.runs == hung and await store.reminders() == []


async def test_closing_the_system_mid_firing_leaves_the_reminder_due(store: Store) -> None:
    Held.release, Held.runs = asyncio.Event(), 0
    await store.set_reminder("Held", "h", "r", after=0.01)
    system = ActorSystem(store, actors=[Held])
    async with system:

        async def held() -> bool:
            return Held.runs == 1

        await until(held, "the slow firing to start")
    # Closed without waiting on on_reminder: the firing was cancelled, nothing saved.
    assert system.reminders.in_flight == 0
    assert [r.id for r in await store.reminders("Held")] == ["h"]
    assert await store.load("Held", "h") is None


INSTANCE = """
import asyncio, os, sys
from dataclasses import dataclass, field, replace
from pgactors import Actor, ActorSystem, Store

@dataclass
class Log:
    fired: list = field(default_factory=list)

HANG_ID = os.environ.get("HANG_ID")

class Job(Actor[Log]):
    async def on_reminder(self, name):
        self.state.fired.append(name)
        if self.id == HANG_ID:
            print("hanging", self.id, name, flush=True)
            await asyncio.sleep(3600)

async def main(dsn, schema):
    store = await Store.connect(dsn, schema=schema)
    async with ActorSystem(store, actors=[Job]) as system:
        print("ready", flush=True)
        while not (await store.reminder_stats()).total:
            await asyncio.sleep(0.05)
        # Gone from the table once their firings committed; counted once settled here.
        while (await store.reminder_stats()).total or system.reminders.in_flight:
            await asyncio.sleep(0.05)
        print("fired", system.reminders.fired, system.reminders.repeated, flush=True)
    await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def _instance(pg_dsn: str, schema: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", INSTANCE, pg_dsn, schema],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def _line(proc: subprocess.Popen[str], starts: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith(starts), f"expected {starts!r}, got {line!r}"
    return line.strip()


async def _jobs_fired(pg_dsn: str, schema: str) -> dict[str, list[str]]:
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        query = sql.SQL("SELECT id, data -> 'fired' FROM {} WHERE type = 'Job'").format(
            sql.Identifier(schema, "pgactors_state")
        )
        cur = await conn.execute(query)
        return {id: list(fired) for id, fired in await cur.fetchall()}


async def test_two_processes_fire_1000_reminders_exactly_once(
    pg_store: Store, pg_dsn: str, schema_name: str
) -> None:
    procs = [_instance(pg_dsn, schema_name) for _ in range(2)]
    try:
        for proc in procs:
            await asyncio.to_thread(_line, proc, "ready")
        # 100 actors x 10 reminders, all due at once, set while both instances wait.
        at = datetime.now(UTC) + timedelta(seconds=0.5)
        await asyncio.gather(
            *(
                pg_store.set_reminder("Job", f"j{a}", f"r{n}", at=at)
                for a in range(100)
                for n in range(10)
            )
        )
        lines = [(await asyncio.to_thread(_line, p, "fired")).split() for p in procs]
        assert all(p.wait(30) == 0 for p in procs)
    finally:
        for proc in procs:
            proc.kill()
    counts = [int(line[1]) for line in lines]
    assert sum(counts) == 1000 and min(counts) > 0, counts  # both instances took part
    # They shared the reminders out (leases): no firing was run twice.
    assert [int(line[2]) for line in lines] == [0, 0]
    fired = await _jobs_fired(pg_dsn, schema_name)
    assert len(fired) == 100
    bad = {k: v for k, v in fired.items() if sorted(v) != sorted(f"r{n}" for n in range(10))}
    assert not bad, bad


async def test_a_killed_instance_loses_no_firing_and_doubles_none(
    pg_store: Store, pg_dsn: str, schema_name: str
) -> None:
    await asyncio.gather(
        *(pg_store.set_reminder("Job", f"k{n}", "r", after=0.01) for n in range(50))
    )
    # The first instance hangs inside one firing; the others go through.
    doomed = _instance(pg_dsn, schema_name, HANG_ID="k25")
    try:
        await asyncio.to_thread(_line, doomed, "ready")
        assert (await asyncio.to_thread(_line, doomed, "hanging")).split()[1] == "k25"

        async def others_committed() -> bool:
            return len(await _jobs_fired(pg_dsn, schema_name)) == 49

        await until(others_committed, "the other firings to commit")
        # Mid-firing: inside on_reminder, its reminder still set and its state not saved.
        assert [r.id for r in await pg_store.reminders("Job", "k25")] == ["k25"]
        assert "k25" not in await _jobs_fired(pg_dsn, schema_name)
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(10)
    finally:
        doomed.kill()
    before = await _jobs_fired(pg_dsn, schema_name)  # what it committed before the kill
    assert "k25" not in before and len(before) == 49
    survivor = _instance(pg_dsn, schema_name)
    try:
        await asyncio.to_thread(_line, survivor, "ready")
        line = await asyncio.to_thread(_line, survivor, "fired")
        assert survivor.wait(30) == 0
    finally:
        survivor.kill()
    fired = await _jobs_fired(pg_dsn, schema_name)
    assert sorted(fired) == sorted(f"k{n}" for n in range(50))
    assert all(names == ["r"] for names in fired.values())  # exactly once each
    assert int(line.split()[1]) == 1  # only the hung one was left to fire
