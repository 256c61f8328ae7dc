"""Moving records in and out: export, import, and the live ``watch`` of changes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from ..errors import ImportAborted
from ..store import Store
from ..transfer import ImportResult, OnConflict, json_files
from .app import EXIT_FAILED, EXIT_USAGE, Failed, handle_errors, with_store
from .query import WhereOption, parse_where
from .render import err

__all__ = [
    "OnConflictMode",
    "export",
    "import_",
    "import_dir",
    "import_jsonl",
    "run_export",
    "watch",
]


class OnConflictMode(StrEnum):
    """``--on-conflict`` choices."""

    skip = "skip"
    overwrite = "overwrite"
    fail = "fail"


@with_store
async def watch(
    store: Store,
    types: Annotated[list[str] | None, typer.Argument(help="Only these types.")] = None,
    since: Annotated[
        int | None, typer.Option(help="Resume after this position (0: oldest retained).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Stream changes live until interrupted: time, op, type, id, version (and position)."""
    async with store.changes(types or None, since=since) as stream:
        err.print(f"watching {store.config.channel} (Ctrl-C to stop)")
        async for change in stream:
            if as_json:
                record = {
                    "at": change.at.isoformat(),
                    "op": change.op,
                    "type": change.type,
                    "id": change.id,
                    "version": change.version,
                    "position": change.position,
                }
                print(json.dumps(record, ensure_ascii=False), flush=True)
            else:
                print(
                    f"{change.at.isoformat(timespec='milliseconds')} {change.op:<6} "
                    f"{change.type} {change.id} v{change.version} @{change.position}",
                    flush=True,
                )


def export(
    ctx: typer.Context,
    types: Annotated[
        list[str] | None, typer.Option("--type", "-t", help="Only this type (repeatable).")
    ] = None,
    where: WhereOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    history: Annotated[
        bool,
        typer.Option(
            "--history",
            help="Then the version history of the types: settings and past versions "
            "(`import` restores them; not with --where).",
        ),
    ] = False,
) -> None:
    """Write every record (of the types, matching --where) as JSONL, one object per line,
    in (type, id) order."""
    if history and where is not None:
        err.print("error: --history exports whole types: it cannot be combined with --where")
        raise typer.Exit(EXIT_USAGE)
    if output is None:
        try:
            with open(sys.stdout.fileno(), "wb", closefd=False) as stream:
                export_to(ctx, stream, types, where, history)
        except BrokenPipeError:
            # The reader went away (`pgactors export | head`): stop quietly, as Unix tools do.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(EXIT_FAILED) from None
        return
    # Written aside and renamed at the end, so a failed export leaves no partial file.
    partial = output.with_name(output.name + ".partial")
    try:
        with open(partial, "wb") as stream:
            export_to(ctx, stream, types, where, history)
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)


def export_to(
    ctx: typer.Context,
    stream: BinaryIO,
    types: list[str] | None,
    where: str | None,
    history: bool = False,
) -> None:
    """Export to ``stream``; a bad ``--where`` is reported before connecting."""
    with handle_errors(ctx):
        condition = parse_where(where)
    write_export(ctx, stream, types, condition, history)


@with_store
async def write_export(
    store: Store, stream: BinaryIO, types: list[str] | None, condition: Any, history: bool
) -> None:
    """Export the records to ``stream`` and say how many were written."""
    total = None
    if err.is_terminal:
        if condition is None:
            counts = await store.types()
            total = sum(n for t, n in counts.items() if not types or t in types)
        elif types:
            total = sum([await store.count(t, condition) for t in types])
    exported = await run_export(store, types or None, stream, total, condition, history)
    what = "lines (records, then history)" if history else "records"
    err.print(f"exported {exported} {what}", markup=False)


def import_(
    ctx: typer.Context,
    source: Annotated[
        Path, typer.Argument(help="A JSONL file (- for stdin), or a directory of <id>.json files.")
    ],
    type: Annotated[
        str | None,
        typer.Option("--type", "-t", help="Record type: overrides the lines'; needed for a dir."),
    ] = None,
    on_conflict: Annotated[
        OnConflictMode, typer.Option(help="When the record exists: keep it, replace it, or abort.")
    ] = OnConflictMode.skip,
    strict: Annotated[
        bool, typer.Option("--strict", help="Abort on the first bad record; write nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Import a JSONL export, or a directory of JSON files (one record per file).

    One transaction. Bad lines are reported with their number and skipped (exit 1);
    with --strict, or an existing record with --on-conflict fail, nothing is written.
    """
    stdin = str(source) == "-"
    is_dir = not stdin and source.is_dir()
    if is_dir and type is None:
        err.print("error: importing a directory needs --type (the type of every file)")
        raise typer.Exit(EXIT_USAGE)
    if not is_dir and not stdin and not source.is_file():
        err.print(f"error: {source} is not a file or directory", markup=False)
        raise typer.Exit(EXIT_USAGE)
    size = None if stdin or is_dir else source.stat().st_size
    with (
        contextlib.nullcontext(None)
        if is_dir
        else open(sys.stdin.fileno(), "rb", closefd=False)
        if stdin
        else open(source, "rb")
    ) as stream:
        result = import_from(ctx, source, stream, size, type, on_conflict.value, strict)
    print_import_result(result, as_json)


@with_store
async def import_from(
    store: Store,
    source: Path,
    stream: BinaryIO | None,
    size: int | None,
    type: str | None,
    on_conflict: OnConflict,
    strict: bool,
) -> ImportResult:
    """Import from ``stream``, or from the directory ``source`` when there is no stream."""
    try:
        if stream is None:
            assert type is not None
            return await import_dir(store, source, type, on_conflict, strict)
        return await import_jsonl(store, stream, size, type, on_conflict, strict)
    except ImportAborted as exc:
        raise Failed(f"error: {exc}") from None


def print_import_result(result: ImportResult, as_json: bool) -> None:
    """Report the bad records and the counts; exit 1 if any record failed."""
    for issue in result.errors:
        err.print(str(issue), markup=False)
    if result.failed > len(result.errors):
        err.print(f"... and {result.failed - len(result.errors)} more", markup=False)
    if as_json:
        print(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))
    err.print(
        f"imported {result.imported}, overwritten {result.overwritten}, "
        f"skipped {result.skipped}, failed {result.failed}"
        + (f", past versions {result.history}" if result.history else ""),
        markup=False,
    )
    if result.failed:
        raise typer.Exit(EXIT_FAILED)


def progress_bar(total: float | None, unit: str) -> Progress | None:
    """A progress bar on stderr when it is a terminal, else None."""
    if not err.is_terminal:
        return None
    columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn()]
    columns += [TextColumn("{task.fields[done]} records"), TimeRemainingColumn()]
    progress = Progress(*columns, console=err, transient=True)
    progress.add_task(unit, total=total, done=0)
    return progress


async def run_export(
    store: Store,
    types: list[str] | None,
    stream: BinaryIO,
    total: int | None,
    where: Any = None,
    history: bool = False,
) -> int:
    """Write the export to ``stream``; return how many records were written."""
    bar = progress_bar(total, "export")
    count = 0
    loop = asyncio.get_running_loop()
    # Each block is written by a worker thread while the next one is fetched: a file
    # write blocks (a third of the time on a disk), and the event loop must not.
    writing: asyncio.Future[int] | None = None
    with bar or contextlib.nullcontext():
        try:
            async for block in store.export_jsonl(types, where=where, history=history):
                if writing is not None:
                    await writing
                writing = loop.run_in_executor(None, stream.write, block)
                count += block.count(b"\n")
                if bar is not None:
                    bar.update(bar.task_ids[0], completed=count, done=count)
        finally:
            if writing is not None:
                await writing
    return count


async def import_dir(
    store: Store, source: Path, type: str, on_conflict: OnConflict, strict: bool
) -> ImportResult:
    """Import a directory of ``<id>.json`` files, with a progress bar on a terminal."""
    files = len(await asyncio.to_thread(json_files, source))
    bar = progress_bar(files, "import")

    def on_files(done: int) -> None:
        if bar is not None:
            bar.update(bar.task_ids[0], completed=done, done=done)

    with bar or contextlib.nullcontext():
        return await store.import_dir(
            source, type=type, on_conflict=on_conflict, strict=strict, progress=on_files
        )


async def import_jsonl(
    store: Store,
    stream: BinaryIO,
    size: int | None,
    type: str | None,
    on_conflict: OnConflict,
    strict: bool,
) -> ImportResult:
    """Import JSONL from an open file of ``size`` bytes, with a progress bar on a terminal."""
    bar = progress_bar(size, "import")
    read = 0

    def lines() -> Iterator[bytes]:
        nonlocal read
        for line in stream:
            read += len(line)
            yield line

    def on_lines(done: int) -> None:
        if bar is not None:
            bar.update(bar.task_ids[0], completed=read, done=done)

    with bar or contextlib.nullcontext():
        return await store.import_jsonl(
            lines(), type=type, on_conflict=on_conflict, strict=strict, progress=on_lines
        )
