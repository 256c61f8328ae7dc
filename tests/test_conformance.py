"""The conformance suite: every backend (in-memory and PostgreSQL) must pass it."""

from __future__ import annotations

import asyncio
import json
import math
import random
from typing import Any

import pytest

from pgactors import InvalidInput, NotFound, Store, VersionConflict

# Every backend, PostgreSQL with a hash-partitioned state table (`init --partitions`),
# through PgBouncer, and both with the read cache on (`cache_size`).
pytestmark = pytest.mark.parametrize(
    "store",
    [
        "memory",
        "postgres",
        "postgres-partitioned",
        "pgbouncer-transaction",
        "pgbouncer-session",
        "memory-cached",
        "postgres-cached",
    ],
    indirect=True,
)

JSON_VALUES: list[Any] = [
    {"username": "alice", "score": 100, "tags": ["a", "b"], "nested": {"x": [1, 2.5, None]}},
    [1, "two", 3.25, True, False, None, {"k": []}],
    'plain string with unicode: żółw 🐢 and "quotes" and \\backslash',
    0,
    -(2**62),
    2**80,
    1.5e-300,
    True,
    False,
    None,
    {},
    [],
    "",
    {"": "empty key", "\\u0000 escaped text": "not a NUL"},
]


@pytest.mark.parametrize("value", JSON_VALUES, ids=range(len(JSON_VALUES)))
async def test_round_trip_every_json_kind(store: Store, value: Any) -> None:
    saved = await store.save("Thing", "t1", value)
    loaded = await store.load("Thing", "t1")
    assert loaded is not None
    assert loaded.data == value
    assert saved.data == value
    assert type(loaded.data) is type(value)
    assert (loaded.type, loaded.id, loaded.version) == ("Thing", "t1", 1)


async def test_load_missing_returns_none(store: Store) -> None:
    assert await store.load("Thing", "nope") is None
    assert await store.exists("Thing", "nope") is False


async def test_versions_increment_and_timestamps(store: Store) -> None:
    first = await store.save("User", "u1", {"n": 1})
    second = await store.save("User", "u1", {"n": 2})
    third = await store.save("User", "u1", {"n": 3}, expected_version=2)
    assert [first.version, second.version, third.version] == [1, 2, 3]
    loaded = await store.load("User", "u1")
    assert loaded is not None and loaded.data == {"n": 3} and loaded.version == 3
    assert loaded.created_at == first.created_at
    assert loaded.updated_at >= first.updated_at
    assert await store.exists("User", "u1")


async def test_record_is_frozen(store: Store) -> None:
    record = await store.save("User", "u1", {"n": 1})
    with pytest.raises(AttributeError):
        record.version = 7  # type: ignore[misc]


async def test_stale_compare_and_set_rejected_and_record_untouched(store: Store) -> None:
    await store.save("User", "u1", {"n": 1})
    await store.save("User", "u1", {"n": 2})
    with pytest.raises(VersionConflict) as info:
        await store.save("User", "u1", {"n": 99}, expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    loaded = await store.load("User", "u1")
    assert loaded is not None and loaded.data == {"n": 2} and loaded.version == 2


async def test_compare_and_set_on_missing_record_reports_actual_zero(store: Store) -> None:
    with pytest.raises(VersionConflict) as info:
        await store.save("User", "ghost", {"n": 1}, expected_version=3)
    assert (info.value.expected, info.value.actual) == (3, 0)
    assert await store.load("User", "ghost") is None


async def test_create_only_fails_when_record_exists(store: Store) -> None:
    await store.save("User", "u1", {"n": 1}, expected_version=0)
    with pytest.raises(VersionConflict) as info:
        await store.save("User", "u1", {"n": 2}, expected_version=0)
    assert (info.value.expected, info.value.actual) == (0, 1)


async def test_create_only_with_20_concurrent_racers_exactly_one_wins(store: Store) -> None:
    async def racer(n: int) -> int | None:
        try:
            await store.save("Room", "lobby", {"owner": n}, expected_version=0)
            return n
        except VersionConflict:
            return None

    results = await asyncio.gather(*(racer(n) for n in range(20)))
    winners = [n for n in results if n is not None]
    assert len(winners) == 1
    loaded = await store.load("Room", "lobby")
    assert loaded is not None and loaded.data == {"owner": winners[0]} and loaded.version == 1


async def test_delete(store: Store) -> None:
    assert await store.delete("User", "missing") is False
    await store.save("User", "u1", {"n": 1})
    assert await store.delete("User", "u1") is True
    assert await store.load("User", "u1") is None
    assert await store.delete("User", "u1") is False
    again = await store.save("User", "u1", {"n": 2})
    assert again.version == 1


async def test_stale_delete_rejected(store: Store) -> None:
    await store.save("User", "u1", {"n": 1})
    await store.save("User", "u1", {"n": 2})
    with pytest.raises(VersionConflict) as info:
        await store.delete("User", "u1", expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert await store.exists("User", "u1")
    assert await store.delete("User", "u1", expected_version=2) is True
    with pytest.raises(VersionConflict):
        await store.delete("User", "u1", expected_version=2)


async def test_update_16_tasks_x_100_increments(store: Store) -> None:
    await store.save("Counter", "c", {"n": 0})

    def increment(data: dict[str, int]) -> dict[str, int]:
        return {"n": data["n"] + 1}

    async def worker() -> None:
        for _ in range(100):
            await store.update("Counter", "c", increment)

    await asyncio.gather(*(worker() for _ in range(16)))
    loaded = await store.load("Counter", "c")
    assert loaded is not None and loaded.data == {"n": 1600} and loaded.version == 1601


async def test_update_missing_uses_default_or_raises(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.update("Counter", "c", lambda d: d)
    default = {"n": 0}
    record = await store.update("Counter", "c", lambda d: {"n": d["n"] + 5}, default=default)
    assert record.data == {"n": 5} and record.version == 1
    assert default == {"n": 0}


async def test_update_runs_on_private_copy_and_in_place_mutation(store: Store) -> None:
    await store.save("Doc", "d", {"items": [1]})
    seen: list[Any] = []

    def mutate(data: dict[str, list[int]]) -> None:
        seen.append(data)
        data["items"].append(2)

    record = await store.update("Doc", "d", mutate)
    assert record.data == {"items": [1, 2]}
    seen[0]["items"].append(99)
    loaded = await store.load("Doc", "d")
    assert loaded is not None and loaded.data == {"items": [1, 2]}


async def test_update_accepts_async_function(store: Store) -> None:
    async def fn(data: dict[str, int]) -> dict[str, int]:
        await asyncio.sleep(0)
        return {"n": data["n"] * 2}

    await store.save("Counter", "c", {"n": 21})
    assert (await store.update("Counter", "c", fn)).data == {"n": 42}


async def test_update_gives_up_after_max_retries(store: Store) -> None:
    await store.save("Counter", "c", {"n": 0})

    async def interfering(data: dict[str, int]) -> dict[str, int]:
        await store.save("Counter", "c", {"n": -1})
        return {"n": data["n"] + 1}

    with pytest.raises(VersionConflict):
        await store.update("Counter", "c", interfering, max_retries=2)
    loaded = await store.load("Counter", "c")
    assert loaded is not None and loaded.data == {"n": -1}


async def test_load_many_save_many_delete_many(store: Store) -> None:
    saved = await store.save_many("Item", {f"i{n}": {"n": n} for n in range(10)})
    assert sorted(saved) == sorted(f"i{n}" for n in range(10))
    assert all(r.version == 1 for r in saved.values())
    loaded = await store.load_many("Item", ["i1", "i5", "missing", "i1"])
    assert sorted(loaded) == ["i1", "i5"]
    assert loaded["i5"].data == {"n": 5}
    again = await store.save_many(
        "Item", {"i1": {"n": 100}, "new": {"n": -1}}, expected_versions={"i1": 1, "new": 0}
    )
    assert again["i1"].version == 2 and again["new"].version == 1
    assert await store.delete_many("Item", ["i1", "i2", "nope"]) == 2
    assert await store.load_many("Item", ["i1", "i2"]) == {}
    assert await store.load_many("Item", []) == {}
    assert await store.save_many("Item", {}) == {}
    assert await store.delete_many("Item", []) == 0


async def test_atomic_batch_with_one_stale_version_applies_nothing(store: Store) -> None:
    await store.save_many("Item", {"a": {"v": 1}, "b": {"v": 1}, "c": {"v": 1}})
    await store.save("Item", "b", {"v": 2})
    with pytest.raises(VersionConflict) as info:
        await store.save_many(
            "Item",
            {"a": {"v": 10}, "b": {"v": 10}, "c": {"v": 10}, "d": {"v": 10}, "e": {"v": 1}},
            expected_versions={"a": 1, "b": 1, "c": 1, "e": 3},
        )
    assert info.value.conflicts == {"b": (1, 2), "e": (3, 0)}
    assert "'b'" in str(info.value) and "'e'" in str(info.value)
    current = await store.load_many("Item", ["a", "b", "c", "d", "e"])
    assert {k: (r.data, r.version) for k, r in current.items()} == {
        "a": ({"v": 1}, 1),
        "b": ({"v": 2}, 2),
        "c": ({"v": 1}, 1),
    }


async def test_concurrent_overlapping_batches_do_not_deadlock(store: Store) -> None:
    ids = [f"k{n:02d}" for n in range(30)]

    async def writer(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(15):
            chosen = rng.sample(ids, 12)
            await store.save_many("Batch", {i: {"by": seed} for i in chosen})

    await asyncio.wait_for(asyncio.gather(*(writer(s) for s in range(8))), timeout=60)
    records = await store.load_many("Batch", ids)
    assert sum(r.version for r in records.values()) == 8 * 15 * 12


async def test_transaction_applies_in_order(store: Store) -> None:
    await store.save("K", "k1", {"v": 1})
    async with store.transaction() as tx:
        assert await tx.delete("K", "k1") is True
        await tx.save("K", "k2", {"v": 2})
        assert await tx.delete("K", "k2") is True
        await tx.save("K", "k3", {"v": 3})
        assert (await tx.load("K", "k3")) is not None
    assert await store.list_ids("K") == ["k3"]
    k3 = await store.load("K", "k3")
    assert k3 is not None and k3.data == {"v": 3}


async def test_exception_inside_transaction_leaves_nothing(store: Store) -> None:
    await store.save("K", "keep", {"v": 1})
    with pytest.raises(RuntimeError, match="boom"):
        async with store.transaction() as tx:
            await tx.save("K", "new", {"v": 1})
            await tx.save("K", "keep", {"v": 2})
            await tx.delete("K", "keep")
            raise RuntimeError("boom")
    assert await store.load("K", "new") is None
    keep = await store.load("K", "keep")
    assert keep is not None and keep.data == {"v": 1} and keep.version == 1


async def test_version_conflict_inside_transaction_rolls_back(store: Store) -> None:
    await store.save("K", "a", {"v": 1})
    with pytest.raises(VersionConflict):
        async with store.transaction() as tx:
            await tx.save("K", "b", {"v": 1})
            await tx.save("K", "a", {"v": 2}, expected_version=5)
    assert await store.load("K", "b") is None


async def test_transaction_update(store: Store) -> None:
    await store.save("Acct", "a", {"balance": 100})
    await store.save("Acct", "b", {"balance": 0})
    async with store.transaction() as tx:
        await tx.update("Acct", "a", lambda d: {"balance": d["balance"] - 30})
        await tx.update("Acct", "b", lambda d: {"balance": d["balance"] + 30})
        await tx.update("Acct", "c", lambda d: d, default={"balance": 0})
    loaded = await store.load_many("Acct", ["a", "b", "c"])
    assert {k: r.data["balance"] for k, r in loaded.items()} == {"a": 70, "b": 30, "c": 0}  # type: ignore[index]


async def test_concurrent_transfers_conserve_total(store: Store) -> None:
    accounts = [f"a{n}" for n in range(5)]
    await store.save_many("Acct", {a: {"balance": 100} for a in accounts})

    async def transfer(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(10):
            src, dst = sorted(rng.sample(accounts, 2))
            async with store.transaction() as tx:
                await tx.update("Acct", src, lambda d: {"balance": d["balance"] - 1})
                await tx.update("Acct", dst, lambda d: {"balance": d["balance"] + 1})

    await asyncio.gather(*(transfer(s) for s in range(6)))
    loaded = await store.load_many("Acct", accounts)
    assert sum(r.data["balance"] for r in loaded.values()) == 500  # type: ignore[index]
    assert sum(r.version for r in loaded.values()) == 5 + 6 * 10 * 2


async def test_100_records_x_10_versioned_writes_6_way(store: Store) -> None:
    ids = [f"r{n:03d}" for n in range(100)]
    queue: asyncio.Queue[str] = asyncio.Queue()
    for _ in range(10):
        for i in ids:
            queue.put_nowait(i)
    written: dict[str, list[int]] = {i: [] for i in ids}
    last: dict[str, Any] = {}

    async def worker(w: int) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            while True:
                current = await store.load("Rec", i)
                version = current.version if current else 0
                payload = {"writer": w, "seq": version + 1, "blob": "x" * (version * 7)}
                try:
                    record = await store.save("Rec", i, payload, expected_version=version)
                except VersionConflict:
                    continue
                written[i].append(record.version)
                last[i] = payload
                break

    await asyncio.gather(*(worker(w) for w in range(6)))
    for i in ids:
        assert sorted(written[i]) == list(range(1, 11))
        loaded = await store.load("Rec", i)
        assert loaded is not None and loaded.version == 10 and loaded.data == last[i]


async def test_list_ids_paging_prefix_and_types(store: Store) -> None:
    await store.save_many("User", {f"user-{n:02d}": {} for n in range(25)})
    await store.save_many("User", {"admin-1": {}, "zed": {}})
    await store.save("Room", "r1", {})
    page1 = await store.list_ids("User", prefix="user-", limit=10)
    assert page1 == [f"user-{n:02d}" for n in range(10)]
    page2 = await store.list_ids("User", prefix="user-", after=page1[-1], limit=10)
    assert page2 == [f"user-{n:02d}" for n in range(10, 20)]
    page3 = await store.list_ids("User", prefix="user-", after=page2[-1], limit=10)
    assert page3 == [f"user-{n:02d}" for n in range(20, 25)]
    assert await store.list_ids("User", prefix="adm") == ["admin-1"]
    assert (await store.list_ids("User"))[0] == "admin-1"
    assert await store.list_ids("User", prefix="us%") == []
    assert await store.types() == {"Room": 1, "User": 27}


async def test_overview_counts_every_type_and_reports_the_feed(store: Store) -> None:
    await store.save_many("User", {f"u{n}": {} for n in range(3)})
    await store.save("Room", "r1", {}, ttl=3600)
    await store.sequence_changes()
    overview = await store.overview()
    assert overview.types == {"Room": 1, "User": 3}
    assert not overview.types_estimated
    assert overview.last_position >= 4 and overview.last_change_at is not None
    assert overview.reminders == overview.reminders_overdue == 0
    assert overview.as_dict()["last_change_at"] == overview.last_change_at.isoformat()


async def test_list_ids_uses_code_point_order(store: Store) -> None:
    ids = ["b", "B", "a", "Z", "é", "ä", "10", "9", "_x"]
    await store.save_many("Ord", {i: {} for i in ids})
    assert await store.list_ids("Ord") == sorted(ids)


async def test_unicode_and_long_ids(store: Store) -> None:
    long_id = "ü" * 255
    await store.save("U", long_id, {"ok": True})
    await store.save("U", "with space/and\nnewline", {"ok": True})
    assert (await store.load("U", long_id)) is not None
    assert await store.exists("U", "with space/and\nnewline")


BAD_KEYS: list[tuple[Any, Any]] = [
    ("", "id"),
    ("1abc", "id"),
    ("has space", "id"),
    ("a" * 256, "id"),
    ("bad/slash", "id"),
    (None, "id"),
    (42, "id"),
    ("Good", ""),
    ("Good", "x" * 256),
    ("Good", "nul\x00inside"),
    ("Good", None),
    ("Good", 5),
    ("Good", b"bytes"),
]


@pytest.mark.parametrize(("type_", "id_"), BAD_KEYS)
async def test_bad_keys_refused_with_nothing_written(store: Store, type_: Any, id_: Any) -> None:
    with pytest.raises(InvalidInput):
        await store.save(type_, id_, {"x": 1})
    with pytest.raises(InvalidInput):
        await store.load(type_, id_)
    with pytest.raises(InvalidInput):
        await store.delete(type_, id_)
    assert await store.types() == {}


class NotJson:
    pass


BAD_DATA: list[Any] = [
    math.nan,
    {"x": math.inf},
    [-math.inf],
    {"s": "nul\x00inside"},
    ["ok", {"deep": ["nul\x00"]}],
    {"obj": NotJson()},
    {1: "int key"},
    {"nested": {None: 1}},
    [{"in a list": {2: "x"}}],
    {"in a tuple": ({True: 1},)},
    {"set": {1, 2}},
    b"bytes",
    {"when": __import__("datetime").datetime(2024, 1, 1)},
]


@pytest.mark.parametrize("data", BAD_DATA, ids=range(len(BAD_DATA)))
async def test_bad_data_refused_with_nothing_written(store: Store, data: Any) -> None:
    with pytest.raises(InvalidInput):
        await store.save("Good", "g1", data)
    with pytest.raises(InvalidInput):
        await store.save_many("Good", {"g2": {"fine": 1}, "g3": data})
    with pytest.raises(InvalidInput):
        await store.update("Good", "g4", lambda d: data, default={})
    assert await store.types() == {}


async def test_circular_data_refused(store: Store) -> None:
    data: dict[str, Any] = {}
    data["self"] = data
    with pytest.raises(InvalidInput, match="circular"):
        await store.save("Good", "g", data)


async def test_data_over_size_limit_refused(store: Store) -> None:
    limit = store.config.max_data_bytes
    with pytest.raises(InvalidInput, match="max_data_bytes"):
        await store.save("Big", "b", "x" * limit)
    assert await store.load("Big", "b") is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"expected_version": -1},
        {"expected_version": "1"},
        {"expected_version": True},
        {"expected_version": 1.0},
    ],
)
async def test_bad_expected_version_refused(store: Store, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput, match="expected_version"):
        await store.save("T", "t", {}, **kwargs)
    assert await store.types() == {}


async def test_bad_list_arguments_refused(store: Store) -> None:
    with pytest.raises(InvalidInput, match="limit"):
        await store.list_ids("T", limit=0)
    with pytest.raises(InvalidInput, match="ids"):
        await store.load_many("T", "abc")
    with pytest.raises(InvalidInput, match="expected_versions"):
        await store.save_many("T", {"a": {}}, expected_versions={"b": 1})
    with pytest.raises(InvalidInput, match="max_retries"):
        await store.update("T", "a", lambda d: d, max_retries=-1)


# -- version history (opt-in per type) ------------------------------------------------------


def data_versions(records: list[Any]) -> list[tuple[int, Any]]:
    return [(r.version, r.data) for r in records]


async def test_history_keeps_each_replaced_version(store: Store) -> None:
    await store.enable_history("Contract", keep_versions=20)
    for n in range(1, 4):
        await store.save("Contract", "c-1", {"n": n})
    past = await store.history("Contract", "c-1")
    assert data_versions(past) == [(2, {"n": 2}), (1, {"n": 1})]
    assert [p.deleted for p in past] == [False, False]
    assert past[0].replaced_at >= past[1].replaced_at >= past[1].updated_at
    assert past[1].created_at == past[0].created_at
    assert data_versions(await store.history("Contract", "c-1", limit=1)) == [(2, {"n": 2})]
    for n in range(1, 4):
        loaded = await store.load("Contract", "c-1", version=n)
        assert loaded is not None and (loaded.version, loaded.data) == (n, {"n": n})
    assert await store.load("Contract", "c-1", version=4) is None
    assert await store.load("Contract", "other", version=1) is None
    # A read gives a private copy, as every load does.
    past[0].data["n"] = 99
    assert data_versions(await store.history("Contract", "c-1", limit=1)) == [(2, {"n": 2})]


async def test_history_records_every_write_path(store: Store) -> None:
    t = "Kept"
    await store.enable_history(t)
    await store.save(t, "a", {"n": 1})
    await store.save_binary(t, "a", b"\x00bin", "raw")  # replaces 1
    call = await store.save_call(t, "a", {"n": 3}, expected_version=2, call_id="c1")  # 2
    await store.save_many(t, {"a": {"n": 4}, "b": {"n": 1}})  # 3
    async with store.transaction() as tx:
        await tx.save(t, "a", {"n": 5})  # 4
        await tx.save(t, "a", {"n": 6})  # 5, replaced inside the transaction
    await store.update(t, "a", lambda d: {"n": d["n"] + 1})  # 6
    await store.import_jsonl(
        [json.dumps({"type": t, "id": "a", "data": {"n": 8}})], on_conflict="overwrite"
    )  # 7
    await store.delete(t, "a")  # 8, deleted
    await store.delete_many(t, ["b"])
    assert call.version == 3
    past = await store.history(t, "a")
    assert [p.version for p in past] == [8, 7, 6, 5, 4, 3, 2, 1]
    assert [p.deleted for p in past] == [True] + [False] * 7
    binary = past[-2]
    assert (binary.data, binary.payload, binary.manifest) == (None, b"\x00bin", "raw")
    assert [p.data for p in past if p.version != 2] == [{"n": n} for n in (8, 7, 6, 5, 4, 3, 1)]
    assert data_versions(await store.history(t, "b")) == [(1, {"n": 1})]
    assert (await store.history(t, "b"))[0].deleted


async def test_history_rolled_back_transaction_keeps_nothing(store: Store) -> None:
    await store.enable_history("T")
    await store.save("T", "a", {"n": 1})
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.save("T", "a", {"n": 2})
            raise RuntimeError("roll back")
    assert await store.history("T", "a") == []
    with pytest.raises(VersionConflict):
        await store.save("T", "a", {"n": 2}, expected_version=7)
    assert await store.history("T", "a") == []


async def test_history_versions_restart_after_delete(store: Store) -> None:
    await store.enable_history("T")
    await store.save("T", "a", "first life v1")
    await store.save("T", "a", "first life v2")
    await store.delete("T", "a")
    await store.save("T", "a", "second life v1")
    past = await store.history("T", "a")
    assert data_versions(past) == [(2, "first life v2"), (1, "first life v1")]
    assert [p.deleted for p in past] == [True, False]
    # The current record is the newest version 1; then the newest kept one.
    loaded = await store.load("T", "a", version=1)
    assert loaded is not None and loaded.data == "second life v1"
    await store.save("T", "a", "second life v2")
    loaded = await store.load("T", "a", version=1)
    assert loaded is not None and loaded.data == "second life v1"
    loaded = await store.load("T", "a", version=2)
    assert loaded is not None and loaded.data == "second life v2"
    await store.delete("T", "a")
    loaded = await store.load("T", "a", version=2)
    assert loaded is not None and loaded.data == "second life v2"
    assert (await store.history("T", "a"))[0].deleted


async def test_history_only_for_enabled_types(store: Store) -> None:
    await store.enable_history("With")
    for t in ("With", "Without"):
        await store.save(t, "a", {"n": 1})
        await store.save(t, "a", {"n": 2})
        await store.delete(t, "a")
    assert await store.history("Without", "a") == []
    assert len(await store.history("With", "a")) == 2
    assert await store.load("Without", "a", version=1) is None
    info = await store.history_info()
    assert [(i.type, i.enabled, i.rows) for i in info] == [("With", True, 2)]
    assert info[0].bytes > 0


async def test_disable_history_keeps_rows_and_records_no_more(store: Store) -> None:
    await store.enable_history("T", keep_versions=5)
    await store.save("T", "a", 1)
    await store.save("T", "a", 2)
    assert await store.disable_history("T") is True
    assert await store.disable_history("T") is False
    assert await store.disable_history("Never") is False
    await store.save("T", "a", 3)
    await store.delete("T", "a")
    assert data_versions(await store.history("T", "a")) == [(1, 1)]
    [info] = await store.history_info()
    assert (info.type, info.enabled, info.keep_versions, info.rows) == ("T", False, 5, 1)
    await store.enable_history("T")  # again, now without limits
    await store.save("T", "a", 4)
    await store.save("T", "a", 5)
    assert data_versions(await store.history("T", "a")) == [(1, 4), (1, 1)]


async def test_history_retention_by_count(store: Store) -> None:
    await store.enable_history("T", keep_versions=2)
    await store.enable_history("U", keep_versions=3)
    for n in range(1, 7):
        await store.save("T", "a", n)
        await store.save("T", "b", n)
        await store.save("U", "a", n)
    # Applied on read at once, purged or not.
    assert data_versions(await store.history("T", "a")) == [(5, 5), (4, 4)]
    assert await store.load("T", "a", version=3) is None
    assert [p.version for p in await store.history("U", "a")] == [5, 4, 3]
    assert await store.purge_history() == 3 + 3 + 2
    assert await store.purge_history() == 0
    assert data_versions(await store.history("T", "a")) == [(5, 5), (4, 4)]
    rows = {i.type: i.rows for i in await store.history_info()}
    assert rows == {"T": 4, "U": 3}
    # A deleted record's history is kept within the same limits.
    await store.delete("T", "a")
    assert data_versions(await store.history("T", "a")) == [(6, 6), (5, 5)]
    assert await store.purge_history() == 1


async def test_history_retention_by_age(store: Store) -> None:
    await store.enable_history("T", keep_days=1)
    await store.save("T", "a", 1)
    await store.save("T", "a", 2)
    await store.save("T", "a", 3)
    assert [p.version for p in await store.history("T", "a")] == [2, 1]
    # A limit far below the versions' age: every one is too old now.
    await store.enable_history("T", keep_days=1e-12)
    assert await store.history("T", "a") == []
    assert await store.load("T", "a", version=1) is None
    latest = await store.load("T", "a", version=3)
    assert latest is not None and latest.data == 3  # the current record is not history
    assert await store.purge_history() == 2
    [info] = await store.history_info()
    assert (info.keep_days, info.rows) == (1e-12, 0)


async def test_history_retention_by_count_and_age(store: Store) -> None:
    await store.enable_history("T", keep_versions=1, keep_days=30)
    for n in range(1, 4):
        await store.save("T", "a", n)
    assert data_versions(await store.history("T", "a")) == [(2, 2)]
    await store.enable_history("T", keep_versions=1, keep_days=1e-12)
    assert await store.history("T", "a") == []
    assert await store.purge_history() == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"type": "bad type"}, "invalid type"),
        ({"type": 7}, "invalid type"),
        ({"keep_versions": 0}, "keep_versions must be None .* or an int from 1"),
        ({"keep_versions": -3}, "keep_versions"),
        ({"keep_versions": True}, "keep_versions"),
        ({"keep_versions": 2.0}, "keep_versions"),
        ({"keep_versions": "5"}, "keep_versions"),
        ({"keep_days": 0}, "keep_days must be None .* or a number of days > 0"),
        ({"keep_days": -1.5}, "keep_days"),
        ({"keep_days": math.nan}, "keep_days"),
        ({"keep_days": math.inf}, "keep_days"),
        ({"keep_days": True}, "keep_days"),
        ({"keep_days": "1"}, "keep_days"),
    ],
)
async def test_bad_history_settings_refused(
    store: Store, kwargs: dict[str, Any], match: str
) -> None:
    args = {"type": "T", **kwargs}
    with pytest.raises(InvalidInput, match=match):
        await store.enable_history(args.pop("type"), **args)
    assert await store.history_info() == []
    await store.save("T", "a", 1)
    await store.save("T", "a", 2)
    assert await store.history("T", "a") == []


async def test_bad_history_reads_refused(store: Store) -> None:
    await store.save("T", "a", 1)
    for limit in (0, -1, True, 1.5, "10", 100_001):
        with pytest.raises(InvalidInput, match="limit must be an int from 1 to 100000"):
            await store.history("T", "a", limit=limit)  # type: ignore[arg-type]
    for version in (0, -1, True, 1.0, "1"):
        with pytest.raises(InvalidInput, match=r"version must be an int >= 1"):
            await store.load("T", "a", version=version)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="invalid id"):
        await store.history("T", "")
    with pytest.raises(InvalidInput, match="invalid type"):
        await store.disable_history("")
