"""``Store``'s bulk methods: export and import (see ``pgactors.transfer``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import Any

from ..errors import InvalidInput
from ..history import HistoryPolicy
from ..jsonl import past_line, policy_line
from ..query import (
    Node,
    parse_filter,
)
from ..record import (
    Record,
    check_type,
)
from ..transfer import (
    EXPORT_CHUNK,
    ImportResult,
    OnConflict,
    Parsed,
    check_on_conflict,
    directory_rows,
    in_batches,
    in_thread,
    jsonl_rows,
    jsonl_rows_async,
    run_import,
)
from .base import StoreBase, types_list


class TransferMethods(StoreBase):
    """Streaming export, and imports in one transaction."""

    # -- import and export ---------------------------------------------------------------------

    def export(
        self, types: Sequence[str] | str | None = None, *, where: Mapping[str, Any] | None = None
    ) -> AsyncIterator[Record]:
        """Every record (of ``types``, matching the query filter ``where``) in (type, id)
        order, streamed from one snapshot. Memory stays flat whatever the table size."""
        selected, node = self._export_args(types, where)
        return self._export_records(selected, node)

    async def _export_records(
        self, types: list[str] | None, where: Node | None
    ) -> AsyncIterator[Record]:
        async for chunk in self._backend.transfer.export_records(types, EXPORT_CHUNK, where):
            for record in chunk:
                yield record

    def export_lines(
        self,
        types: Sequence[str] | str | None = None,
        *,
        where: Mapping[str, Any] | None = None,
        history: bool = False,
    ) -> AsyncIterator[str]:
        """The records of :meth:`export` as JSONL lines (no newline): the fast path.

        ``{"type", "id", "version", "data", "created_at", "updated_at"}``, with
        ``"payload"`` (base64) and ``"manifest"`` instead of ``"data"`` for binary states.
        ``history``: then the history of those types (not with ``where``), read after
        the records: a ``{"history": {...}}`` line per type's setting, then each kept
        past version, oldest first, with ``expires_at``, ``replaced_at`` and ``deleted``.
        """
        selected, node = self._export_args(types, where, history)
        return self._export_lines(selected, node, history)

    async def _export_lines(
        self, types: list[str] | None, where: Node | None, history: bool
    ) -> AsyncIterator[str]:
        async for block in self._backend.transfer.export_jsonl(types, EXPORT_CHUNK, where):
            # JSON text never holds a raw newline, so lines split on it alone.
            for line in block.decode().split("\n")[:-1]:
                yield line
        if history:
            async for line in self._history_lines(types):
                yield line

    def export_jsonl(
        self,
        types: Sequence[str] | str | None = None,
        *,
        where: Mapping[str, Any] | None = None,
        history: bool = False,
    ) -> AsyncIterator[bytes]:
        """The lines of :meth:`export_lines` as UTF-8 blocks of many, each line ending in
        a newline: the fastest way to write an export to a (binary) file."""
        selected, node = self._export_args(types, where, history)
        blocks = self._backend.transfer.export_jsonl(selected, EXPORT_CHUNK, node)
        return self._with_history(blocks, selected) if history else blocks

    async def _with_history(
        self, blocks: AsyncIterator[bytes], types: list[str] | None
    ) -> AsyncIterator[bytes]:
        async for block in blocks:
            yield block
        lines: list[str] = []
        async for line in self._history_lines(types):
            lines.append(line)
            if len(lines) >= EXPORT_CHUNK:
                yield ("\n".join(lines) + "\n").encode()
                lines = []
        if lines:
            yield ("\n".join(lines) + "\n").encode()

    async def _history_lines(self, types: list[str] | None) -> AsyncIterator[str]:
        """The history settings of ``types``, then their past versions, as JSONL lines."""
        for info in await self._backend.history.info():
            if types is None or info.type in types:
                limits = (info.keep_versions, info.keep_days)
                yield policy_line(HistoryPolicy(info.type, info.enabled, *limits))
        async for chunk in self._backend.history.export(types, EXPORT_CHUNK):
            for past in chunk:
                yield past_line(past)

    def _export_args(
        self,
        types: Sequence[str] | str | None,
        where: Mapping[str, Any] | None,
        history: bool = False,
    ) -> tuple[list[str] | None, Node | None]:
        if history and where is not None:
            raise InvalidInput(
                "history=True exports the history of whole types: it cannot be combined "
                "with where (export the records with where, and the history apart)"
            )
        node = None if where is None else parse_filter(where)
        selected = types_list(types)
        return (None if selected is None else [check_type(t) for t in selected]), node

    async def import_jsonl(
        self,
        lines: Iterable[str | bytes] | AsyncIterable[str | bytes],
        *,
        type: str | None = None,
        on_conflict: OnConflict = "skip",
        strict: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> ImportResult:
        """Import JSONL lines (an open file, a list, ``export_lines()`` of another store).

        One transaction. The history lines of ``export_lines(history=True)`` restore
        each type's history setting, and append its past versions after those kept
        (``ImportResult.history`` counts them). ``type`` overrides each line's type. An
        existing record is kept (``"skip"``), replaced by the line's record with its
        version and timestamps (``"overwrite"``), or aborts the import (``"fail"``,
        raising ``ImportAborted``). A refused line is counted and reported with its
        number, and the rest imported; with ``strict`` it aborts the import and nothing
        is written. ``progress`` is called with the number of lines read so far after
        every chunk.
        """
        mode = check_on_conflict(on_conflict)
        if type is not None:
            check_type(type)
        if isinstance(lines, AsyncIterable):
            batches = jsonl_rows_async(lines, type, self._max_bytes)
        else:
            batches = in_batches(jsonl_rows(lines, type, self._max_bytes))
        return await self._import(batches, mode, strict, progress)

    async def import_dir(
        self,
        directory: str | os.PathLike[str],
        *,
        type: str,
        on_conflict: OnConflict = "skip",
        strict: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> ImportResult:
        """Import every ``<id>.json`` file of a directory as the data of record ``type/<id>``.

        Same rules as :meth:`import_jsonl`; errors name the file. New records get version
        1, overwritten ones the stored version + 1.
        """
        mode = check_on_conflict(on_conflict)
        path = Path(directory)
        if not await asyncio.to_thread(path.is_dir):
            raise InvalidInput(f"{path} is not a directory")
        rows = directory_rows(path, check_type(type), self._max_bytes)
        return await self._import(in_thread(rows), mode, strict, progress)

    async def _import(
        self,
        batches: AsyncIterator[list[Parsed]],
        on_conflict: OnConflict,
        strict: bool,
        progress: Callable[[int], None] | None,
    ) -> ImportResult:
        try:
            async with self._backend.transfer.importer(on_conflict) as importer:
                return await run_import(
                    importer, batches, on_conflict, strict=strict, progress=progress
                )
        finally:
            self._cache_clear()  # imported records are read afresh, at once
