"""Record commands: get, put, delete, ls, types."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from ..jsonl import record_json
from ..record import JSON
from ..store import Store
from .app import EXIT_USAGE, Failed, JsonOption, with_store
from .render import err, out, types_table

__all__ = ["delete", "get", "list_ids", "put", "types"]

TypeArgument = Annotated[str, typer.Argument(help="Record type.")]
IdArgument = Annotated[str, typer.Argument(help="Record id.")]


@with_store
async def get(
    store: Store,
    type: TypeArgument,
    id: IdArgument,
    meta: Annotated[bool, typer.Option("--meta", help="Include version and timestamps.")] = False,
    version: Annotated[
        int | None,
        typer.Option(help="That version, current or kept in the history (see `history`)."),
    ] = None,
) -> None:
    """Print a record's data as pretty JSON (exit 1 if missing)."""
    record = await store.load(type, id, version=version)
    if record is None:
        kept = "" if version is None else f" version {version}"
        raise Failed(f"not found: {type}/{id}{kept}")
    shown: Any = record.data
    if meta:
        expires = record.expires_at
        shown = {**record_json(record), "expires_at": expires and expires.isoformat()}
    print(json.dumps(shown, indent=2, ensure_ascii=False))


def put(
    ctx: typer.Context,
    type: TypeArgument,
    id: IdArgument,
    data: Annotated[str, typer.Argument(help="JSON value, or - to read stdin.")] = "-",
    expected_version: Annotated[
        int | None,
        typer.Option(help="Compare-and-set: 0 creates only, N replaces only version N."),
    ] = None,
    ttl: Annotated[
        float | None, typer.Option(help="Expire the record this many seconds from now.")
    ] = None,
) -> None:
    """Save a record from JSON text (argument or stdin)."""
    text = sys.stdin.read() if data == "-" else data
    try:
        value = json.loads(text)
    except ValueError as exc:
        err.print(f"error: the data is not valid JSON: {exc}", markup=False)
        raise typer.Exit(EXIT_USAGE) from None
    save(ctx, type, id, value, expected_version, ttl)


@with_store
async def save(
    store: Store, type: str, id: str, value: JSON, expected_version: int | None, ttl: float | None
) -> None:
    """Save one record and say its new version."""
    record = await store.save(type, id, value, expected_version=expected_version, ttl=ttl)
    out.print(f"saved {record.type}/{record.id} version {record.version}", markup=False)


@with_store
async def delete(
    store: Store,
    type: TypeArgument,
    id: IdArgument,
    expected_version: Annotated[
        int | None, typer.Option(help="Delete only if the stored version is N.")
    ] = None,
) -> None:
    """Delete a record (exit 1 if it did not exist)."""
    deleted = await store.delete(type, id, expected_version=expected_version)
    if not deleted:
        raise Failed(f"not found: {type}/{id}")
    out.print(f"deleted {type}/{id}", markup=False)


@with_store
async def list_ids(
    store: Store,
    type: TypeArgument,
    prefix: Annotated[str | None, typer.Option(help="Only ids starting with this.")] = None,
    after: Annotated[str | None, typer.Option(help="Only ids after this one (paging).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many ids.")] = 1000,
) -> None:
    """List the ids of a type, one per line, in code-point order."""
    for record_id in await store.list_ids(type, prefix=prefix, after=after, limit=limit):
        print(record_id)


@with_store
async def types(
    store: Store,
    as_json: JsonOption = False,
) -> None:
    """Every type with its record count."""
    counts = await store.types()
    if as_json:
        print(json.dumps(counts, indent=2))
    elif counts:
        out.print(types_table(counts))
    else:
        err.print("no records")
