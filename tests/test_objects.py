"""Persistent objects: dataclasses and pydantic models over the store."""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import psycopg
import pytest
from psycopg import sql

from pgactors import (
    InvalidInput,
    PersistentModel,
    PersistentObject,
    StateError,
    Store,
    VersionConflict,
    delete_object,
    load_object,
    save_object,
)
from pgactors.objects import Upcaster
from pgactors.postgres import PostgresBackend


@dataclass
class UserProfile(PersistentObject):
    username: str = ""
    score: int = 0


@dataclass
class Point:
    x: int
    y: int


@dataclass
class Shape(PersistentObject):
    name: str
    corners: list[Point] = field(default_factory=list)
    origin: Point | None = None
    size: tuple[int, int] = (0, 0)
    tags: dict[str, Point] = field(default_factory=dict)


class Profile(PersistentModel):
    username: str = ""
    score: int = 0
    created: datetime | None = None


@dataclass
class Pair(PersistentObject):
    a: int = 0
    b: int = 0
    items: list[int] = field(default_factory=list)


def _upgrade_1(data: dict[str, Any]) -> dict[str, Any]:
    return {"full_name": data.pop("name"), **data}


def _upgrade_2(data: dict[str, Any]) -> None:
    data["points"] = data.pop("score", 0) * 10


@dataclass
class Player(PersistentObject):
    type_name = "Player"
    state_version: ClassVar[int] = 3
    upcasters: ClassVar[dict[int, Upcaster]] = {1: _upgrade_1, 2: _upgrade_2}
    full_name: str = ""
    points: int = 0


async def _stored_json(store: Store, type: str, id: str) -> dict[str, Any]:
    """The data column as PostgreSQL holds it, read with plain SQL."""
    cfg = store.config
    query = sql.SQL("SELECT data::text, data->>'username' FROM {}.{} WHERE type = %s AND id = %s")
    table = sql.Identifier(cfg.schema), sql.Identifier(f"{cfg.table_prefix}_state")
    assert cfg.dsn is not None
    async with await psycopg.AsyncConnection.connect(cfg.dsn) as conn:
        cur = await conn.execute(query.format(*table), (type, id))
        row = await cur.fetchone()
    assert row is not None
    data: dict[str, Any] = json.loads(row[0])
    assert row[1] == data.get("username")
    return data


async def test_round_trip(store: Store) -> None:
    p = UserProfile(id="user-123", username="alice", score=100)
    record = await save_object(store, p)
    assert record.type == "UserProfile"
    assert record.version == 1 == p.stored_version
    assert record.data == {"username": "alice", "score": 100}

    loaded = await load_object(store, UserProfile, "user-123")
    assert loaded == p
    assert loaded is not None and loaded.stored_version == 1
    loaded.score += 20
    assert (await save_object(store, loaded)).version == 2
    again = await load_object(store, UserProfile, "user-123")
    assert again is not None and again.score == 120
    assert await load_object(store, UserProfile, "missing") is None


def test_bookkeeping_not_in_eq_repr_or_data() -> None:
    p = UserProfile(id="u", username="a")
    q = UserProfile(id="u", username="a")
    p._pgactors_attach(p._pgactors_bookkeeping().__class__(5, {"x": 1}))
    assert p == q
    assert repr(p) == repr(q) == "UserProfile(id='u', username='a', score=0)"
    assert p.to_data() == {"username": "a", "score": 0}
    assert p.stored_version == 5


async def test_stored_json_is_exactly_the_fields(pg_store: Store) -> None:
    await save_object(pg_store, UserProfile(id="user-1", username="alice", score=100))
    assert await _stored_json(pg_store, "UserProfile", "user-1") == {
        "username": "alice",
        "score": 100,
    }


async def test_stale_save_conflicts(store: Store) -> None:
    await save_object(store, UserProfile(id="u", username="a"))
    first = await load_object(store, UserProfile, "u")
    second = await load_object(store, UserProfile, "u")
    assert first is not None and second is not None
    stale = copy.copy(first)
    first.score = 1
    await save_object(store, first)
    second.score = 2
    with pytest.raises(VersionConflict) as info:
        await save_object(store, second)
    assert (info.value.expected, info.value.actual) == (1, 2)
    with pytest.raises(VersionConflict):
        await save_object(store, stale)
    loaded = await load_object(store, UserProfile, "u")
    assert loaded is not None and loaded.score == 1


async def test_new_object_with_existing_id_conflicts(store: Store) -> None:
    await save_object(store, UserProfile(id="u", username="first"))
    with pytest.raises(VersionConflict) as info:
        await save_object(store, UserProfile(id="u", username="second"))
    assert (info.value.expected, info.value.actual) == (0, 1)
    loaded = await load_object(store, UserProfile, "u")
    assert loaded is not None and loaded.username == "first"


async def test_delete(store: Store) -> None:
    p = UserProfile(id="u", username="a")
    await save_object(store, p)
    stale = copy.copy(p)
    p.score = 5
    await save_object(store, p)
    with pytest.raises(VersionConflict):
        await delete_object(store, stale)
    assert await delete_object(store, p) is True
    assert await load_object(store, UserProfile, "u") is None
    assert await delete_object(store, p) is False
    # A deleted object counts as new: saving it creates it again.
    assert (await save_object(store, p)).version == 1


async def test_pydantic_round_trip(store: Store) -> None:
    created = datetime(2024, 5, 1, 12, 30)
    p = Profile(id="p1", username="bob", score=7, created=created)
    record = await save_object(store, p)
    assert record.type == "Profile"
    assert record.data == {"username": "bob", "score": 7, "created": "2024-05-01T12:30:00"}
    loaded = await load_object(store, Profile, "p1")
    assert loaded == p
    assert loaded is not None and loaded.created == created and loaded.stored_version == 1
    assert loaded == Profile(id="p1", username="bob", score=7, created=created)
    stale = loaded.model_copy()
    loaded.score = 8
    await save_object(store, loaded)
    with pytest.raises(VersionConflict):
        await save_object(store, stale)


async def test_nested_dataclass(store: Store) -> None:
    shape = Shape(
        id="s",
        name="tri",
        corners=[Point(0, 0), Point(1, 0), Point(0, 1)],
        origin=Point(5, 6),
        size=(2, 3),
        tags={"centre": Point(1, 1)},
    )
    record = await save_object(store, shape)
    assert record.data == {
        "name": "tri",
        "corners": [{"x": 0, "y": 0}, {"x": 1, "y": 0}, {"x": 0, "y": 1}],
        "origin": {"x": 5, "y": 6},
        "size": [2, 3],
        "tags": {"centre": {"x": 1, "y": 1}},
    }
    loaded = await load_object(store, Shape, "s")
    assert loaded == shape


async def test_missing_fields_take_defaults_and_required_ones_are_named(store: Store) -> None:
    await store.save("UserProfile", "old", {"username": "x"})
    loaded = await load_object(store, UserProfile, "old")
    assert loaded == UserProfile(id="old", username="x", score=0)
    await store.save("Shape", "bad", {"corners": []})
    with pytest.raises(InvalidInput, match="name"):
        await load_object(store, Shape, "bad")


async def test_non_json_field_refused(store: Store) -> None:
    @dataclass
    class Event(PersistentObject):
        at: datetime | None = None

    with pytest.raises(InvalidInput, match=r"Event\.at is a datetime"):
        await save_object(store, Event(id="e", at=datetime(2024, 1, 1)))
    with pytest.raises(InvalidInput, match=r"Shape\.corners\[1\]\.x is a set"):
        await save_object(store, Shape(id="s", name="n", corners=[Point(0, 0), Point({1}, 0)]))  # type: ignore[arg-type]
    assert await store.load("Event", "e") is None


async def test_upcasters_v1_to_v3(store: Store) -> None:
    await store.save("Player", "p", {"name": "Ann", "score": 4})
    player = await load_object(store, Player, "p")
    assert player == Player(id="p", full_name="Ann", points=40)
    record = await save_object(store, player)
    assert record.data == {"full_name": "Ann", "points": 40, "_v": 3}
    assert record.version == 2
    # v2 state only runs the second upcaster.
    await store.save("Player", "q", {"full_name": "Bo", "score": 1, "_v": 2})
    assert await load_object(store, Player, "q") == Player(id="q", full_name="Bo", points=10)
    # Current state loads as is.
    assert await load_object(store, Player, "p") == Player(id="p", full_name="Ann", points=40)


async def test_missing_upcaster(store: Store) -> None:
    @dataclass
    class Gappy(PersistentObject):
        state_version: ClassVar[int] = 3
        upcasters: ClassVar[dict[int, Upcaster]] = {1: lambda d: d}
        value: int = 0

    await store.save("Gappy", "g", {"value": 1})
    with pytest.raises(StateError, match=r"no upcaster from version 2 to 3.*upcasters\[2\]"):
        await load_object(store, Gappy, "g")


async def test_newer_state_refused(store: Store) -> None:
    await store.save("Player", "p", {"full_name": "Zed", "points": 1, "_v": 4})
    with pytest.raises(StateError, match=r"state version 4, newer than .*= 3.*deploy the newer"):
        await load_object(store, Player, "p")
    await store.save("UserProfile", "u", {"username": "x", "_v": 2})
    with pytest.raises(StateError, match="state version 2"):
        await load_object(store, UserProfile, "u")


async def test_unknown_fields_survive_load_modify_save(store: Store) -> None:
    await store.save(
        "UserProfile", "u", {"username": "a", "score": 1, "avatar": {"url": "x"}, "level": 9}
    )
    p = await load_object(store, UserProfile, "u")
    assert p == UserProfile(id="u", username="a", score=1)
    p.score = 2
    record = await save_object(store, p)
    assert record.data == {"username": "a", "score": 2, "avatar": {"url": "x"}, "level": 9}
    # Known fields win over a stored key of the same name.
    again = await load_object(store, UserProfile, "u")
    assert again is not None
    again.username = "b"
    data = (await save_object(store, again)).data
    assert isinstance(data, dict) and data["username"] == "b"


async def test_unknown_fields_survive_for_pydantic(store: Store) -> None:
    await store.save("Profile", "p", {"username": "a", "score": 1, "future": True})
    p = await load_object(store, Profile, "p")
    assert p is not None
    p.score = 3
    record = await save_object(store, p)
    assert record.data == {"username": "a", "score": 3, "created": None, "future": True}


async def test_concurrent_mutation_never_stores_torn_state(store: Store) -> None:
    """A save stores the object as it was when the save was called, whatever the
    program changes while the save is in flight."""
    pair = Pair(id="pair")
    await save_object(store, pair)
    in_flight = 0
    for i in range(100):
        called_with = pair.to_data()
        saving = asyncio.create_task(save_object(store, pair))
        await asyncio.sleep(0)  # the save has started and reached its first await
        in_flight += not saving.done()
        pair.a += 1  # changed while the save is in flight
        pair.items.append(i)
        pair.b += 1
        record = await saving
        assert record.data == called_with, i
    if isinstance(store._backend, PostgresBackend):
        assert in_flight == 100  # every save was still on its way when the object changed
    final = await save_object(store, pair)
    assert final.data == {"a": 100, "b": 100, "items": list(range(100))}
    assert await load_object(store, Pair, "pair") == pair


def test_snapshot_is_a_deep_copy() -> None:
    shape = Shape(id="s", name="n", tags={"t": Point(1, 2)})
    snap = shape.snapshot()
    shape.tags["t"].x = 99
    shape.corners.append(Point(0, 0))
    assert snap == {
        "name": "n",
        "corners": [],
        "origin": None,
        "size": [0, 0],
        "tags": {"t": {"x": 1, "y": 2}},
    }


async def test_type_name_override(store: Store) -> None:
    @dataclass
    class Account(PersistentObject):
        type_name = "bank.Account"
        balance: int = 0

    @dataclass
    class SavingsAccount(Account):
        rate: float = 0.0

    assert Account.type_name == "bank.Account"
    assert SavingsAccount.type_name == "SavingsAccount"
    record = await save_object(store, Account(id="a", balance=3))
    assert record.type == "bank.Account"
    assert await store.list_ids("bank.Account") == ["a"]
    assert await load_object(store, Account, "a") == Account(id="a", balance=3)


def test_invalid_class_attributes_refused_at_definition() -> None:
    with pytest.raises(InvalidInput, match=r"Bad\.type_name"):

        @dataclass
        class Bad(PersistentObject):
            type_name = "not valid!"

    with pytest.raises(InvalidInput, match=r"_Private\.type_name"):

        class _Private(PersistentObject):
            pass

    with pytest.raises(InvalidInput, match="state_version"):

        class Zero(PersistentObject):
            state_version = 0

    with pytest.raises(InvalidInput, match="type_name"):

        class BadModel(PersistentModel):
            type_name = ""


async def test_reserved_key_and_field_names_refused(store: Store) -> None:
    @dataclass
    class Custom(PersistentObject):
        def to_data(self) -> dict[str, Any]:
            return {"_v": 1}

    with pytest.raises(InvalidInput, match="reserved key '_v'"):
        await save_object(store, Custom(id="c"))

    @dataclass
    class Forgot(PersistentObject):
        state_version: int = 2  # type: ignore[misc]  # not a ClassVar: becomes a field

    with pytest.raises(InvalidInput, match="ClassVar"):
        await save_object(store, Forgot(id="f"))


async def test_stored_state_that_does_not_fit_a_pydantic_model_is_a_state_error(
    store: Store,
) -> None:
    import pydantic

    from pgactors import PersistentModel, StateError

    class Strict(PersistentModel):
        score: int = 0

    assert issubclass(Strict, pydantic.BaseModel)
    await store.save("Strict", "s1", {"score": "not a number"})
    with pytest.raises(StateError, match="does not fit"):
        await load_object(store, Strict, "s1")


def test_state_to_json_converts_subclasses_and_nested_values() -> None:
    import collections
    import enum

    from pgactors.objects import state_to_json

    class Level(enum.IntEnum):
        HIGH = 3

    class Name(str):
        pass

    Pair = collections.namedtuple("Pair", "a b")

    state = {
        "level": Level.HIGH,
        "name": Name("ann"),
        "pair": Pair(1, Point(2, 3)),
        "counts": collections.Counter(a=2),
        "nested": collections.OrderedDict(p=[Point(4, 5), (True, None, 1.5)]),
    }
    converted = state_to_json(state)
    assert json.loads(json.dumps(converted)) == {
        "level": 3,
        "name": "ann",
        "pair": [1, {"x": 2, "y": 3}],
        "counts": {"a": 2},
        "nested": {"p": [{"x": 4, "y": 5}, [True, None, 1.5]]},
    }
    assert type(converted["pair"]) is list and type(converted["nested"]) is dict
    # Twice: the second conversion runs on the converters cached by the first.
    assert state_to_json(state) == converted
    for bad in ({1: "int key"}, {"s": {1, 2}}, [Point]):
        with pytest.raises(InvalidInput):
            state_to_json(bad)


def test_importing_pgactors_does_not_import_pydantic_until_a_model_is_used() -> None:
    import subprocess
    import sys

    code = (
        "import sys, pgactors, pgactors.cli\n"
        "assert 'pydantic' not in sys.modules\n"
        "from pgactors import PersistentModel\n"
        "assert 'pydantic' in sys.modules and PersistentModel.__module__ == 'pgactors.models'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
