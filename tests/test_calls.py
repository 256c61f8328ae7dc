"""Recorded calls: ``Store.save_call`` (state and call id committed together) and
exactly-once turns through ``ActorSystem.invoke(call_id=...)``, on both backends."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import pytest

from pgactors import InvalidInput, Store, VersionConflict
from pgactors.actors import Actor, ActorSystem
from pgactors.errors import CallAlreadyApplied


async def test_save_call_commits_state_and_call_together(store: Store) -> None:
    created = await store.save_call(
        "Acct", "a", {"n": 1}, expected_version=0, call_id="c1", result={"ok": 1}
    )
    assert created.version == 1 and created.data == {"n": 1}
    saved = await store.save_call("Acct", "a", {"n": 2}, expected_version=1, call_id="c2")
    assert saved.version == 2
    applied = await store.applied_call("Acct", "a", "c1")
    assert applied is not None and applied.result == {"ok": 1} and applied.call_id == "c1"
    assert (await store.applied_call("Acct", "a", "c2")).result is None  # type: ignore[union-attr]
    assert await store.applied_call("Acct", "a", "nope") is None
    assert await store.applied_call("Acct", "other", "c1") is None  # per record

    with pytest.raises(CallAlreadyApplied) as again:
        await store.save_call("Acct", "a", {"n": 3}, expected_version=2, call_id="c1")
    assert again.value.call.result == {"ok": 1}
    with pytest.raises(VersionConflict):
        await store.save_call("Acct", "a", {"n": 3}, expected_version=1, call_id="c3")
    with pytest.raises(VersionConflict):
        await store.save_call("Acct", "b", {"n": 3}, expected_version=4, call_id="c3")
    record = await store.load("Acct", "a")
    assert record is not None and record.version == 2 and record.data == {"n": 2}
    assert await store.applied_call("Acct", "a", "c3") is None  # nothing recorded

    # Call ids never show in the data, queries or exports.
    lines = [line async for line in store.export_lines()]
    assert len(lines) == 1 and "c1" not in lines[0] and "ok" not in lines[0]
    assert [r.data for r in (await store.query("Acct")).items] == [{"n": 2}]


async def test_save_call_is_atomic_in_a_transaction(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.save_call("T", "x", [1], expected_version=0, call_id="k", result=5)
            raise RuntimeError("roll back")
    assert await store.load("T", "x") is None
    assert await store.applied_call("T", "x", "k") is None
    async with store.transaction() as tx:
        await tx.save_call("T", "x", [1], expected_version=0, call_id="k", result=5)
        assert (await tx.applied_call("T", "x", "k")).result == 5  # type: ignore[union-attr]
    assert (await store.applied_call("T", "x", "k")).result == 5  # type: ignore[union-attr]


async def test_concurrent_saves_of_one_call_apply_it_once(store: Store) -> None:
    await store.save("T", "race", {"n": 0})
    outcomes = await asyncio.gather(
        *(
            store.save_call("T", "race", {"n": 1}, expected_version=1, call_id="same")
            for _ in range(20)
        ),
        return_exceptions=True,
    )
    saved = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(saved) == 1, outcomes
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(isinstance(o, CallAlreadyApplied | VersionConflict) for o in failed), failed
    assert (await store.load("T", "race")).version == 2  # type: ignore[union-attr]


async def test_bad_call_arguments_are_refused_and_nothing_written(store: Store) -> None:
    for kwargs, message in [
        ({"expected_version": None, "call_id": "c"}, "expected_version must be an int >= 0"),
        ({"expected_version": 0, "call_id": ""}, "invalid call_id"),
        ({"expected_version": 0, "call_id": "x\n"}, "invalid call_id"),
        ({"expected_version": 0, "call_id": 5}, "invalid call_id"),
        ({"expected_version": 0, "call_id": "c", "result": float("nan")}, "NaN"),
        (
            {"expected_version": 0, "call_id": "c", "result": store.encode_binary(b"x", "raw")},
            "cannot be a binary state",
        ),
    ]:
        with pytest.raises(InvalidInput, match=message):
            await store.save_call("T", "bad", {"n": 1}, **kwargs)  # type: ignore[arg-type]
    assert await store.load("T", "bad") is None
    with pytest.raises(InvalidInput, match="older_than"):
        await store.purge_calls(older_than=-1)


async def test_purge_calls_forgets_old_calls_only(store: Store) -> None:
    await store.save_call("T", "p", 1, expected_version=0, call_id="old")
    assert await store.purge_calls(older_than=3600) == 0
    assert await store.applied_call("T", "p", "old") is not None
    assert await store.purge_calls(older_than=0) == 1
    assert await store.applied_call("T", "p", "old") is None
    assert (await store.load("T", "p")).data == 1  # type: ignore[union-attr]


@dataclass
class Balance:
    n: int = 0


@dataclass
class Receipt:
    before: int
    after: int


class Wallet(Actor[Balance]):
    runs = 0

    async def add(self, k: int) -> Receipt:
        Wallet.runs += 1
        before = self.state.n
        self.state.n += k
        return Receipt(before, self.state.n)

    async def peek(self) -> int:
        return self.state.n

    async def bad(self) -> object:
        self.state.n += 1
        return {1, 2}


async def test_a_call_id_is_applied_once_and_answered_from_the_record(store: Store) -> None:
    Wallet.runs = 0
    call = str(uuid.uuid4())
    async with ActorSystem(store) as first:
        assert await first.invoke(Wallet, "w", "add", (5,), call_id=call) == Receipt(0, 5)
        assert Wallet.runs == 1
        # The same call again, known to be a retry: answered without running.
        again = await first.invoke(Wallet, "w", "add", (5,), call_id=call, maybe_applied=True)
        assert again == Receipt(0, 5) and Wallet.runs == 1
        # Not flagged as a retry: it runs, but its save is refused and the recorded
        # answer comes back; its effect is dropped.
        again = await first.invoke(Wallet, "w", "add", (5,), call_id=call)
        assert again == Receipt(0, 5) and Wallet.runs == 2
        assert await first.invoke(Wallet, "w", "peek") == 5
    # A fresh instance (a restarted silo) answers the retry too.
    async with ActorSystem(store) as second:
        again = await second.invoke(Wallet, "w", "add", (5,), call_id=call, maybe_applied=True)
        assert again == Receipt(0, 5)
        assert await second.invoke(Wallet, "w", "add", (1,), call_id="next") == Receipt(5, 6)
    assert (await store.load("Wallet", "w")).data == {"n": 6}  # type: ignore[union-attr]


async def test_reads_record_nothing_and_unstorable_results_change_nothing(store: Store) -> None:
    async with ActorSystem(store) as system:
        await system.invoke(Wallet, "r", "add", (1,), call_id="a")
        assert await system.invoke(Wallet, "r", "peek", call_id="read") == 1
        assert await store.applied_call("Wallet", "r", "read") is None
        with pytest.raises(InvalidInput, match=r"Wallet.bad\(\) result .* must be JSON"):
            await system.invoke(Wallet, "r", "bad", call_id="b")
        assert await system.invoke(Wallet, "r", "peek") == 1
        with pytest.raises(InvalidInput, match="no method"):
            await system.invoke(Wallet, "r", "_private")
    assert (await store.load("Wallet", "r")).version == 1  # type: ignore[union-attr]


async def test_another_instance_applied_the_call_while_we_ran(store: Store) -> None:
    """A zombie and its replacement run the same call: one applies it; the other's save
    is refused (the call is recorded) and it answers with the recorded result."""
    async with (
        ActorSystem(store, follow_changes=False) as a,
        ActorSystem(store, follow_changes=False) as b,
    ):
        await a.invoke(Wallet, "z", "add", (1,))
        await b.invoke(Wallet, "z", "peek")  # both hold version 1
        assert await a.invoke(Wallet, "z", "add", (10,), call_id="dup") == Receipt(1, 11)
        assert await b.invoke(Wallet, "z", "add", (10,), call_id="dup") == Receipt(1, 11)
        assert await b.invoke(Wallet, "z", "peek") == 11
    assert (await store.load("Wallet", "z")).data == {"n": 11}  # type: ignore[union-attr]


def test_blocking_store_records_calls(pg_store_sync: object) -> None:
    store = pg_store_sync
    store.save_call("T", "s", {"n": 1}, expected_version=0, call_id="c", result=[1])  # type: ignore[attr-defined]
    assert store.applied_call("T", "s", "c").result == [1]  # type: ignore[attr-defined]
    with pytest.raises(CallAlreadyApplied):
        store.save_call("T", "s", {"n": 2}, expected_version=1, call_id="c")  # type: ignore[attr-defined]
    assert store.purge_calls(older_than=0) == 1  # type: ignore[attr-defined]
    with store.transaction() as tx:  # type: ignore[attr-defined]
        assert tx.load("T", "s", lock=True).data == {"n": 1}
