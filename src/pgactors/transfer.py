"""Import: reading input a batch at a time, checking it, and counting the outcomes.

Lines are parsed by ``jsonl`` (the format, with ``save``'s rules); a directory of
``<id>.json`` files is read here. A backend's :class:`Importer` writes checked
:class:`ImportRow` chunks, one transaction per import. A line in the export's own
layout keeps its data text as it is: the backend's JSON parser (PostgreSQL's) checks
that, and refused rows are reported where they came from, like any other bad input.
A record without ``version`` or timestamps is written like ``save`` (version 1, or the
stored version + 1 when overwriting; now).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeAlias

from .errors import ImportAborted, InvalidInput
from .history import HistoryPolicy, PastVersion
from .jsonl import ImportRow, Item, Where, file_id, file_row, parse_line
from .record import check_type

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


Parsed: TypeAlias = Item | ImportIssue
# Input is read and checked this many items at a time (about a quarter of a millisecond),
# then the event loop runs: it keeps streaming the previous chunk to the server, which
# would otherwise sit idle once it has drained the socket's buffer. A 2 MB chunk fills
# that buffer a dozen times. 25 imported 8-14% faster than 100 here.
_READ_BATCH = 25
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
            record_id = file_id(path.name)
            try:
                raw = path.read_bytes()
            except OSError as exc:
                raise InvalidInput(f"cannot read: {exc.strerror}") from None
            yield file_row(type, record_id, raw, max_bytes, path.name)
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
    "json_files",
    "jsonl_rows",
    "jsonl_rows_async",
    "run_import",
]
