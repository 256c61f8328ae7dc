"""Actor state formats: msgspec Structs, binary (protobuf, raw bytes), versions, unknown keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgspec
import pytest
from google.protobuf import wrappers_pb2

from pgactors import InvalidInput, Store
from pgactors.actors import Actor, ActorSystem
from pgactors.codecs import RawBytesCodec, UnknownManifest
from pgactors.objects import PersistentObject, StateError, load_object, save_object


class Position(msgspec.Struct):
    x: int = 0
    y: int = 0


class PlayerState(msgspec.Struct):
    name: str = ""
    position: Position = msgspec.field(default_factory=Position)
    items: list[str] = msgspec.field(default_factory=list)


class Player(Actor[PlayerState]):
    async def move(self, dx: int, dy: int) -> tuple[int, int]:
        self.state.position.x += dx
        self.state.position.y += dy
        return self.state.position.x, self.state.position.y

    async def pick(self, item: str) -> list[str]:
        self.state.items.append(item)
        return list(self.state.items)


async def test_msgspec_struct_state_is_stored_as_its_fields(store: Store) -> None:
    async with ActorSystem(store) as system:
        assert await system.actor(Player, "p1").move(2, 3) == (2, 3)
        await system.actor(Player, "p1").pick("sword")
    stored = await store.load("Player", "p1")
    assert stored is not None
    assert stored.data == {"name": "", "position": {"x": 2, "y": 3}, "items": ["sword"]}
    async with ActorSystem(store) as again:
        assert await again.actor(Player, "p1").move(1, 1) == (3, 4)


@dataclass
class Inventory(PersistentObject):
    owner: str = ""
    slots: list[Position] = field(default_factory=list)


async def test_msgspec_structs_nested_in_a_persistent_object(store: Store) -> None:
    await save_object(store, Inventory(id="i1", owner="ann", slots=[Position(1, 2)]))
    stored = await store.load("Inventory", "i1")
    assert stored is not None and stored.data == {"owner": "ann", "slots": [{"x": 1, "y": 2}]}
    loaded = await load_object(store, Inventory, "i1")
    assert loaded is not None and loaded.slots == [Position(1, 2)]


async def test_msgspec_state_that_does_not_fit_is_a_state_error(store: Store) -> None:
    await store.save("Player", "bad", {"name": 42})
    async with ActorSystem(store) as system:
        with pytest.raises(StateError, match=r"Player/'bad'.*PlayerState"):
            await system.actor(Player, "bad").move(1, 1)


class Greeting(Actor[wrappers_pb2.StringValue]):
    async def set(self, text: str) -> str:
        self.state.value = text
        return self.state.value

    async def get(self) -> str:
        return str(self.state.value)


async def test_protobuf_state_is_stored_as_bytes_with_its_manifest(store: Store) -> None:
    async with ActorSystem(store) as system:
        assert await system.actor(Greeting, "g").set("hello") == "hello"
    stored = await store.load("Greeting", "g")
    assert stored is not None and stored.data is None
    assert stored.manifest == "google.protobuf.StringValue"
    assert stored.payload == wrappers_pb2.StringValue(value="hello").SerializeToString()
    async with ActorSystem(store) as again:
        ref = again.actor(Greeting, "g")
        assert await ref.get() == "hello"
        await ref.get()  # an unchanged state is not written again
    assert (await store.load("Greeting", "g")).version == 1  # type: ignore[union-attr]


class Blob(Actor[bytes]):
    codec = RawBytesCodec("application/octet-stream")

    def initial_state(self) -> bytes:
        return b""

    async def append(self, chunk: bytes) -> int:
        self.state += chunk
        return len(self.state)


async def test_raw_bytes_state_and_write_behind(store: Store) -> None:
    async with ActorSystem(store, persistence="write_behind") as system:
        ref = system.actor(Blob, "b")
        for _ in range(3):
            await ref.append(b"\x00\xff")
    stored = await store.load("Blob", "b")
    assert stored is not None and stored.payload == b"\x00\xff" * 3
    assert stored.manifest == "application/octet-stream"


async def test_a_foreign_format_is_a_clear_error(store: Store) -> None:
    await store.save("Greeting", "json", {"value": "hi"})
    await store.save_binary("Player", "binary", b"\x01", "some.Message")
    async with ActorSystem(store) as system:
        with pytest.raises(UnknownManifest, match=r"Greeting/'json'.*JSON state"):
            await system.actor(Greeting, "json").get()
        with pytest.raises(StateError, match=r"binary state \('some.Message'\).*codec"):
            await system.actor(Player, "binary").move(0, 0)
    await store.save_binary("Greeting", "other", b"\x01", "acme.Other")
    async with ActorSystem(store) as system:
        with pytest.raises(UnknownManifest, match=r"acme.Other.*StringValue"):
            await system.actor(Greeting, "other").get()


@dataclass
class AccountV2:
    owner: str = ""
    balance_cents: int = 0


def _dollars_to_cents(data: dict[str, Any]) -> dict[str, Any]:
    data["balance_cents"] = round(data.pop("balance") * 100)
    return data


class Account(Actor[AccountV2]):
    state_version: ClassVar[int] = 2
    upcasters: ClassVar[dict[int, Any]] = {1: _dollars_to_cents}

    async def deposit(self, cents: int) -> int:
        self.state.balance_cents += cents
        return self.state.balance_cents


async def test_older_state_is_upcast_and_unknown_keys_survive(store: Store) -> None:
    # Written by version 1 of the class, plus a key from some newer deployment.
    await store.save("Account", "a", {"owner": "ann", "balance": 1.5, "tier": "gold"})
    async with ActorSystem(store) as system:
        assert await system.actor(Account, "a").deposit(50) == 200
    stored = await store.load("Account", "a")
    assert stored is not None
    assert stored.data == {"owner": "ann", "balance_cents": 200, "tier": "gold", "_v": 2}


async def test_state_newer_than_the_class_is_refused(store: Store) -> None:
    await store.save("Account", "future", {"owner": "x", "balance_cents": 1, "_v": 3})
    async with ActorSystem(store) as system:
        with pytest.raises(StateError, match=r"state version 3, newer than Account"):
            await system.actor(Account, "future").deposit(1)
    stored = await store.load("Account", "future")
    assert stored is not None and stored.version == 1  # nothing written


async def test_bad_state_declarations_are_refused() -> None:
    with pytest.raises(InvalidInput, match="state_version must be an int"):

        class BadVersion(Actor[AccountV2]):
            state_version: ClassVar[int] = 0

    with pytest.raises(InvalidInput, match="apply to JSON states"):

        class VersionedBinary(Actor[wrappers_pb2.StringValue]):
            state_version: ClassVar[int] = 2
            upcasters: ClassVar[dict[int, Any]] = {1: _dollars_to_cents}

    with pytest.raises(InvalidInput, match="codec must be a BinaryCodec"):

        class BadCodec(Actor[bytes]):
            codec = "protobuf"  # type: ignore[assignment]
