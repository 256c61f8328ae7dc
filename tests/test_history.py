"""The history checker (tests/history): it finds planted bugs, in synthetic histories
and end to end, and finds nothing wrong with pgactors under faults.

The fault test runs clients against its own embedded server and its synchronous standby
(through the failover DSN) while backends are terminated, the server is SIGKILLed and
restarted, the server or only the store's backends are SIGSTOPped, and the primary is
SIGKILLed and its standby promoted; it asserts that each fault happened and disturbed
the clients, and that no anomaly and no lost acknowledged write was found.
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from history.checks import Anomaly, FeedChange, FinalState, check_feed, check_registers
from history.faults import Cluster, Failover, default_faults
from history.record import History, Op, Outcome
from history.runner import RunConfig, RunResult, run_history
from pgactors import PgActorsError, Record, Store, StoreUnavailable, VersionConflict

# --- synthetic histories ---------------------------------------------------------------


def write(
    h: History,
    key: str,
    token: str,
    span: tuple[float, float],
    version: int | None,
    *,
    expected: int | None = None,
    outcome: Outcome = "ok",
) -> Op:
    op = Op(len(h.ops), 0, "write", key, span[0], token, expected, span[1], outcome, version)
    h.ops.append(op)
    return op


def read(h: History, key: str, span: tuple[float, float], version: int, token: str | None) -> Op:
    op = Op(len(h.ops), 1, "read", key, span[0], token, None, span[1], "ok", version)
    h.ops.append(op)
    return op


def kinds(anomalies: list[Anomaly]) -> set[str]:
    return {a.kind for a in anomalies}


def good_history() -> History:
    """k: t1 -> v1, CAS t2 -> v2, a CAS that lost (t3), an unknown write (t4) that
    committed as v3 and was read."""
    h = History()
    write(h, "k", "t1", (0, 1), 1, expected=0)
    read(h, "k", (2, 3), 1, "t1")
    write(h, "k", "t2", (4, 5), 2, expected=1)
    write(h, "k", "t3", (4, 6), None, expected=1, outcome="fail")
    read(h, "k", (4.5, 7), 2, "t2")
    write(h, "k", "t4", (8, 9), None, outcome="unknown")
    read(h, "k", (10, 11), 3, "t4")
    return h


GOOD_FINAL = {"k": FinalState(3, "t4")}
GOOD_FEED = [FeedChange("k", 1, 1), FeedChange("k", 2, 2), FeedChange("k", 3, 3)]


def test_a_good_history_passes() -> None:
    h = good_history()
    assert check_registers(h, GOOD_FINAL) == []
    assert check_feed(GOOD_FEED, h, GOOD_FINAL) == []


def test_a_lost_acknowledged_write_is_found() -> None:
    h = good_history()
    assert kinds(check_registers(h, {"k": FinalState(1, "t1")})) == {"lost-write"}
    # t4's outcome was unknown, but a read saw it committed: it must survive too.
    assert kinds(check_registers(h, {"k": FinalState(2, "t2")})) == {"lost-write"}
    h = History()
    write(h, "k", "t1", (0, 1), 1, expected=0)
    write(h, "k", "t2", (2, 3), None, outcome="unknown")
    # Version 1 survived, but with another write's data: t1 was lost.
    assert kinds(check_registers(h, {"k": FinalState(1, "t2")})) == {"lost-write"}


def test_a_stale_read_is_found() -> None:
    h = good_history()
    read(h, "k", (12, 13), 2, "t2")  # v3 was read (acknowledged) at 11
    assert kinds(check_registers(h, GOOD_FINAL)) == {"stale-read"}
    h = History()
    write(h, "k", "t1", (0, 1), 1)
    read(h, "k", (2, 3), 0, None)  # the record after it was created
    assert kinds(check_registers(h, {"k": FinalState(1, "t1")})) == {"stale-read"}


def test_a_read_concurrent_with_a_write_may_see_either_version() -> None:
    h = History()
    write(h, "k", "t1", (0, 1), 1)
    write(h, "k", "t2", (2, 5), 2)
    read(h, "k", (3, 4), 1, "t1")
    read(h, "k", (3, 6), 2, "t2")
    assert check_registers(h, {"k": FinalState(2, "t2")}) == []


def test_two_compare_and_set_winners_of_one_version_are_found() -> None:
    h = History()
    write(h, "k", "t1", (0, 1), 1, expected=0)
    write(h, "k", "t2", (2, 3), 2, expected=1)
    write(h, "k", "t3", (2, 4), 2, expected=1)
    assert "duplicate-version" in kinds(check_registers(h, {"k": FinalState(2, "t3")}))
    h = History()
    write(h, "k", "t1", (0, 1), 3, expected=1)
    assert kinds(check_registers(h, {"k": FinalState(3, "t1")})) == {"cas-version"}


def test_a_read_of_data_nobody_wrote_is_found() -> None:
    h = good_history()
    read(h, "k", (12, 13), 3, "nobody")
    read(h, "k", (12, 13), 3, "t3")  # t3 lost its compare-and-set
    found = check_registers(h, GOOD_FINAL)
    assert [a.kind for a in found] == ["phantom-read", "phantom-read"]
    assert kinds(check_registers(good_history(), {"k": FinalState(3, "t3")})) == {"phantom-read"}


def test_an_acknowledged_version_read_with_other_data_is_found() -> None:
    h = good_history()
    write(h, "k", "t5", (12, 13), None, outcome="unknown")
    read(h, "k", (14, 15), 2, "t5")  # version 2 is t2's: t2 was lost
    assert kinds(check_registers(h, GOOD_FINAL)) == {"lost-write", "stale-read"}
    h = good_history()
    write(h, "k", "t5", (12, 13), None, outcome="unknown")
    read(h, "k", (14, 15), 3, "t5")  # version 3 is t4's, as another read saw
    assert kinds(check_registers(h, GOOD_FINAL)) == {"wrong-data"}
    h = good_history()
    read(h, "k", (12, 13), 4, "t4")  # t4 was read as version 3 before
    assert kinds(check_registers(h, {"k": FinalState(4, "t4")})) == {"wrong-data"}
    h = good_history()
    read(h, "k", (12, 13), 4, "t2")  # t2 was acknowledged as version 2
    assert kinds(check_registers(h, {"k": FinalState(4, "t2")})) == {"wrong-data"}


def test_a_feed_gap_and_a_missing_change_are_found() -> None:
    h = good_history()
    feed = [FeedChange("k", 1, 1), FeedChange("k", 3, 3)]
    assert kinds(check_feed(feed, h, GOOD_FINAL)) == {
        "feed-gap",
        "feed-missing",
        "feed-missing-ack",
    }


def test_a_duplicate_feed_position_and_out_of_order_versions_are_found() -> None:
    h = good_history()
    assert kinds(check_feed([*GOOD_FEED, GOOD_FEED[-1]], h, GOOD_FINAL)) == {
        "feed-duplicate",
        "feed-order",
    }
    swapped = [FeedChange("k", 2, 1), FeedChange("k", 1, 2), FeedChange("k", 3, 3)]
    assert kinds(check_feed(swapped, h, GOOD_FINAL)) == {"feed-order"}
    beyond = [*GOOD_FEED, FeedChange("k", 4, 4)]
    assert kinds(check_feed(beyond, h, GOOD_FINAL)) == {"feed-phantom"}


async def test_the_recorder_classifies_outcomes_and_driver_leaks() -> None:
    h = History()
    async with h.invoke(0, "write", "k", token="a") as call:
        call.ok(1)
    async with h.invoke(0, "write", "k", token="b", expected=0):
        raise VersionConflict("T", "k", 0, 1)
    async with h.invoke(0, "write", "k", token="c"):
        raise StoreUnavailable("down")
    async with h.invoke(0, "read", "k"):
        raise OSError("a driver error that leaked")
    assert [(op.outcome, op.version) for op in h.ops] == [
        ("ok", 1),
        ("fail", None),
        ("unknown", None),
        ("unknown", None),
    ]
    assert all(op.complete is not None and op.complete >= op.invoke for op in h.ops)
    assert len(h.leaks) == 1 and "OSError" in h.leaks[0]
    assert not issubclass(OSError, PgActorsError)


# --- planted bugs, end to end ----------------------------------------------------------


def plant_ack_without_commit(store: Store) -> None:
    """Every 7th compare-and-set returns success without writing anything."""
    real_save = store.save
    calls = itertools.count()

    async def save(type: str, id: str, data: Any, *, expected_version: Any = None) -> Record:
        if expected_version is not None and next(calls) % 7 == 3:
            now = datetime.now(UTC)
            return Record(type, id, data, expected_version + 1, now, now)
        return await real_save(type, id, data, expected_version=expected_version)

    store.save = save  # type: ignore[method-assign]


def plant_stale_cache(store: Store) -> None:
    """Loads sometimes answer from a cache of the first version seen."""
    real_load = store.load
    cache: dict[str, Record] = {}
    rng = random.Random(7)

    async def load(type: str, id: str) -> Record | None:
        record = await real_load(type, id)
        if record is not None:
            cache.setdefault(id, record)
        return cache[id] if id in cache and rng.random() < 0.2 else record

    store.load = load  # type: ignore[method-assign]


@pytest.mark.parametrize(
    ("plant", "expected"),
    [
        (plant_ack_without_commit, {"lost-write", "duplicate-version"}),
        (plant_stale_cache, {"stale-read"}),
    ],
)
async def test_the_checker_finds_a_planted_bug(
    pg_dsn: str, schema_name: str, plant: Any, expected: set[str]
) -> None:
    config = RunConfig(duration=3.0, interval=0.5, schema=schema_name, seed=1, plant=plant)
    result = await run_history(Cluster(None, pg_dsn), config)
    found = kinds(result.anomalies)
    assert found & expected, f"the planted bug went unnoticed: {found or 'no anomalies'}"
    assert (result.lost > 0) == (plant is plant_ack_without_commit), describe(result)


async def test_a_run_without_faults_or_bugs_is_clean(pg_dsn: str, schema_name: str) -> None:
    config = RunConfig(duration=2.0, interval=0.5, schema=schema_name, seed=2)
    result = await run_history(Cluster(None, pg_dsn), config)
    assert result.anomalies == []
    counts = result.history.counts()
    assert counts["write ok"] > 50 and counts["read ok"] > 50
    assert len(result.changes) == counts["write ok"]  # no unknown writes without faults


# --- pgactors under faults -------------------------------------------------------------


def describe(result: RunResult) -> str:
    lines = [result.table(), *map(str, result.anomalies[:20])]
    for event, seen in zip(result.events, result.evidence, strict=True):
        lines.append(f"{event.kind} {event.end - event.start:.2f}s {event.detail} {seen}")
    return "\n".join(lines)


@pytest.mark.slow
async def test_no_anomaly_and_no_lost_write_under_faults(tmp_path: Path) -> None:
    cluster = Cluster.replicated(tmp_path / "a", tmp_path / "b")
    first_primary = cluster.our_server().data_dir
    try:
        # A second failover promotes the rebuilt standby, through the same DSN; it holds
        # the standby's WAL receiver first, so that the kill comes while commits wait.
        faults = [*default_faults(), Failover(freeze=0.5)]
        config = RunConfig(duration=18.0, interval=2.0, faults=faults, seed=3)
        result = await run_history(cluster, config)
    finally:
        cluster.stop()
    report = describe(result)
    assert result.anomalies == [], report
    assert result.lost == 0 and result.stuck == 0, report
    # Every fault kind happened, and clients saw it.
    by_kind = result.faults_by_kind()
    assert all(
        by_kind.get(kind, 0) >= 1
        for kind in ("terminate", "kill", "pause", "pause-backends", "failover")
    ), report
    seen = list(zip(result.events, result.evidence, strict=True))
    for event, around in seen:
        # Acknowledged writes and reads on both sides of every fault.
        assert around["acked_before"] > 0 and around["acked_after"] > 0, report
        if event.kind == "terminate":
            assert event.detail["terminated"] > 0, report
        if event.kind == "kill":
            assert event.detail == {"killed": 1, "restarted": 1}, report
        if event.kind == "pause":  # the postmaster and all its children
            assert event.detail["stopped"] > 1 and around["stalled"] > 0, report
        if event.kind == "pause-backends":
            assert event.detail["stopped"] > 0 and around["stalled"] > 0, report
        if event.kind == "failover":
            # The same stores (never reconnected by hand) went on through the new primary,
            # and the old one's directory is its synchronous standby now.
            assert event.detail["killed"] == event.detail["promoted"] == 1, report
            assert event.detail["rebuilt"] == 1, report
    assert by_kind["failover"] >= 2, report
    assert any(e.detail.get("froze_receiver") for e in result.events), report
    for kind in ("terminate", "kill", "failover"):
        assert sum(a["unknown"] for e, a in seen if e.kind == kind) > 0, report
    assert result.feed_reconnects > 0, report
    counts = result.history.counts()
    assert counts["write ok"] > 100 and counts["read ok"] > 100, report
    assert counts.get("write unknown", 0) + counts.get("read unknown", 0) > 0, report
    # The roles swapped once per failover, and the final state was read after the last.
    assert (cluster.our_server().data_dir != first_primary) == (by_kind["failover"] % 2 == 1)
    last_failover = max(e.end for e in result.events if e.kind == "failover")
    assert any(op.outcome == "ok" and op.invoke > last_failover for op in result.history.ops)


@pytest.mark.slow
async def test_the_checker_finds_writes_lost_by_an_asynchronous_failover(tmp_path: Path) -> None:
    """The planted bug is the configuration: an asynchronous standby whose WAL receiver
    is held while the primary acknowledges writes, then the primary dies."""
    cluster = Cluster.replicated(tmp_path / "a", tmp_path / "b", synchronous=False)
    try:
        # The consumer saw changes that were lost, and resumes after their positions:
        # when more were lost than written after the failover, the feed never reaches
        # the final versions, and the runner would wait its whole settle time for it.
        config = RunConfig(
            duration=2.0, interval=1.0, faults=[Failover(freeze=1.0)], seed=4, settle=10.0
        )
        result = await run_history(cluster, config)
    finally:
        cluster.stop()
    report = describe(result)
    assert [e.detail["froze_receiver"] for e in result.events] == [1], report
    assert "lost-write" in kinds(result.anomalies) and result.lost > 0, report
