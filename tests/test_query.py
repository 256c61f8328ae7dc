"""store.query/count/aggregate: both backends against an independent reference evaluator."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgactors import InMemoryStore, InvalidQuery, Store

# Every backend, and PostgreSQL with a hash-partitioned state table (`init --partitions`).
ALL_STORES = pytest.mark.parametrize(
    "store", ["memory", "postgres", "postgres-partitioned"], indirect=True
)

MISSING = object()

# -- the reference: written from the documented rules, sharing no code with pgactors -----


def ref_get(data: Any, path: str) -> Any:
    for key in path.split("."):
        if isinstance(data, dict) and key in data:
            data = data[key]
        elif (
            isinstance(data, list)
            and key.lstrip("-").isdigit()
            and -len(data) <= int(key) < len(data)
        ):
            data = data[int(key)]
        else:
            return MISSING
    return data


def kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "num"
    if isinstance(v, str):
        return "str"
    return "list" if isinstance(v, list) else "dict"


def same(a: Any, b: Any) -> bool:
    if kind(a) != kind(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return set(a) == set(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def ref_match(flt: dict[str, Any], rec: dict[str, Any]) -> bool:
    for key, cond in flt.items():
        if key == "$and":
            ok = all(ref_match(f, rec) for f in cond)
        elif key == "$or":
            ok = any(ref_match(f, rec) for f in cond)
        elif key == "$not":
            ok = not ref_match(cond, rec)
        else:
            value = rec["id"] if key == "@id" else ref_get(rec["data"], key)
            ok = ref_test(value, cond)
        if not ok:
            return False
    return True


def ref_test(value: Any, cond: Any) -> bool:
    if not (isinstance(cond, dict) and any(k.startswith("$") for k in cond)):
        return value is not MISSING and same(value, cond)
    for op, arg in cond.items():
        present = value is not MISSING
        if op == "$eq":
            ok = present and same(value, arg)
        elif op == "$ne":
            ok = not (present and same(value, arg))
        elif op == "$in":
            ok = present and any(same(value, a) for a in arg)
        elif op == "$nin":
            ok = not (present and any(same(value, a) for a in arg))
        elif op == "$exists":
            ok = present == arg
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            ok = (
                present
                and kind(value) == kind(arg)
                and {
                    "$gt": value > arg if present and kind(value) == kind(arg) else False,
                    "$gte": value >= arg if present and kind(value) == kind(arg) else False,
                    "$lt": value < arg if present and kind(value) == kind(arg) else False,
                    "$lte": value <= arg if present and kind(value) == kind(arg) else False,
                }[op]
            )
        else:
            raise AssertionError(op)
        if not ok:
            return False
    return True


RANK = {"null": 0, "str": 1, "num": 2, "bool": 3, "list": 4, "dict": 5}


def ref_sort_key(rec: dict[str, Any], path: str, desc: bool) -> tuple[Any, ...]:
    value = ref_get(rec["data"], path)
    if value is MISSING:
        return (1,)
    k = kind(value)
    inner: tuple[Any, ...] = (RANK[k], value if k in ("num", "str", "bool") else 0)
    if desc:
        return (0, _Reverse(inner))
    return (0, inner)


class _Reverse:
    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Reverse) -> bool:
        return bool(other.value < self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reverse) and self.value == other.value


# -- data and random filters ---------------------------------------------------------------

VALUES: list[Any] = [0, 1, 1.0, 2.5, -3, 10, "a", "b", "B", "ab", "é", "", True, False, None,
                     [1, 2], ["a"], {"x": 1}, {"x": 2, "y": [1]}]  # fmt: skip
PATHS = ["n", "s", "flag", "tags", "p.level", "p.name", "nope"]


def make_records(rng: random.Random, count: int) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    for i in range(count):
        data: dict[str, Any] = {}
        for field in ("n", "s", "flag", "tags"):
            if rng.random() < 0.75:
                data[field] = rng.choice(VALUES)
        if rng.random() < 0.7:
            data["p"] = {k: rng.choice(VALUES) for k in ("level", "name") if rng.random() < 0.7}
        records[f"r{i:03d}"] = data
    return records


def random_filter(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    roll = rng.random()
    if depth < 2 and roll < 0.15:
        return {rng.choice(["$and", "$or"]): [random_filter(rng, depth + 1) for _ in range(2)]}
    if depth < 2 and roll < 0.22:
        return {"$not": random_filter(rng, depth + 1)}
    path = rng.choice(PATHS)
    op = rng.choice(["bare", "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"])
    if op == "bare":
        return {path: rng.choice([v for v in VALUES if not isinstance(v, dict)])}
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return {path: {op: rng.choice([0, 1, 2.5, 10, -3, "a", "b", "B", ""])}}
    if op in ("$in", "$nin"):
        return {path: {op: rng.sample(VALUES, rng.randint(0, 3))}}
    if op == "$exists":
        return {path: {op: rng.random() < 0.5}}
    return {path: {op: rng.choice(VALUES)}}


async def _fill(store: Store, records: dict[str, dict[str, Any]]) -> None:
    await store.save_many("R", records)


@ALL_STORES
async def test_random_filters_match_the_reference(store: Store) -> None:
    rng = random.Random(20261121)
    records = make_records(rng, 80)
    await _fill(store, records)
    rows = [{"id": k, "data": v} for k, v in records.items()]
    for _ in range(300):
        flt = random_filter(rng)
        expected = sorted(r["id"] for r in rows if ref_match(flt, r))
        page = await store.query("R", flt, limit=1000)
        assert [r.id for r in page.items] == expected, flt
        assert await store.count("R", flt) == len(expected), flt


@ALL_STORES
async def test_ordering_and_keyset_pages_match_the_reference(store: Store) -> None:
    rng = random.Random(7)
    records = make_records(rng, 60)
    await _fill(store, records)
    rows = [{"id": k, "data": v} for k, v in records.items()]
    for path in PATHS[:-1]:
        for desc in (False, True):
            expected = [
                r["id"] for r in sorted(rows, key=lambda r: (ref_sort_key(r, path, desc), r["id"]))
            ]
            seen: list[str] = []
            after = None
            while True:
                page = await store.query(
                    "R", order_by=[("-" if desc else "") + path], limit=7, after=after
                )
                seen += [r.id for r in page.items]
                if page.next is None:
                    break
                after = page.next
            assert seen == expected, (path, desc)


async def test_contains_follows_jsonb_containment(store: Store) -> None:
    await store.save_many(
        "C",
        {
            "a": {"tags": ["x", "y"], "o": {"k": [1, 2], "m": "z"}},
            "b": {"tags": "x", "o": {"k": 1}},
            "c": {"tags": [["x"]], "o": [{"k": 1, "j": 2}]},
        },
    )
    cases = {
        "x": ["a", "b"],  # an array contains a scalar at the top; a scalar equals it
        '["x"]': ["a"],
        '{"k": [1]}': ["a"],
        '{"k": 1}': ["b"],
        '[{"k": 1}]': ["c"],
    }
    for operand, expected in cases.items():
        value = operand if operand == "x" else json.loads(operand)
        path = "tags" if isinstance(value, str | list) and operand != '[{"k": 1}]' else "o"
        page = await store.query("C", {path: {"$contains": value}})
        assert sorted(r.id for r in page.items) == expected, operand


async def test_metadata_fields(store: Store) -> None:
    await store.save("M", "a", {"n": 1})
    await store.save("M", "b", {"n": 1})
    await store.save("M", "b", {"n": 2})
    assert [r.id for r in (await store.query("M", {"@version": 2})).items] == ["b"]
    assert [r.id for r in (await store.query("M", {"@id": {"$gt": "a"}})).items] == ["b"]
    b = await store.load("M", "b")
    assert b is not None
    since = {"@updated_at": {"$gte": b.updated_at.isoformat()}}
    assert [r.id for r in (await store.query("M", since)).items] == ["b"]
    ordered = await store.query("M", order_by=["-@version"])
    assert [r.id for r in ordered.items] == ["b", "a"]


@ALL_STORES
async def test_pages_see_every_match_once_while_records_are_inserted(store: Store) -> None:
    await store.save_many("I", {f"k{i:03d}": {"n": i} for i in range(0, 200, 2)})
    seen: list[tuple[int, str]] = []
    ahead: set[str] = set()  # inserted past the cursor: a later page must show them
    behind: set[str] = set()  # inserted before it: no page may show them
    after = None
    page_number = 0
    while True:
        page = await store.query("I", {"n": {"$gte": 0}}, order_by=["n"], limit=9, after=after)
        seen += [(r.data["n"], r.id) for r in page.items]  # type: ignore[call-overload, index]
        # Between pages, one insert lands behind the cursor and one ahead of it.
        last = seen[-1][0]
        low, high = 2 * page_number + 1, 199 - 2 * page_number
        await store.save_many("I", {f"k{low:03d}": {"n": low}, f"k{high:03d}": {"n": high}})
        for n in (low, high):
            (ahead if n > last else behind).add(f"k{n:03d}")
        page_number += 1
        if page.next is None:
            break
        after = page.next
    ids = [id for _, id in seen]
    assert [n for n, _ in seen] == sorted(n for n, _ in seen)  # in order, across pages
    assert len(ids) == len(set(ids))  # none twice
    assert {f"k{i:03d}" for i in range(0, 200, 2)} <= set(ids)  # none missed
    assert ahead and behind  # both kinds happened
    assert ahead - behind <= set(ids) and not (behind - ahead) & set(ids)


async def test_offset_and_query_all(store: Store) -> None:
    await store.save_many("O", {f"k{i:02d}": {"n": i} for i in range(25)})
    page = await store.query("O", order_by="-n", limit=5, offset=10)
    assert [r.data["n"] for r in page.items] == [14, 13, 12, 11, 10]  # type: ignore[index]
    everything = [r.id async for r in store.query_all("O", {"n": {"$lt": 20}}, page_size=3)]
    assert everything == [f"k{i:02d}" for i in range(20)]


@ALL_STORES
async def test_aggregate_per_group(store: Store) -> None:
    sessions = {
        "s1": {"player": "ann", "difficulty": "hard", "score": 10, "done": True},
        "s2": {"player": "ann", "difficulty": "easy", "score": 5.5, "done": False},
        "s3": {"player": "bob", "difficulty": "hard", "score": 7},
        "s4": {"player": "bob", "difficulty": "hard", "score": "n/a"},
        "s5": {"difficulty": "easy"},
    }
    await store.save_many("S", sessions)
    stats = await store.aggregate(
        "S",
        group_by="player",
        metrics={
            "n": "count",
            "scored": ("count", "score"),
            "total": ("sum", "score"),
            "avg": ("avg", "score"),
            "best": ("max", "score"),
            "worst": ("min", "score"),
        },
    )
    assert stats == [
        {"player": "ann", "n": 2, "scored": 2, "total": 15.5, "avg": 7.75, "best": 10,
         "worst": 5.5},
        {"player": "bob", "n": 2, "scored": 2, "total": 7, "avg": 7.0, "best": 7, "worst": 7},
        {"player": None, "n": 1, "scored": 0, "total": None, "avg": None, "best": None,
         "worst": None},
    ]  # fmt: skip
    hard = await store.aggregate("S", {"difficulty": "hard"}, metrics={"n": "count"})
    assert hard == [{"n": 3}]


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({"n": {"$regex": "x"}}, "unknown operator '\\$regex'"),
        ({"n": {"$gt": [1]}}, "compares with a number or a string"),
        ({"n": {"$gt": True}}, "compares with a number or a string"),
        ({"n": {"$in": 3}}, "expects a list"),
        ({"n": {"$exists": 1}}, "expects true or false"),
        ({"$or": []}, "non-empty list"),
        ({"$and": {"n": 1}}, "non-empty list"),
        ({"a..b": 1}, "empty segment"),
        ({"@nope": 1}, "unknown metadata field"),
        ({"@version": "2"}, "@version compares with integers"),
        ({"@created_at": {"$gt": "yesterday"}}, "ISO 8601"),
        ({"@created_at": {"$gt": "2026-01-01T00:00:00"}}, "needs a timezone"),
        ({"@id": {"$contains": "x"}}, "applies to data paths"),
        ({"n": {"$gt": 1, "plain": 2}}, "mixes operators and plain keys"),
        ({"n": float("nan")}, "not JSON"),
        ({"$xor": []}, "unknown operator"),
        (["n"], "a filter is a dict"),
    ],
)
async def test_malformed_filters_are_refused(where: Any, message: str) -> None:
    store = InMemoryStore()
    with pytest.raises(InvalidQuery, match=message):
        await store.query("T", where)
    with pytest.raises(InvalidQuery, match=message):
        await store.count("T", where)


async def test_bad_paging_arguments(store: Store) -> None:
    await store.save_many("P", {f"k{i}": {"n": i} for i in range(5)})
    page = await store.query("P", order_by="n", limit=2)
    assert page.next is not None
    with pytest.raises(InvalidQuery, match="limit"):
        await store.query("P", limit=0)
    with pytest.raises(InvalidQuery, match="cannot be combined"):
        await store.query("P", order_by="n", after=page.next, offset=1)
    with pytest.raises(InvalidQuery, match="another type, filter or order_by"):
        await store.query("P", order_by="-n", after=page.next)
    with pytest.raises(InvalidQuery, match="not a cursor"):
        await store.query("P", order_by="n", after="garbage!")
    with pytest.raises(InvalidQuery, match="metrics"):
        await store.aggregate("P", metrics={"x": ("median", "n")})


_any_text = st.one_of(st.text(max_size=8), st.sampled_from(["\ud800", "x\udfff", "\x00"]))
_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10), st.floats(allow_nan=True), _any_text
)
_keys = st.one_of(
    st.sampled_from(["$eq", "$gt", "$in", "$and", "$or", "$not", "$contains", "@id", "a.b"]),
    _any_text,
)
_filters = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=3)),
    max_leaves=12,
)


async def test_fuzzed_filters_run_or_are_refused(pg_store: Store) -> None:
    examples: list[Any] = []

    @settings(max_examples=300, deadline=None, database=None)
    @given(where=_filters)
    def collect(where: Any) -> None:
        examples.append(where)

    collect()
    await pg_store.save("F", "canary", {"a": {"b": 1}, "$eq": "'; DROP TABLE x; --"})
    refused = 0
    for where in examples:
        try:
            await pg_store.query("F", where)
            await pg_store.count("F", where)
        except InvalidQuery:
            refused += 1
    assert 0 < refused < len(examples)
    canary = await pg_store.load("F", "canary")
    assert canary is not None and canary.version == 1


async def test_indexed_equality_and_range_use_the_index_on_100k_records(
    pg_store: Store, pg_dsn: str
) -> None:
    import psycopg

    for start in range(0, 100_000, 10_000):
        await pg_store.save_many(
            "U",
            {
                f"u{i}": {"profile": {"level": i % 100}, "name": f"n{i}"}
                for i in range(start, start + 10_000)
            },
        )
    name = await pg_store.create_index("U", "profile.level")
    assert await pg_store.indexes() == [("U", "profile.level", name)]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'ANALYZE "{pg_store.config.schema}".pgactors_state')
    for where in ({"profile.level": 42}, {"profile.level": {"$gte": 99}}):
        plan = await pg_store.explain("U", where)
        assert name in plan, plan
        assert "Seq Scan" not in plan, plan
    assert await pg_store.count("U", {"profile.level": {"$gte": 99}}) == 1000
    assert await pg_store.drop_index("U", "profile.level")
    assert not await pg_store.drop_index("U", "profile.level")
    assert name not in await pg_store.explain("U", {"profile.level": 42})


async def test_an_index_on_all_data_of_a_type_serves_equality_on_any_path(
    pg_store: Store, pg_dsn: str
) -> None:
    import psycopg

    for start in range(0, 20_000, 10_000):
        await pg_store.save_many(
            "U", {f"u{i}": {"team": f"t{i % 500}"} for i in range(start, start + 10_000)}
        )
    await pg_store.save_many("V", {f"v{i}": {"team": "t1"} for i in range(1000)})
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'ANALYZE "{pg_store.config.schema}".pgactors_state')
    # No index on data unless asked for: the type is scanned.
    assert "Bitmap" not in await pg_store.explain("U", {"team": "t7"})
    name = await pg_store.create_index("U", "*")
    assert await pg_store.indexes() == [("U", "*", name)]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'ANALYZE "{pg_store.config.schema}".pgactors_state')
    plan = await pg_store.explain("U", {"team": "t7"})
    assert name in plan and "Seq Scan" not in plan, plan
    assert name not in await pg_store.explain("V", {"team": "t1"})  # U's only
    page = await pg_store.query("U", {"team": "t7"}, limit=100)
    assert len(page.items) == 40 and {r.data["team"] for r in page.items} == {"t7"}
    assert await pg_store.drop_index("U", "*")
    assert not await pg_store.drop_index("U", "*")
    assert name not in await pg_store.explain("U", {"team": "t7"})


def test_query_commands(pg_dsn: str, schema_name: str) -> None:
    from test_cli import run

    env = {"PGACTORS_DSN": pg_dsn, "PGACTORS_SCHEMA": schema_name}
    assert run("init", env=env).returncode == 0
    for i, (player, score) in enumerate([("ann", 10), ("ann", 30), ("bob", 20)]):
        saved = run(
            "put", "Session", f"s{i}", json.dumps({"player": player, "score": score}), env=env
        )
        assert saved.returncode == 0, saved.stderr

    found = run("query", "Session", "--where", '{"score": {"$gte": 20}}', "--order-by", "-score",
                "--json", env=env)  # fmt: skip
    assert found.returncode == 0, found.stderr
    page = json.loads(found.stdout)
    assert [r["id"] for r in page["items"]] == ["s1", "s2"] and page["next"] is None

    table = run("query", "Session", "--where", '{"player": "ann"}', "--limit", "1", env=env)
    assert table.returncode == 0 and "s0" in table.stdout and "--after" in table.stderr

    counted = run("count", "Session", "--where", '{"player": "ann"}', env=env)
    assert counted.stdout.strip() == "2"

    stats = run("stats", "Session", "--group-by", "player", "--metric", "n=count",
                "--metric", "best=max:score", "--json", env=env)  # fmt: skip
    assert json.loads(stats.stdout) == [
        {"player": "ann", "n": 2, "best": 30},
        {"player": "bob", "n": 1, "best": 20},
    ]

    created = run("index", "create", "Session", "score", env=env)
    assert created.returncode == 0, created.stderr
    every_path = run("index", "create", "Session", "*", env=env)
    assert every_path.returncode == 0, every_path.stderr
    listed = json.loads(run("index", "ls", "--json", env=env).stdout)
    assert [(r["type"], r["path"]) for r in listed] == [("Session", "*"), ("Session", "score")]
    assert run("index", "drop", "Session", "score", env=env).returncode == 0
    assert run("index", "drop", "Session", "score", env=env).returncode == 1
    assert run("index", "drop", "Session", "*", env=env).returncode == 0

    bad = run("query", "Session", "--where", '{"score": {"$regex": "x"}}', env=env)
    assert bad.returncode == 2 and "unknown operator" in bad.stderr
    assert "Traceback" not in bad.stderr
    not_json = run("count", "Session", "--where", "{nope", env=env)
    assert not_json.returncode == 2 and "not valid JSON" in not_json.stderr


def test_sync_store_queries() -> None:
    from pgactors import SyncStore

    with SyncStore.in_memory() as store:
        store.save_many("T", {f"k{i}": {"n": i % 3} for i in range(10)})
        assert [r.id for r in store.query("T", {"n": 1}).items] == ["k1", "k4", "k7"]
        assert [r.id for r in store.query_all("T", {"n": 0}, page_size=2)] == [
            "k0", "k3", "k6", "k9",
        ]  # fmt: skip
        assert store.count("T", {"n": {"$ne": 0}}) == 6
        assert store.aggregate("T", group_by="n") == [
            {"n": 0, "count": 4}, {"n": 1, "count": 3}, {"n": 2, "count": 3},
        ]  # fmt: skip


async def test_expired_records_are_not_found(store: Store) -> None:
    await store.save("E", "gone", {"n": 1}, ttl=0.05)
    await store.save("E", "kept", {"n": 1})
    await asyncio.sleep(0.3)
    assert [r.id for r in (await store.query("E", {"n": 1})).items] == ["kept"]
    assert await store.count("E") == 1
    assert await store.aggregate("E", metrics={"n": "count"}) == [{"n": 1}]


async def test_path_index_on_a_partitioned_store(pg_dsn: str, schema_name: str) -> None:
    async with await Store.connect(pg_dsn, schema=schema_name) as store:
        await store.init_schema(partitions=4)
        await store.save_many("U", {f"u{i}": {"level": i % 10} for i in range(200)})
        name = await store.create_index("U", "level")
        assert await store.indexes() == [("U", "level", name)]
        page = await store.query("U", {"level": 3}, limit=5)
        assert [r.id for r in page.items] == ["u103", "u113", "u123", "u13", "u133"]
        assert await store.count("U", {"level": {"$gte": 8}}) == 40
