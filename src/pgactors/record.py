"""Records and the validation of keys and data before anything is written."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Final, TypeAlias

import msgspec

from .checks import int_in_range
from .errors import InvalidInput

JSON: TypeAlias = dict[str, Any] | list[Any] | str | int | float | bool | None

TYPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:\-]{0,254}$")
MAX_ID_LENGTH = 255
# A JSON escape of NUL (\u0000 not itself escaped): text PostgreSQL refuses in jsonb.
ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


@dataclass(frozen=True, slots=True)
class Record:
    """One stored state: its key, JSON data, version (1 on creation) and timestamps.

    A binary state (``Store.save_binary``) has ``data`` None, and ``payload`` (bytes)
    plus ``manifest`` (the name of what the bytes encode). ``expires_at`` is set for a
    record saved with a ``ttl``: from then on it is gone, as if deleted.
    """

    type: str
    id: str
    data: JSON
    version: int
    created_at: datetime
    updated_at: datetime
    payload: bytes | None = None
    manifest: str | None = None
    expires_at: datetime | None = None


_SET = {f.name: getattr(Record, f.name).__set__ for f in fields(Record)}
_set_type = _SET["type"]
_set_id = _SET["id"]
_set_data = _SET["data"]
_set_version = _SET["version"]
_set_created = _SET["created_at"]
_set_updated = _SET["updated_at"]
_set_payload = _SET["payload"]
_set_manifest = _SET["manifest"]
_set_expires = _SET["expires_at"]


def new_record(
    type: str,
    id: str,
    data: JSON,
    version: int,
    created_at: datetime,
    updated_at: datetime,
    payload: bytes | None = None,
    manifest: str | None = None,
    expires_at: datetime | None = None,
) -> Record:
    """``Record(...)`` in half the time: set through its slots, past the frozen
    dataclass's ``__init__``, which sets each field by ``object.__setattr__``."""
    record = object.__new__(Record)
    _set_type(record, type)
    _set_id(record, id)
    _set_data(record, data)
    _set_version(record, version)
    _set_created(record, created_at)
    _set_updated(record, updated_at)
    _set_payload(record, payload)
    _set_manifest(record, manifest)
    _set_expires(record, expires_at)
    return record


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final = _Missing()
"""The one "no value" sentinel: a missing path in a record, an ``update`` without a default."""


@dataclass(frozen=True, slots=True)
class Encoded:
    """State already checked and encoded by ``Store.encode`` or ``Store.encode_binary``.

    Saving it skips the encoding step; two equal ``Encoded`` values store the same
    bytes, so comparing them tells whether a state changed. A JSON state has ``text``;
    a binary one ``payload`` and ``manifest``.
    """

    text: str | None
    payload: bytes | None = None
    manifest: str | None = None


@dataclass(frozen=True, slots=True)
class AppliedCall:
    """A call recorded by ``Store.save_call``: its stored JSON result and when it committed."""

    call_id: str
    result: JSON
    applied_at: datetime


MAX_CALL_ID_LENGTH = 200


def check_call_id(call_id: object) -> str:
    """Return ``call_id`` if it is 1-200 printable characters, else raise ``InvalidInput``."""
    if (
        not isinstance(call_id, str)
        or not 1 <= len(call_id) <= MAX_CALL_ID_LENGTH
        or not call_id.isprintable()
    ):
        raise InvalidInput(
            f"invalid call_id {call_id!r}: a call id is 1-{MAX_CALL_ID_LENGTH} printable "
            "characters (a UUID, say)"
        )
    return call_id


def check_type(type: object) -> str:
    """Return ``type`` if it is a valid record type, else raise :class:`InvalidInput`."""
    if type.__class__ is str and type in _VALID_TYPES:
        return type
    if not isinstance(type, str) or not TYPE_RE.match(type):
        raise InvalidInput(
            f"invalid type {type!r}: a type is 1-255 characters of letters, digits and "
            "'_', '.', ':', '-', starting with a letter"
        )
    if type.__class__ is str and len(_VALID_TYPES) < MAX_VALID_TYPES:
        _VALID_TYPES.add(type)
    return type


# Types already checked: an application uses few, and a set lookup costs a tenth of
# the regular expression. Bounded, so that types made up at run time cannot grow it.
_VALID_TYPES: set[str] = set()
MAX_VALID_TYPES = 1024


def check_id(id: object) -> str:
    """Return ``id`` if it is a valid record id, else raise :class:`InvalidInput`."""
    if not isinstance(id, str):
        raise InvalidInput(f"invalid id {id!r}: an id must be a str, got {_kind(id)}")
    if not 1 <= len(id) <= MAX_ID_LENGTH:
        raise InvalidInput(f"invalid id of length {len(id)}: an id is 1-{MAX_ID_LENGTH} characters")
    if "\x00" in id:
        raise InvalidInput(f"invalid id {id!r}: an id may not contain NUL characters")
    if not is_unicode(id):
        raise InvalidInput(f"invalid id {id!r}: a lone surrogate is not valid Unicode")
    return id


def is_unicode(text: str) -> bool:
    """False if ``text`` holds a lone surrogate, which UTF-8 (and PostgreSQL) cannot."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def check_ids(ids: object) -> list[str]:
    """Validate a collection of ids (not a bare string) and return them without duplicates."""
    if isinstance(ids, str | bytes) or not hasattr(ids, "__iter__"):
        raise InvalidInput(f"ids must be a collection of str, got {_kind(ids)}")
    return list(dict.fromkeys(check_id(i) for i in ids))


MAX_MANIFEST_LENGTH = 255


def check_binary(payload: object, manifest: object, max_bytes: int) -> tuple[bytes, str]:
    """Validate a binary state: bytes within ``max_bytes`` and a printable manifest."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise InvalidInput(f"payload must be bytes, got {_kind(payload)}")
    data = bytes(payload)
    if len(data) > max_bytes:
        raise InvalidInput(
            f"payload is {len(data)} bytes, over the limit of {max_bytes} bytes (max_data_bytes)"
        )
    if (
        not isinstance(manifest, str)
        or not 1 <= len(manifest) <= MAX_MANIFEST_LENGTH
        or not manifest.isprintable()
    ):
        raise InvalidInput(
            f"invalid manifest {manifest!r}: a manifest is 1-{MAX_MANIFEST_LENGTH} printable "
            "characters naming what the payload encodes (e.g. a protobuf message name)"
        )
    return data, manifest


def check_version(name: str, version: object, *, allow_none: bool = True) -> int | None:
    """Validate an expected version: None (when allowed) or an int >= 0."""
    if version is None and allow_none:
        return None
    if not int_in_range(version, 0):
        allowed = "None or an int >= 0" if allow_none else "an int >= 0"
        raise InvalidInput(f"{name} must be {allowed}, got {version!r}")
    return version


# About a century: far beyond any session, well within what timestamps can hold.
MAX_TTL_SECONDS = 100 * 366 * 86400


def check_ttl(ttl: object, sliding: object) -> float | None:
    """Validate a time to live: None or a number of seconds > 0; ``sliding`` needs one."""
    if not isinstance(sliding, bool):
        raise InvalidInput(f"sliding must be a bool, got {_kind(sliding)}")
    if ttl is None:
        if sliding:
            raise InvalidInput("sliding=True needs a ttl (the seconds each save extends it by)")
        return None
    if (
        isinstance(ttl, bool)
        or not isinstance(ttl, int | float)
        or not 0 < ttl <= MAX_TTL_SECONDS  # also refuses NaN
    ):
        raise InvalidInput(
            f"ttl must be None or a number of seconds > 0 and <= {MAX_TTL_SECONDS}, got {ttl!r}"
        )
    return float(ttl)


def encode_data(data: object, max_bytes: int) -> str:
    """Validate ``data`` as JSON and return its compact text; raise :class:`InvalidInput`.

    Refuses NaN/Infinity, strings containing NUL (PostgreSQL's jsonb cannot hold
    them), non-str dict keys, non-JSON objects and text over ``max_bytes``.
    """
    text = _fast_text(data)
    if text is not None:
        return _checked(text, max_bytes)
    try:
        text = _ENCODER.encode(data)
    except InvalidInput:
        raise
    except ValueError as exc:
        if "Circular reference" in str(exc):
            raise InvalidInput("data contains a circular reference") from None
        if "integer string conversion" in str(exc):
            raise InvalidInput(
                f"data contains an integer too large to write as JSON text ({exc})"
            ) from None
        raise InvalidInput("data contains NaN or Infinity, which JSON cannot represent") from None
    except RecursionError:
        raise InvalidInput("data is nested too deeply") from None
    _check_keys(data)
    return _checked(text, max_bytes)


def _checked(text: str, max_bytes: int) -> str:
    """``text``, if PostgreSQL can store it and it is within ``max_bytes``."""
    if "\\u0000" in text and ESCAPED_NUL.search(text):
        raise InvalidInput("data contains a NUL character (\\u0000), which PostgreSQL refuses")
    try:
        size = len(text) if text.isascii() else len(text.encode())
    except UnicodeEncodeError:
        raise InvalidInput(
            "data contains a lone surrogate (e.g. '\\ud800'), which is not valid Unicode "
            "and cannot be stored"
        ) from None
    if size > max_bytes:
        raise InvalidInput(
            f"data is {size} bytes as JSON, over the limit of {max_bytes} bytes (max_data_bytes)"
        )
    return text


def _fast_text(data: object) -> str | None:
    """``data`` as compact JSON text by msgspec (about ten times as fast as ``json``), if
    it is plain JSON: dicts with str keys, lists, and exactly str, int, bool, None and
    finite floats. Anything else (a tuple, a subclass, NaN, a huge int, a lone
    surrogate, a container met twice) returns None, for ``json`` to encode or refuse."""
    stack: list[Any] = [data]
    seen = {id(data)}
    while stack:
        item = stack.pop()
        kind = type(item)
        values: Iterable[Any]
        if kind is dict:
            for key in item:
                if type(key) is not str:
                    return None
            values = item.values()
        elif kind is list:
            values = item
        else:
            values = (item,)
        for value in values:
            kind = type(value)
            if kind is str or kind is int or kind is bool or value is None:
                continue
            if kind is float:
                if value - value != 0.0:  # NaN or an infinity
                    return None
            elif kind is dict or kind is list:
                if id(value) in seen:  # perhaps a cycle: json tells
                    return None
                seen.add(id(value))
                stack.append(value)
            else:
                return None
    try:
        return _MSGSPEC(data).decode()
    except (OverflowError, UnicodeEncodeError, TypeError, ValueError, RecursionError):
        return None


_MSGSPEC = msgspec.json.encode


def _check_keys(data: object) -> None:
    # json.dumps silently turns int/float/bool/None keys into strings, which would not
    # round-trip; walk only containers, so flat data costs almost nothing.
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    raise InvalidInput(
                        f"data has a dict key {key!r} of type {_kind(key)}: JSON object keys "
                        "must be str"
                    )
            stack += [v for v in item.values() if isinstance(v, _CONTAINERS)]
        elif isinstance(item, _CONTAINERS):
            stack += [v for v in item if isinstance(v, _CONTAINERS)]


_CONTAINERS = (dict, list, tuple)  # a tuple: isinstance() checks it faster than a union


def _refuse(value: object) -> object:
    raise InvalidInput(
        f"data contains {_kind(value)} {_short(value)}, which is not JSON: allowed are dict "
        "(str keys), list, str, int, float, bool and None"
    )


# Built once: json.dumps with any non-default option builds a new encoder per call.
_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_refuse
)


def _kind(value: object) -> str:
    return type(value).__name__


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
