"""Query commands: query, count, stats, and the ``index`` group."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from ..errors import InvalidQuery
from ..jsonl import record_json
from ..store import Store
from .app import EXIT_USAGE, Failed, JsonOption, handle_errors, with_store
from .render import err, out

__all__ = [
    "WhereOption",
    "count",
    "index_create",
    "index_drop",
    "index_ls",
    "parse_metric",
    "parse_where",
    "query",
    "stats",
]

TypeArgument = Annotated[str, typer.Argument(help="Record type.")]
WhereOption = Annotated[
    str | None,
    typer.Option(
        "--where", help='A JSON filter, e.g. \'{"score": {"$gt": 100}}\' (see the README).'
    ),
]


def parse_where(text: str | None) -> Any:
    """The ``--where`` filter as JSON (None when not given)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidQuery(f"--where is not valid JSON: {exc}") from None


def parse_metric(spec: str) -> tuple[str, str | tuple[str, str]]:
    """A ``--metric NAME=count`` or ``NAME=FUNCTION:PATH`` as ``(name, metric)``."""
    name, _, rest = spec.partition("=")
    function, _, path = rest.partition(":")
    if not name or not function:
        raise InvalidQuery(f"--metric {spec!r}: expected NAME=count or NAME=FUNCTION:PATH")
    return name, (function if not path else (function, path))


def query(
    ctx: typer.Context,
    type: TypeArgument,
    where: WhereOption = None,
    order_by: Annotated[
        list[str] | None,
        typer.Option("--order-by", help="Path to sort by, '-' for descending; repeatable."),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many records.")] = 100,
    after: Annotated[str | None, typer.Option(help="Continue after this cursor.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object: items and next cursor.")
    ] = False,
    as_table: Annotated[bool, typer.Option("--table", help="A table (the default).")] = False,
) -> None:
    """Records of a type matching a filter, in order, one page at a time."""
    if as_json and as_table:
        err.print("error: choose one of --json and --table", markup=False)
        raise typer.Exit(EXIT_USAGE)
    show_page(ctx, type, where, order_by, limit, after, as_json)


@with_store
async def show_page(
    store: Store,
    type: str,
    where: str | None,
    order_by: list[str] | None,
    limit: int,
    after: str | None,
    as_json: bool,
) -> None:
    """Print one page of a query, as JSON or as a table."""
    page = await store.query(type, parse_where(where), order_by=order_by, limit=limit, after=after)
    if as_json:
        items = [record_json(r) for r in page.items]
        print(json.dumps({"items": items, "next": page.next}, indent=2, ensure_ascii=False))
        return
    table = Table("id", "version", "updated", "data")
    for record in page.items:
        text = json.dumps(record.data, ensure_ascii=False)
        table.add_row(
            record.id,
            str(record.version),
            record.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
            text if len(text) <= 80 else text[:77] + "...",
        )
    out.print(table)
    if page.next:
        err.print(f"more: --after {page.next}", markup=False)


@with_store
async def count(store: Store, type: TypeArgument, where: WhereOption = None) -> None:
    """How many records of a type match a filter."""
    print(await store.count(type, parse_where(where)))


def stats(
    ctx: typer.Context,
    type: TypeArgument,
    group_by: Annotated[
        list[str] | None, typer.Option("--group-by", help="Path to group by; repeatable.")
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", help="NAME=count or NAME=FUNCTION:PATH (count/sum/avg/min/max)."),
    ] = None,
    where: WhereOption = None,
    as_json: JsonOption = False,
) -> None:
    """Counts and sum/avg/min/max per group (default metric: count)."""
    with handle_errors(ctx):
        metrics = dict(parse_metric(m) for m in metric) if metric else None
    show_stats(ctx, type, group_by, metrics, where, as_json)


@with_store
async def show_stats(
    store: Store,
    type: str,
    group_by: list[str] | None,
    metrics: dict[str, str | tuple[str, str]] | None,
    where: str | None,
    as_json: bool,
) -> None:
    """Print the aggregate rows, as JSON or as a table."""
    rows = await store.aggregate(type, parse_where(where), group_by=group_by, metrics=metrics)
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
        return
    columns = list(rows[0]) if rows else [*(group_by or []), *(metrics or {"count": ""})]
    table = Table(*columns)
    for row in rows:
        table.add_row(*(json.dumps(row[c], ensure_ascii=False, default=str) for c in columns))
    out.print(table)


@with_store
async def index_create(
    store: Store,
    type: TypeArgument,
    path: Annotated[str, typer.Argument(help="Data path, e.g. profile.level.")],
) -> None:
    """Index a path of one type, for equality, $in and number ranges."""
    name = await store.create_index(type, path)
    out.print(f"index {name} on {type} {path}", markup=False)


@with_store
async def index_drop(
    store: Store,
    type: TypeArgument,
    path: Annotated[str, typer.Argument(help="Data path.")],
) -> None:
    """Drop the index on a path (exit 1 if there was none)."""
    if not await store.drop_index(type, path):
        raise Failed(f"no index on {type} {path}")
    out.print(f"dropped the index on {type} {path}", markup=False)


@with_store
async def index_ls(store: Store, as_json: JsonOption = False) -> None:
    """Every path index: type, path and index name."""
    found = await store.indexes()
    if as_json:
        rows = [{"type": t, "path": p, "index": n} for t, p, n in found]
        print(json.dumps(rows, indent=2))
        return
    table = Table("type", "path", "index")
    for row in found:
        table.add_row(*row)
    out.print(table)
