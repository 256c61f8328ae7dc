"""Binary states: bytes plus manifest, protobuf through a registry, raw bytes."""

from __future__ import annotations

import pytest
from google.protobuf import timestamp_pb2, wrappers_pb2

from pgactors import InvalidInput, Store, VersionConflict
from pgactors.codecs import (
    ProtobufCodec,
    RawBytesCodec,
    UnknownManifest,
    load_message,
    save_message,
)


async def test_raw_bytes_round_trip_with_versions(store: Store) -> None:
    codec = RawBytesCodec()
    blob = bytes(range(256)) * 10
    first = await save_message(store, "Blob", "b1", blob, codec, expected_version=0)
    assert (first.version, first.data, first.payload, first.manifest) == (1, None, blob, "bytes")
    assert await load_message(store, "Blob", "b1", codec) == blob
    record = await store.load("Blob", "b1")
    assert record is not None and record.payload == blob and record.data is None
    with pytest.raises(VersionConflict):
        await save_message(store, "Blob", "b1", b"x", codec, expected_version=0)
    second = await save_message(store, "Blob", "b1", b"\x00nul ok", codec, expected_version=1)
    assert second.version == 2
    assert await load_message(store, "Blob", "b1", codec) == b"\x00nul ok"


async def test_protobuf_messages_by_manifest(store: Store) -> None:
    codec = ProtobufCodec([wrappers_pb2.StringValue, timestamp_pb2.Timestamp])
    await save_message(store, "Msg", "s", wrappers_pb2.StringValue(value="hello"), codec)
    await save_message(store, "Msg", "t", timestamp_pb2.Timestamp(seconds=42, nanos=7), codec)
    assert (await load_message(store, "Msg", "s", codec)).value == "hello"
    stamp = await load_message(store, "Msg", "t", codec)
    assert (stamp.seconds, stamp.nanos) == (42, 7)
    record = await store.load("Msg", "t")
    assert record is not None and record.manifest == "google.protobuf.Timestamp"


async def test_unknown_manifest_is_a_clear_error(store: Store) -> None:
    await save_message(
        store,
        "Msg",
        "t",
        timestamp_pb2.Timestamp(seconds=1),
        ProtobufCodec([timestamp_pb2.Timestamp]),
    )
    narrow = ProtobufCodec([wrappers_pb2.StringValue])
    with pytest.raises(UnknownManifest, match=r"google.protobuf.Timestamp.*StringValue"):
        await load_message(store, "Msg", "t", narrow)
    with pytest.raises(UnknownManifest):
        await load_message(store, "Msg", "t", RawBytesCodec())
    await store.save("Msg", "json", {"a": 1})
    with pytest.raises(UnknownManifest, match="JSON state"):
        await load_message(store, "Msg", "json", narrow)


async def test_json_save_replaces_a_binary_state(store: Store) -> None:
    await store.save_binary("Mixed", "m", b"raw", "bytes")
    record = await store.save("Mixed", "m", {"now": "json"})
    loaded = await store.load("Mixed", "m")
    assert loaded is not None and loaded.data == {"now": "json"} and loaded.payload is None
    assert record.version == 2


@pytest.mark.parametrize(
    ("payload", "manifest"),
    [("text", "bytes"), (b"ok", ""), (b"ok", "x" * 256), (b"ok", "bad\nname"), (b"ok", None)],
)
async def test_bad_binary_input_refused(store: Store, payload: object, manifest: object) -> None:
    with pytest.raises(InvalidInput):
        await store.save_binary("Bin", "b", payload, manifest)  # type: ignore[arg-type]
    assert await store.types() == {}


async def test_unregistered_message_refused_on_save(store: Store) -> None:
    with pytest.raises(InvalidInput, match="not a registered"):
        await save_message(store, "Msg", "x", wrappers_pb2.Int64Value(value=1), ProtobufCodec())
    with pytest.raises(InvalidInput):
        ProtobufCodec([dict])


async def test_binary_saves_reach_the_change_feed(store: Store) -> None:
    async with store.changes() as stream:
        await store.save_binary("Bin", "fed", b"\x01", "bytes")
        change = await stream.__anext__()
    assert (change.type, change.id, change.version, change.op) == ("Bin", "fed", 1, "save")
