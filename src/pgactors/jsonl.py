"""The JSONL format: one line per record, per past version and per history setting.

A JSONL line is one record::

    {"type": "T", "id": "x", "version": 3, "data": {...},
     "created_at": "2026-11-21T07:30:55.1234+00:00", "updated_at": "..."}

A binary record has ``"payload"`` (base64) and ``"manifest"`` instead of ``"data"``.
``version`` and the timestamps are optional on import. This module writes lines
(``record_line``, ``past_line``, ``policy_line``) and parses them, with ``save``'s
rules (``parse_line``); ``transfer`` runs imports over what it parses.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeAlias

from .checks import int_in_range
from .errors import InvalidInput
from .history import HistoryPolicy, PastVersion, check_keep_days, check_keep_versions
from .record import ESCAPED_NUL, Record, check_binary, check_id, check_type, encode_data

_FIELDS = frozenset(
    ("type", "id", "version", "data", "payload", "manifest", "created_at", "updated_at")
)

Where: TypeAlias = int | str
"""Where a record came from: a line number, or a file name."""


class ImportRow(NamedTuple):
    """One checked record to write.

    ``text`` is the data as UTF-8 JSON text, None for a binary record. A line in the
    export's own layout passes its data through unparsed: the backend's JSON parser
    (the database's) checks it, and a refused row is reported where it came from.
    ``version``/timestamps None: set them as ``save`` would.
    """

    type: str
    id: str
    version: int | None
    text: bytes | None
    payload: bytes | None
    manifest: str | None
    created_at: datetime | None
    updated_at: datetime | None
    where: Where


def record_json(record: Record) -> dict[str, Any]:
    """A record as the JSON object of its export line (``record_line`` writes the same,
    faster): type, id, version, data (or base64 payload and manifest), UTC timestamps."""
    body: dict[str, Any] = {"type": record.type, "id": record.id, "version": record.version}
    if record.payload is not None:
        body["payload"] = base64.b64encode(record.payload).decode()
        body["manifest"] = record.manifest
    else:
        body["data"] = record.data
    body["created_at"] = _iso(record.created_at)
    body["updated_at"] = _iso(record.updated_at)
    return body


def record_line(record: Record) -> str:
    """The JSONL line (without newline) for a record: ``record_json``, written directly."""
    head = (
        f'{{"type":{json.dumps(record.type)},"id":{json.dumps(record.id, ensure_ascii=False)},'
        f'"version":{record.version},'
    )
    if record.payload is not None:
        body = (
            f'"payload":"{base64.b64encode(record.payload).decode()}",'
            f'"manifest":{json.dumps(record.manifest, ensure_ascii=False)},'
        )
    else:
        data = json.dumps(record.data, ensure_ascii=False, separators=(",", ":"))
        body = f'"data":{data},'
    return (
        f'{head}{body}"created_at":"{_iso(record.created_at)}",'
        f'"updated_at":"{_iso(record.updated_at)}"}}'
    )


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def past_line(past: PastVersion) -> str:
    """The JSONL line of a past version (``export --history``): its record's fields,
    plus ``expires_at``, ``replaced_at`` and ``deleted``."""
    body = record_json(past)
    body["expires_at"] = None if past.expires_at is None else _iso(past.expires_at)
    body["replaced_at"] = _iso(past.replaced_at)
    body["deleted"] = past.deleted
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def policy_line(policy: HistoryPolicy) -> str:
    """The JSONL line of a type's history setting (``export --history``)."""
    setting = {
        "type": policy.type,
        "enabled": policy.enabled,
        "keep_versions": policy.keep_versions,
        "keep_days": policy.keep_days,
    }
    return json.dumps({"history": setting}, separators=(",", ":"))


# -- reading input ------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def _loads(text: str) -> Any:
    try:
        return _DECODER.decode(text)
    except ValueError as exc:
        raise InvalidInput(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput("the JSON is nested too deeply") from None


def json_error(text: bytes) -> str | None:
    """Why ``text`` is not acceptable JSON (as PostgreSQL's jsonb would say), or None."""
    try:
        # Re-encoding finds what jsonb refuses and json accepts: lone surrogates.
        json.dumps(_loads(text.decode()), ensure_ascii=False).encode()
    except UnicodeDecodeError as exc:
        return f"not UTF-8: {exc.reason} at byte {exc.start}"
    except UnicodeEncodeError:
        return "not valid Unicode (a lone surrogate)"
    except InvalidInput as exc:
        return str(exc)
    return None


def _check_data_text(text: bytes, max_bytes: int) -> None:
    """``encode_data``'s NUL and size rules, on data that stays as it is in the input."""
    if b"\\u0000" in text and ESCAPED_NUL.search(text.decode(errors="replace")):
        raise InvalidInput("data contains a NUL character (\\u0000), which PostgreSQL refuses")
    if len(text) > max_bytes:
        raise InvalidInput(
            f"data is {len(text)} bytes as JSON, over the limit of {max_bytes} bytes "
            "(max_data_bytes)"
        )


def _check_text(name: str, value: str) -> None:
    try:
        value.encode()
    except UnicodeEncodeError:
        raise InvalidInput(f"{name} {value!r} is not valid Unicode (a lone surrogate)") from None


def _timestamp(obj: dict[str, Any], name: str) -> datetime | None:
    value = obj.get(name)
    return None if value is None else _parse_time(name, value)


def _parse_time(name: str, value: object) -> datetime:
    try:
        if not isinstance(value, str):
            raise ValueError
        at = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{name} must be an ISO 8601 timestamp, got {value!r}") from None
    if at.tzinfo is None:
        raise InvalidInput(f"{name} {value!r} has no UTC offset")
    return at


# The layout export writes: simple strings and a version, then the data, then the
# timestamps. Such a line is split without decoding or parsing its data (the costly part).
_HEAD = re.compile(
    rb'\{"type":"([^"\\\x00-\x1f]*)","id":"([^"\\\x00-\x1f]*)","version":([1-9][0-9]{0,17}),"data":'
)
_TAIL = re.compile(rb',"created_at":"([^"\\\x00-\x1f]*)","updated_at":"([^"\\\x00-\x1f]*)"\}\s*')
_TAIL_START = b',"created_at":"'


def parse_line(line: bytes, where: Where, type: str | None, max_bytes: int) -> Item:
    """Check one JSONL line (``type`` overrides the line's type); raise InvalidInput."""
    head = _HEAD.match(line)
    if head is not None:
        at = line.rfind(_TAIL_START)
        tail = _TAIL.fullmatch(line, at) if at >= head.end() else None
        if tail is not None:
            record_id = check_id(_utf8(head[2]))
            text = line[head.end() : at]
            _check_data_text(text, max_bytes)
            return ImportRow(
                check_type(type or _utf8(head[1])),
                record_id,
                int(head[3]),
                text,
                None,
                None,
                _parse_time("created_at", _utf8(tail[1])),
                _parse_time("updated_at", _utf8(tail[2])),
                where,
            )
    return _parse_object(_utf8(line), where, type, max_bytes)


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"not UTF-8: {exc.reason} at byte {exc.start}") from None


def _parse_object(line: str, where: Where, type: str | None, max_bytes: int) -> Item:
    obj = _loads(line)
    if not isinstance(obj, dict):
        raise InvalidInput(f"a line must be a JSON object, got {obj.__class__.__name__}")
    if "history" in obj:
        return _parse_policy(obj, type)
    if "replaced_at" in obj:
        return _parse_past(obj, where, type, max_bytes)
    return _parse_record(obj, where, type, max_bytes)


def _parse_record(obj: dict[str, Any], where: Where, type: str | None, max_bytes: int) -> ImportRow:
    unknown = obj.keys() - _FIELDS
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(sorted(unknown))}")
    record_type = check_type(type or obj.get("type"))
    record_id = check_id(obj.get("id"))
    _check_text("id", record_id)
    version = obj.get("version")
    if version is not None and not int_in_range(version, 1, 2**63 - 1):
        raise InvalidInput(f"version must be an int >= 1, got {version!r}")
    created_at, updated_at = _timestamp(obj, "created_at"), _timestamp(obj, "updated_at")
    if "payload" in obj:
        if "data" in obj:
            raise InvalidInput("a record has either data or payload, not both")
        encoded = obj["payload"]
        try:
            if not isinstance(encoded, str):
                raise ValueError
            raw = base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error):
            raise InvalidInput("payload must be base64 text") from None
        payload, manifest = check_binary(raw, obj.get("manifest"), max_bytes)
        _check_text("manifest", manifest)
        return ImportRow(
            record_type, record_id, version, None, payload, manifest, created_at, updated_at,
            where,
        )  # fmt: skip
    if "manifest" in obj:
        raise InvalidInput("manifest is only allowed with payload")
    if "data" not in obj:
        raise InvalidInput("a record needs data (or payload and manifest)")
    text = encode_data(obj["data"], max_bytes).encode()
    return ImportRow(
        record_type, record_id, version, text, None, None, created_at, updated_at, where
    )


def _parse_policy(obj: dict[str, Any], type: str | None) -> HistoryPolicy:
    setting = obj["history"]
    if len(obj) != 1 or not isinstance(setting, dict):
        raise InvalidInput('a history line is {"history": {"type": ..., "enabled": ...}}')
    unknown = setting.keys() - {"type", "enabled", "keep_versions", "keep_days"}
    if unknown:
        raise InvalidInput(f"unknown history field(s): {', '.join(sorted(unknown))}")
    enabled = setting.get("enabled")
    if not isinstance(enabled, bool):
        raise InvalidInput(f"history enabled must be true or false, got {enabled!r}")
    return HistoryPolicy(
        check_type(type or setting.get("type")),
        enabled,
        check_keep_versions(setting.get("keep_versions")),
        check_keep_days(setting.get("keep_days")),
    )


def _parse_past(obj: dict[str, Any], where: Where, type: str | None, max_bytes: int) -> PastVersion:
    deleted = obj.pop("deleted", None)
    if not isinstance(deleted, bool):
        raise InvalidInput(f"a past version's deleted must be true or false, got {deleted!r}")
    replaced_at = _parse_time("replaced_at", obj.pop("replaced_at"))
    expires_at = _timestamp(obj, "expires_at")
    obj.pop("expires_at", None)
    row = _parse_record(obj, where, type, max_bytes)
    if row.version is None or row.created_at is None or row.updated_at is None:
        raise InvalidInput("a past version needs its version, created_at and updated_at")
    data = None if row.text is None else json.loads(row.text)
    return PastVersion(
        row.type,
        row.id,
        data,
        row.version,
        row.created_at,
        row.updated_at,
        row.payload,
        row.manifest,
        expires_at,
        replaced_at=replaced_at,
        deleted=deleted,
    )


Item: TypeAlias = ImportRow | HistoryPolicy | PastVersion
"""A checked input line: a record, a type's history setting, or a past version."""


def file_id(name: str) -> str:
    """The record id a ``<id>.json`` file name gives; raise ``InvalidInput``."""
    record_id = check_id(name[: -len(".json")])
    _check_text("id (file name)", record_id)
    return record_id


def file_row(type: str, record_id: str, raw: bytes, max_bytes: int, where: Where) -> ImportRow:
    """A JSON file's contents as a record of ``type``; raise ``InvalidInput``."""
    _loads(_utf8(raw))
    _check_data_text(raw, max_bytes)
    return ImportRow(type, record_id, None, raw, None, None, None, None, where)
