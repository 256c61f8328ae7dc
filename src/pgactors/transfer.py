"""Import and export: the JSONL format, directories of JSON files, validation, batching.

A JSONL line is one record::

    {"type": "T", "id": "x", "version": 3, "data": {...},
     "created_at": "2026-11-21T07:30:55.1234+00:00", "updated_at": "..."}

A binary record has ``"payload"`` (base64) and ``"manifest"`` instead of ``"data"``.
``version`` and the timestamps are optional on import: a record without them is
written like ``save`` (version 1, or the stored version + 1 when overwriting; now).

This module reads input and checks it with ``save``'s rules, and counts the outcomes;
a backend's :class:`Importer` writes checked :class:`ImportRow` chunks, one transaction
per import. A line in the export's own layout keeps its data text as it is: the
backend's JSON parser (PostgreSQL's) checks that, and refused rows are reported where
they came from, like any other bad input.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import itertools
import json
import re
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, TypeAlias

from .checks import int_in_range
from .errors import ImportAborted, InvalidInput
from .history import HistoryPolicy, PastVersion, check_keep_days, check_keep_versions
from .record import ESCAPED_NUL, Record, check_binary, check_id, check_type, encode_data

OnConflict: TypeAlias = Literal["skip", "overwrite", "fail"]
ON_CONFLICT: tuple[OnConflict, ...] = ("skip", "overwrite", "fail")

# Rows per write: large enough that per-statement costs vanish, small enough that memory
# stays flat, and that the change log's trigger keeps a statement's new rows within
# work_mem (4 MB by default): spilled to disk, they cost a third of the throughput.
CHUNK_ROWS = 2000
CHUNK_BYTES = 2 * 1024 * 1024
EXPORT_CHUNK = 2000
# Keep at most this many error messages; the count of failures is always exact.
MAX_REPORTED_ERRORS = 1000

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


@dataclass(slots=True)
class ImportOutcome:
    """What a backend did with one chunk; ``rejected`` rows were refused by the database."""

    imported: int = 0
    overwritten: int = 0
    skipped: int = 0
    rejected: list[tuple[ImportRow, str]] = field(default_factory=list)

    def __add__(self, other: ImportOutcome) -> ImportOutcome:
        return ImportOutcome(
            self.imported + other.imported,
            self.overwritten + other.overwritten,
            self.skipped + other.skipped,
            self.rejected + other.rejected,
        )


class Importer(Protocol):
    """A backend's writer for one import; the whole import is one transaction."""

    async def write(self, rows: list[ImportRow]) -> ImportOutcome:
        """Write distinct-keyed rows; raise :class:`ImportAborted` on a conflict in fail mode."""
        ...

    async def history(self, policies: list[HistoryPolicy], rows: list[PastVersion]) -> None:
        """Set these history settings and append these past versions (after those kept)."""
        ...


@dataclass(frozen=True, slots=True)
class ImportIssue:
    """A record that was not imported: where it was and why."""

    where: Where
    reason: str

    def __str__(self) -> str:
        place = f"line {self.where}" if isinstance(self.where, int) else self.where
        return f"{place}: {self.reason}"


@dataclass
class ImportResult:
    """Counts of an import: new records, replaced ones, kept ones, and failed inputs.

    ``errors`` lists the first failures (at most ``MAX_REPORTED_ERRORS``).
    """

    imported: int = 0
    overwritten: int = 0
    skipped: int = 0
    failed: int = 0
    errors: list[ImportIssue] = field(default_factory=list)
    # Past versions appended to the history (lines of ``export --history``).
    history: int = 0

    @property
    def processed(self) -> int:
        """Every record read, whatever its outcome."""
        return self.imported + self.overwritten + self.skipped + self.failed

    def as_dict(self) -> dict[str, Any]:
        """The counts and error messages, for JSON output."""
        return {
            "imported": self.imported,
            "overwritten": self.overwritten,
            "skipped": self.skipped,
            "failed": self.failed,
            "history": self.history,
            "errors": [str(e) for e in self.errors],
        }

    def _fail(self, issue: ImportIssue, strict: bool) -> None:
        self.failed += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(issue)
        if strict:
            message = f"import aborted, nothing was written: {issue}"
            raise ImportAborted(message, errors=[str(issue)])


# -- export -----------------------------------------------------------------------------


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
Parsed: TypeAlias = Item | ImportIssue
# Input is read and checked this many items at a time (about half a millisecond), then
# the event loop runs: it keeps streaming the previous chunk to the server, which would
# otherwise sit idle once it has drained the socket's buffer (10-20% faster here).
_READ_BATCH = 100
_IN_FLIGHT = 2


def jsonl_rows(lines: Iterable[str | bytes], type: str | None, max_bytes: int) -> Iterator[Parsed]:
    """Each non-blank line, numbered from 1, as a row or the reason it is refused."""
    if type is not None:
        check_type(type)
    for number, line in enumerate(lines, 1):
        try:
            raw = line.encode() if isinstance(line, str) else line
            if not raw or raw.isspace():
                continue
            yield parse_line(raw, number, type, max_bytes)
        except UnicodeEncodeError:
            yield ImportIssue(number, "not valid Unicode (a lone surrogate)")
        except InvalidInput as exc:
            yield ImportIssue(number, str(exc))


async def jsonl_rows_async(
    lines: AsyncIterable[str | bytes], type: str | None, max_bytes: int
) -> AsyncIterator[list[Parsed]]:
    """:func:`jsonl_rows` of an async source (e.g. another store's ``export_lines``)."""
    batch: list[str | bytes] = []
    number = 0
    async for line in lines:
        batch.append(line)
        if len(batch) >= _READ_BATCH:
            yield _renumbered(jsonl_rows(batch, type, max_bytes), number)
            number += len(batch)
            batch = []
    yield _renumbered(jsonl_rows(batch, type, max_bytes), number)


def _renumbered(items: Iterator[Parsed], offset: int) -> list[Parsed]:
    if not offset:
        return list(items)
    return [_shifted(item, offset) for item in items]


def _shifted(item: Parsed, offset: int) -> Parsed:
    """``item`` with its line number moved on by ``offset`` (history lines have none)."""
    if isinstance(item, ImportIssue) and isinstance(item.where, int):
        return ImportIssue(item.where + offset, item.reason)
    if isinstance(item, ImportRow) and isinstance(item.where, int):
        return item._replace(where=item.where + offset)
    return item


async def in_batches(items: Iterator[Parsed]) -> AsyncIterator[list[Parsed]]:
    """Read and check ``items`` a batch at a time, letting other tasks run in between.

    In this thread: a worker thread overlapped no better with the database, and its GIL
    hand-overs cost a quarter more CPU (measured).
    """
    while batch := list(itertools.islice(items, _READ_BATCH)):
        yield batch
        await asyncio.sleep(0)


async def in_thread(items: Iterator[Parsed]) -> AsyncIterator[list[Parsed]]:
    """Read and check ``items`` in a worker thread, a batch at a time (files to open)."""
    while batch := await asyncio.to_thread(lambda: list(itertools.islice(items, _READ_BATCH))):
        yield batch


def json_files(directory: Path) -> list[Path]:
    """The ``*.json`` files of a directory, in name order."""
    return sorted(p for p in directory.glob("*.json") if p.is_file())


def directory_rows(directory: Path, type: str, max_bytes: int) -> Iterator[Parsed]:
    """Each ``<id>.json`` file of a directory as a record of ``type`` with that data."""
    check_type(type)
    if not directory.is_dir():
        raise InvalidInput(f"{directory} is not a directory")
    for path in json_files(directory):
        try:
            record_id = check_id(path.name[: -len(".json")])
            _check_text("id (file name)", record_id)
            try:
                raw = path.read_bytes()
            except OSError as exc:
                raise InvalidInput(f"cannot read: {exc.strerror}") from None
            _loads(_utf8(raw))
            _check_data_text(raw, max_bytes)
            yield ImportRow(type, record_id, None, raw, None, None, None, None, path.name)
        except InvalidInput as exc:
            yield ImportIssue(path.name, str(exc))


# -- writing -----------------------------------------------------------------------------------


class _HistoryLines:
    """The history lines of an import, written a chunk at a time after the records
    read before them (``drain`` waits for those)."""

    def __init__(
        self, importer: Importer, result: ImportResult, drain: Callable[[], Awaitable[None]]
    ) -> None:
        self._importer = importer
        self._result = result
        self._drain = drain
        self._policies: list[HistoryPolicy] = []
        self._rows: list[PastVersion] = []

    async def add(self, item: HistoryPolicy | PastVersion) -> None:
        if isinstance(item, HistoryPolicy):
            self._policies.append(item)
        else:
            self._rows.append(item)
        if len(self._rows) >= CHUNK_ROWS:
            await self.flush()

    async def flush(self) -> None:
        if not (self._policies or self._rows):
            return
        await self._drain()
        await self._importer.history(self._policies, self._rows)
        self._result.history += len(self._rows)
        self._policies, self._rows = [], []


async def run_import(
    importer: Importer,
    batches: AsyncIterator[list[Parsed]],
    on_conflict: OnConflict,
    *,
    strict: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Write the rows in chunks and count the outcomes.

    A key repeated in the input is applied in order: later copies are skipped (skip),
    overwrite the earlier one (overwrite), or abort the import (fail).
    """
    result = ImportResult()
    chunk: dict[tuple[str, str], ImportRow] = {}
    size = 0
    writing: collections.deque[asyncio.Task[ImportOutcome]] = collections.deque()

    async def collect(keep: int) -> None:
        while len(writing) > keep:
            outcome = await writing.popleft()
            result.imported += outcome.imported
            result.overwritten += outcome.overwritten
            result.skipped += outcome.skipped
            for row, reason in outcome.rejected:
                result._fail(ImportIssue(row.where, reason), strict)
            if progress is not None:
                progress(result.processed)

    history = _HistoryLines(importer, result, lambda: collect(0))

    async def flush() -> None:
        nonlocal chunk, size
        # One chunk is written while the next is prepared, and the next read.
        await collect(_IN_FLIGHT - 1)
        if chunk:
            writing.append(asyncio.create_task(importer.write(list(chunk.values()))))
            chunk, size = {}, 0

    try:
        async for batch in batches:
            for item in batch:
                if isinstance(item, ImportIssue):
                    result._fail(item, strict)
                    continue
                if not isinstance(item, ImportRow):
                    await history.add(item)
                    continue
                key = (item.type, item.id)
                if key in chunk:
                    if on_conflict == "fail":
                        raise ImportAborted(
                            f"import aborted, nothing was written: {item.type}/{item.id!r} "
                            f"appears twice ({ImportIssue(item.where, 'repeated')})",
                            conflicts=[key],
                        )
                    if on_conflict == "skip":
                        result.skipped += 1
                        continue
                    result.overwritten += 1
                chunk[key] = item
                size += len(item.text or b"") + len(item.payload or b"")
                if len(chunk) >= CHUNK_ROWS or size >= CHUNK_BYTES:
                    await flush()
        await flush()
        await collect(0)
        await history.flush()
    finally:
        for task in writing:
            task.cancel()
        for task in writing:
            with contextlib.suppress(BaseException):
                await task
    return result


def conflict_error(keys: list[tuple[str, str]]) -> ImportAborted:
    """The error of ``on_conflict="fail"`` naming (the first few of) the existing records."""
    listed = ", ".join(f"{t}/{i!r}" for t, i in keys[:10])
    return ImportAborted(
        f"import aborted, nothing was written: these records already exist "
        f"(on_conflict=fail): {listed}",
        conflicts=keys[:10],
    )


def check_on_conflict(on_conflict: object) -> OnConflict:
    """Return ``on_conflict`` if it is skip, overwrite or fail; else raise InvalidInput."""
    for mode in ON_CONFLICT:
        if on_conflict == mode:
            return mode
    raise InvalidInput(f"on_conflict must be one of {', '.join(ON_CONFLICT)}, got {on_conflict!r}")


__all__ = [
    "ON_CONFLICT",
    "ImportIssue",
    "ImportOutcome",
    "ImportResult",
    "ImportRow",
    "Importer",
    "OnConflict",
    "check_on_conflict",
    "conflict_error",
    "directory_rows",
    "in_batches",
    "in_thread",
    "json_error",
    "json_files",
    "jsonl_rows",
    "jsonl_rows_async",
    "parse_line",
    "record_line",
    "run_import",
]
