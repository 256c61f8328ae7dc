"""Coalescing: unit tests of the mechanism, and its guarantees on the real database."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
from collections.abc import Sequence

import psycopg
import pytest
from psycopg import sql

from pgactors import Store, SyncStore, VersionConflict
from pgactors.coalesce import Coalescer


class Recorder:
    """An executor that records its batches and answers after a short delay."""

    def __init__(self, fail_on: str | None = None, crash: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.singles: list[str] = []
        self.fail_on = fail_on
        self.crash = crash

    async def many(self, batch: list[str]) -> Sequence[str | BaseException]:
        self.batches.append(batch)
        await asyncio.sleep(0.01)
        if self.crash:
            raise ConnectionError("lost")
        return [ValueError(r) if r == self.fail_on else r.upper() for r in batch]

    async def one(self, request: str) -> str:
        self.singles.append(request)
        await asyncio.sleep(0.01)
        return request.upper()


async def test_lone_caller_runs_alone_without_a_batch() -> None:
    rec = Recorder()
    coalescer = Coalescer(rec.many, execute_one=rec.one, max_inflight=2, max_batch=10)
    assert await coalescer.submit("a", "a") == "A"
    assert await coalescer.submit("b", "b") == "B"
    assert rec.singles == ["a", "b"] and rec.batches == []


async def test_concurrent_callers_share_round_trips() -> None:
    rec = Recorder()
    coalescer = Coalescer(rec.many, execute_one=rec.one, max_inflight=1, max_batch=100)
    keys = [f"k{n}" for n in range(50)]
    results = await asyncio.gather(*(coalescer.submit(k, k) for k in keys))
    assert results == [k.upper() for k in keys]
    assert len(rec.singles) + len(rec.batches) <= 3
    assert sorted(rec.singles + [r for b in rec.batches for r in b]) == sorted(keys)


async def test_max_batch_and_max_inflight_are_respected() -> None:
    rec = Recorder()
    inflight = peak = 0

    async def many(batch: list[str]) -> Sequence[str | BaseException]:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        try:
            return await rec.many(batch)
        finally:
            inflight -= 1

    coalescer = Coalescer(many, max_inflight=2, max_batch=7)
    await asyncio.gather(*(coalescer.submit(n, str(n)) for n in range(60)))
    assert peak <= 2
    assert max(len(b) for b in rec.batches) <= 7
    assert sum(len(b) for b in rec.batches) == 60


async def test_one_item_failure_reaches_only_its_caller() -> None:
    rec = Recorder(fail_on="bad")
    coalescer = Coalescer(rec.many, max_inflight=1, max_batch=10)
    outcomes = await asyncio.gather(
        *(coalescer.submit(k, k) for k in ["a", "bad", "c"]), return_exceptions=True
    )
    assert outcomes[0] == "A" and outcomes[2] == "C"
    assert isinstance(outcomes[1], ValueError)


async def test_batch_failure_reaches_every_caller_of_that_batch() -> None:
    rec = Recorder(crash=True)
    coalescer = Coalescer(rec.many, max_inflight=1, max_batch=10)
    outcomes = await asyncio.gather(
        *(coalescer.submit(k, k) for k in "abc"), return_exceptions=True
    )
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    rec.crash = False
    assert await coalescer.submit("d", "d") == "D"


async def test_same_key_never_twice_in_one_batch() -> None:
    rec = Recorder()
    coalescer = Coalescer(rec.many, max_inflight=1, max_batch=100)
    await asyncio.gather(*(coalescer.submit("same", f"v{n}") for n in range(5)))
    assert all(len(b) == 1 for b in rec.batches)
    assert [b[0] for b in rec.batches] == [f"v{n}" for n in range(5)]


async def test_cancelled_caller_does_not_disturb_others() -> None:
    rec = Recorder()
    coalescer = Coalescer(rec.many, max_inflight=1, max_batch=100)
    tasks = [asyncio.create_task(coalescer.submit(k, k)) for k in "abcdef"]
    await asyncio.sleep(0)
    tasks[3].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[3], asyncio.CancelledError)
    assert [r for i, r in enumerate(results) if i != 3] == ["A", "B", "C", "E", "F"]


# -- on the real database ------------------------------------------------------------


async def test_coalesced_compare_and_set_fails_only_the_stale_callers(pg_store: Store) -> None:
    ids = [f"k{n:02d}" for n in range(40)]
    await pg_store.save_many("T", {i: {"n": 0} for i in ids})
    await pg_store.save_many("T", {i: {"n": 1} for i in ids[::4]})  # these are now v2

    async def cas(i: str) -> int | str:
        try:
            return (await pg_store.save("T", i, {"n": 9}, expected_version=1)).version
        except VersionConflict as exc:
            return f"conflict {exc.expected}->{exc.actual}"

    results = dict(zip(ids, await asyncio.gather(*(cas(i) for i in ids)), strict=True))
    for n, i in enumerate(ids):
        assert results[i] == ("conflict 1->2" if n % 4 == 0 else 2)
    missing = await asyncio.gather(
        *(pg_store.save("T", f"none{n}", {}, expected_version=3) for n in range(5)),
        pg_store.save("T", "fresh", {}, expected_version=0),
        pg_store.save("T", ids[1], {}, expected_version=0),
        return_exceptions=True,
    )
    assert [(e.expected, e.actual) for e in missing[:5]] == [(3, 0)] * 5  # type: ignore[union-attr]
    assert missing[5].version == 1  # type: ignore[union-attr]
    assert (missing[6].expected, missing[6].actual) == (0, 2)  # type: ignore[union-attr]


async def test_coalescing_actually_batches(pg_store: Store) -> None:
    coalesced = pg_store._backend.records.coalesced  # type: ignore[attr-defined]
    before, items_before = coalesced.lww.batches, coalesced.lww.items
    await asyncio.gather(*(pg_store.save("T", f"b{n}", {"n": n}) for n in range(64)))
    # All 64 are submitted before any answer: two go alone (the two statement slots),
    # the other 62 wait and go together in the next free slot.
    assert coalesced.lww.batches - before == 1
    assert coalesced.lww.items - items_before == 62
    loaded = await asyncio.gather(*(pg_store.load("T", f"b{n}") for n in range(64)))
    assert [r.data for r in loaded] == [{"n": n} for n in range(64)]  # type: ignore[union-attr]


async def test_acknowledged_saves_are_committed(pg_store: Store, pg_dsn: str) -> None:
    records = await asyncio.gather(*(pg_store.save("Ack", f"a{n}", {"n": n}) for n in range(100)))
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            sql.SQL("SELECT id, version FROM {} WHERE type = 'Ack'").format(
                sql.Identifier(pg_store.config.schema, "pgactors_state")
            )
        ).fetchall()
    assert dict(rows) == {r.id: r.version for r in records}


def _hammer(dsn: str, schema: str, seed: int) -> None:
    async def run() -> None:
        async with await Store.connect(dsn, schema=schema) as store:
            rng = random.Random(seed)

            async def worker() -> None:
                for _ in range(40):
                    key = f"hot{rng.randrange(12)}"
                    await store.update("Hot", key, lambda d: {"n": d["n"] + 1}, default={"n": 0})

            await asyncio.gather(*(worker() for _ in range(8)))

    asyncio.run(run())


@pytest.mark.slow
def test_processes_hammering_overlapping_keys_lose_nothing(
    pg_dsn: str, pg_store_sync: SyncStore
) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_hammer, args=(pg_dsn, pg_store_sync.config.schema, s)) for s in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    records = pg_store_sync.load_many("Hot", [f"hot{n}" for n in range(12)])
    assert sum(r.data["n"] for r in records.values()) == 3 * 8 * 40  # type: ignore[index]
