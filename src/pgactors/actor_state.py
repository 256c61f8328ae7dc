"""Actor state as stored: JSON (with state versions and kept unknown keys) or bytes from a
codec, and the recorded results of exactly-once calls."""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Any

from .codecs import UnknownManifest
from .errors import InvalidInput
from .objects import (
    STATE_VERSION_KEY,
    StateError,
    state_from_json,
    state_keys,
    state_to_json,
    upcast,
)
from .record import JSON, Record

if TYPE_CHECKING:
    from .actors import Actor


def decode_state(cls: type[Actor[Any]], record: Record) -> tuple[Any, dict[str, Any]]:
    """The state stored in ``record`` and the top-level keys its type does not know."""
    where = f"stored {cls.type_name}/{record.id!r}"
    if cls.codec is not None:
        if record.payload is None or record.manifest is None:
            raise UnknownManifest(None, [], f"{where} (a JSON state, not a binary one)")
        return cls.codec.decode(record.payload, record.manifest, where), {}
    if record.payload is not None:
        raise StateError(
            f"{where} is a binary state ({record.manifest!r}): give {cls.__qualname__} "
            "a codec to decode it"
        )
    return decode_json_state(cls, record.id, record.data)


def decode_json_state(cls: type[Actor[Any]], id: str, data: Any) -> tuple[Any, dict[str, Any]]:
    """The state of a stored JSON ``data`` and the top-level keys its type does not know."""
    where = f"stored {cls.type_name}/{id!r}"
    if isinstance(data, dict):
        data = upcast(cls, dict(data), where)
        known = state_keys(cls.state_type)
        if known is not None:
            unknown = {k: v for k, v in data.items() if k not in known}
            data = {k: v for k, v in data.items() if k in known}
            return state_from_json(cls.state_type, data, where), unknown
    elif cls.state_version > 1:
        raise StateError(f"{where} is not a JSON object, so it has no state version")
    return state_from_json(cls.state_type, data, where), {}


def encode_state(cls: type[Actor[Any]], state: Any, unknown: dict[str, Any]) -> JSON:
    """The JSON stored for ``state``: its fields, kept unknown keys and the state version."""
    data: JSON = state_to_json(state, f"{cls.type_name}.state")
    if isinstance(data, dict):
        if unknown:
            data = {**unknown, **data}
        if cls.state_version > 1:
            data = {**data, STATE_VERSION_KEY: cls.state_version}
    elif cls.state_version > 1:
        raise InvalidInput(
            f"{cls.__qualname__} has state_version {cls.state_version}, so its state must "
            f"be stored as a JSON object, not a {type(data).__name__}"
        )
    return data


def return_hint(cls: type[Actor[Any]], method: str) -> Any:
    """The return annotation of ``cls.method`` (None when absent or Any)."""
    try:
        hint = typing.get_type_hints(getattr(cls, method)).get("return")
    except Exception:  # an annotation that cannot be resolved: hand back plain JSON
        return None
    return None if hint is Any or hint is type(None) else hint


def is_protobuf_class(hint: Any) -> bool:
    return isinstance(hint, type) and isinstance(
        getattr(getattr(hint, "DESCRIPTOR", None), "full_name", None), str
    )
