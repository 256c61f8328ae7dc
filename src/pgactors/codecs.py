"""Binary codecs: states stored as bytes plus a manifest naming their format (eGo's shape).

JSON (``Store.save``) stays the default: it is queryable with SQL. A binary codec is for
states that already have a wire format: protobuf messages (the manifest is the message's
full name, decoded through a registry) and raw bytes. Never pickle: loading a pickle
from a database is code execution.

::

    codec = ProtobufCodec([PlayerState])           # protobuf is an optional extra
    await save_message(store, "Player", "p1", state, codec)
    state = await load_message(store, "Player", "p1", codec)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from .errors import InvalidInput, PgActorsError
from .record import Record
from .store import Store


class UnknownManifest(PgActorsError):
    """A stored manifest names a format this codec cannot decode."""

    def __init__(self, manifest: str | None, known: Iterable[str], where: str) -> None:
        names = sorted(known)
        super().__init__(
            f"{where} is stored as {manifest!r}, which this codec does not know "
            f"(it knows {names}): register the message type, or load it as raw bytes"
        )
        self.manifest = manifest
        self.known = names


class BinaryCodec(Protocol):
    """Turns values into (payload, manifest) and back."""

    def encode(self, value: Any) -> tuple[bytes, str]:
        """The bytes and the manifest that name their format."""
        ...

    def decode(self, payload: bytes, manifest: str, where: str) -> Any:
        """The value; raise :class:`UnknownManifest` for a manifest it does not know."""
        ...


class RawBytesCodec:
    """Bytes stored as they are, under one manifest (default ``"bytes"``)."""

    def __init__(self, manifest: str = "bytes") -> None:
        self.manifest = manifest

    def encode(self, value: Any) -> tuple[bytes, str]:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise InvalidInput(f"RawBytesCodec stores bytes, got {type(value).__name__}")
        return bytes(value), self.manifest

    def decode(self, payload: bytes, manifest: str, where: str) -> bytes:
        if manifest != self.manifest:
            raise UnknownManifest(manifest, [self.manifest], where)
        return payload


class ProtobufCodec:
    """Protobuf messages; the manifest is the message's full name, decoded by registry."""

    def __init__(self, message_types: Iterable[type[Any]] = ()) -> None:
        self._types: dict[str, type[Any]] = {}
        for message_type in message_types:
            self.register(message_type)

    def register(self, message_type: type[Any]) -> None:
        """Make ``message_type`` decodable (and encodable)."""
        descriptor = getattr(message_type, "DESCRIPTOR", None)
        name = getattr(descriptor, "full_name", None)
        if not isinstance(name, str):
            raise InvalidInput(f"{message_type!r} is not a protobuf message class")
        self._types[name] = message_type

    def encode(self, value: Any) -> tuple[bytes, str]:
        name = getattr(getattr(value, "DESCRIPTOR", None), "full_name", None)
        if name not in self._types:
            raise InvalidInput(
                f"{type(value).__name__} is not a registered protobuf message "
                f"(registered: {sorted(self._types)})"
            )
        return value.SerializeToString(), name

    def decode(self, payload: bytes, manifest: str, where: str) -> Any:
        message_type = self._types.get(manifest)
        if message_type is None:
            raise UnknownManifest(manifest, self._types, where)
        message = message_type()
        try:
            message.ParseFromString(payload)
        except Exception as exc:  # protobuf's DecodeError
            raise PgActorsError(f"{where} is not a valid {manifest}: {exc}") from exc
        return message


async def save_message(
    store: Store,
    type: str,
    id: str,
    value: Any,
    codec: BinaryCodec,
    *,
    expected_version: int | None = None,
) -> Record:
    """Encode ``value`` with ``codec`` and save it as a binary state."""
    payload, manifest = codec.encode(value)
    return await store.save_binary(type, id, payload, manifest, expected_version=expected_version)


async def load_message(store: Store, type: str, id: str, codec: BinaryCodec) -> Any:
    """Load a binary state and decode it; None if absent; ``UnknownManifest`` if foreign."""
    record = await store.load(type, id)
    if record is None:
        return None
    where = f"{type}/{id!r}"
    if record.payload is None or record.manifest is None:
        raise UnknownManifest(None, [], f"{where} (a JSON state)")
    return codec.decode(record.payload, record.manifest, where)


__all__ = [
    "BinaryCodec",
    "ProtobufCodec",
    "RawBytesCodec",
    "UnknownManifest",
    "load_message",
    "save_message",
]
