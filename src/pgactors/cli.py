"""The ``pgactors`` admin command line.

Exit codes: 0 ok, 1 a check failed or a record was not found (or conflicted),
2 usage, configuration or connection error. Errors print one line; ``--debug``
adds the traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, BinaryIO, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .config import StoreConfig
from .embedded import EmbeddedServer
from .errors import (
    ConfigError,
    ImportAborted,
    InvalidInput,
    InvalidQuery,
    NotFound,
    PgActorsError,
    VersionConflict,
)
from .record import Record
from .stats import ServerStats
from .store import Store
from .target import resolve_target
from .transfer import ImportResult, OnConflict, json_files

T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

app = typer.Typer(
    name="pgactors",
    help="Durable state for Python actors and objects, in PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
server_app = typer.Typer(help="Manage the embedded PostgreSQL server.", no_args_is_help=True)
app.add_typer(server_app, name="server")


class Failed(Exception):
    """A check failed or a record was missing: print the message, exit 1."""


@dataclass
class Options:
    """The global options, shared by every command."""

    dsn: str | None
    config_file: Path | None
    schema: str | None
    table_prefix: str | None
    data_dir: Path | None
    debug: bool

    def server(self) -> EmbeddedServer:
        return EmbeddedServer(self.data_dir)

    def config(self) -> StoreConfig:
        """The configuration from file/environment/options; embedded server if none."""
        base = (
            StoreConfig.from_file(self.config_file) if self.config_file else StoreConfig.from_env()
        )
        config = base.replace(dsn=self.dsn, schema=self.schema, table_prefix=self.table_prefix)
        return resolve_target(config, self.data_dir, on_embedded=_print_embedded)


def _print_embedded(server: EmbeddedServer, started: bool) -> None:
    """Say which embedded server the command uses, and what starting it changed."""
    _print_system_changes(server)
    verb = "started" if started else "using"
    err.print(
        f"[dim]{verb} the embedded PostgreSQL server in {server.data_dir}"
        + (" (stop it with `pgactors server stop`)" if started else "")
        + "[/dim]"
    )


def _print_system_changes(server: EmbeddedServer) -> None:
    """Say what starting the server changed outside its data directory (as root)."""
    for change in server.system_changes:
        err.print(f"[yellow]changed outside the data directory: {escape(change)}[/yellow]")


def _options(ctx: typer.Context) -> Options:
    obj = ctx.find_root().obj
    assert isinstance(obj, Options)
    return obj


def _run(ctx: typer.Context, action: Callable[[Options], Coroutine[Any, Any, T]]) -> T:
    """Run an async action with the CLI's error handling."""
    options = _options(ctx)
    try:
        return asyncio.run(action(options))
    except Failed as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(EXIT_FAILED) from None
    except (NotFound, VersionConflict) as exc:
        _fail(options, exc, EXIT_FAILED)
    except PgActorsError as exc:
        _fail(options, exc, EXIT_USAGE)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _fail(options: Options, exc: BaseException, code: int) -> NoReturn:
    if options.debug:
        traceback.print_exception(exc, file=sys.stderr)
    err.print(f"error: {exc}", markup=False)
    raise typer.Exit(code)


async def _open(options: Options) -> Store:
    config = await asyncio.to_thread(options.config)
    return await Store.connect(config)


@app.callback()
def main_options(
    ctx: typer.Context,
    dsn: Annotated[
        str | None,
        typer.Option(envvar="PGACTORS_DSN", show_envvar=True, help="PostgreSQL DSN."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", envvar="PGACTORS_CONFIG", show_envvar=True, help="YAML or TOML file."
        ),
    ] = None,
    schema: Annotated[
        str | None,
        typer.Option(envvar="PGACTORS_SCHEMA", show_envvar=True, help="Database schema."),
    ] = None,
    table_prefix: Annotated[
        str | None,
        typer.Option(envvar="PGACTORS_TABLE_PREFIX", show_envvar=True, help="Table prefix."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="PGACTORS_DATA_DIR",
            show_envvar=True,
            help="Embedded server data directory (default ./.pgactors).",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """With no database configured, commands use the embedded server in the data dir."""
    ctx.obj = Options(dsn, config, schema, table_prefix, data_dir, debug)


# -- schema ---------------------------------------------------------------------------------


@app.command()
def init(
    ctx: typer.Context,
    partitions: Annotated[
        int | None,
        typer.Option(
            help="Create the state table hash-partitioned by id into N tables "
            "(new tables only; 0: not partitioned)."
        ),
    ] = None,
) -> None:
    """Create the schema (or migrate it to the current version)."""

    async def action(options: Options) -> None:
        async with await _open(options) as store:
            applied = await store.init_schema(partitions=partitions)
            version = await store.schema_version()
        state = f"applied {applied} migration(s)" if applied else "already up to date"
        layout = f", {partitions} partitions" if partitions else ""
        out.print(f"schema {store.config.schema!r} at version {version}{layout}: {state}")

    _run(ctx, action)


@app.command()
def migrate(ctx: typer.Context) -> None:
    """Apply pending migrations (same as init; safe to run anytime)."""
    init(ctx, partitions=None)


@app.command()
def verify(ctx: typer.Context) -> None:
    """Check every table, index and function and the schema version; exit 1 on drift."""
    from .schema import latest_version

    async def action(options: Options) -> None:
        async with await _open(options) as store:
            objects = await store.verify_schema()
            version = await store.schema_version()
        table = Table(title=f"schema {store.config.schema!r}, prefix {store.config.table_prefix!r}")
        for column in ("kind", "name", "state"):
            table.add_column(column)
        ok = True
        for kind, name, present in objects:
            ok &= present
            table.add_row(kind, name, "[green]ok[/green]" if present else "[red]missing[/red]")
        version_ok = version == latest_version()
        ok &= version_ok
        table.add_row(
            "version",
            f"{version} (expected {latest_version()})",
            "[green]ok[/green]" if version_ok else "[red]drift[/red]",
        )
        out.print(table)
        if not ok:
            raise Failed("verify: the schema differs from what this pgactors expects")

    _run(ctx, action)


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Latency, versions, records per type, sizes, vacuum, write rate, connections."""

    async def action(options: Options) -> None:
        async with await _open(options) as store:
            info = await store.info()
            feed = await store.feed_stats() if info.schema_version else None
            stats = await store.server_stats() if info.schema_version else None
        report = {
            "target": store.config.target(),
            "schema": store.config.schema,
            "table_prefix": store.config.table_prefix,
            "latency_ms": round(info.latency_ms, 3),
            "server_version": info.server_version,
            "schema_version": info.schema_version,
            "types": info.types,
            "records": sum(info.types.values()),
            "table_bytes": info.table_bytes,
            "index_bytes": info.index_bytes,
            "database_bytes": info.database_bytes,
            "changes": None
            if feed is None
            else {
                "last_position": feed.last_position,
                "oldest_position": feed.oldest_position,
                "pruned_through": feed.pruned_through,
                "rows": feed.rows,
                "bytes": feed.bytes,
                "retention_seconds": store.config.changes_retention,
            },
            "stats": None if stats is None else _stats_report(stats),
        }
        if as_json:
            print(json.dumps(report, indent=2))
            return
        print_status(report)

    _run(ctx, action)


def _stats_report(stats: ServerStats) -> dict[str, Any]:
    report = stats.as_dict()
    del report["types"]  # already in the report
    for key in ("writes_per_second", "notification_queue_usage"):
        if report[key] is not None:
            report[key] = round(report[key], 3)
    return report


def print_status(report: dict[str, Any]) -> None:
    """Render a status report as rich tables."""
    table = Table(title="pgactors status", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("server", f"{report['target']} (PostgreSQL {report['server_version']})")
    table.add_row("latency", f"{report['latency_ms']:.2f} ms")
    table.add_row("schema", f"{report['schema']} (prefix {report['table_prefix']})")
    table.add_row("schema version", str(report["schema_version"] or "not installed"))
    table.add_row("records", str(report["records"]))
    table.add_row("table size", _bytes(report["table_bytes"]))
    table.add_row("index size", _bytes(report["index_bytes"]))
    table.add_row("database size", _bytes(report["database_bytes"]))
    if report["changes"]:
        feed = report["changes"]
        table.add_row(
            "change log",
            f"{feed['rows']} changes, {_bytes(feed['bytes'])}, positions "
            f"{feed['oldest_position'] or '-'}..{feed['last_position']} "
            f"(retention {feed['retention_seconds']:g} s)",
        )
    out.print(table)
    if report.get("stats"):
        out.print(stats_table(report["stats"]))
    if report["types"]:
        out.print(types_table(report["types"]))


def stats_table(stats: dict[str, Any]) -> Table:
    """Health figures of a status report: storage, vacuum, writes, connections."""
    table = Table(title="health", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    partitions = stats["partitions"]
    table.add_row("layout", f"{partitions} hash partitions" if partitions else "not partitioned")
    table.add_row(
        "storage",
        f"heap {_bytes(stats['heap_bytes'])}, TOAST {_bytes(stats['toast_bytes'])}, "
        f"indexes {_bytes(stats['index_bytes'])}",
    )
    table.add_row("rows (estimate)", f"{stats['live_rows']} live, {stats['dead_rows']} dead")
    table.add_row("last autovacuum", stats["last_autovacuum"] or "never")
    table.add_row("last autoanalyze", stats["last_autoanalyze"] or "never")
    if stats["writes_last_minute"] is None:
        writes = "unknown (the change feed is off for this store)"
    else:
        writes = (
            f"{stats['writes_per_second']:.2f}/s over the last minute "
            f"({stats['writes_last_minute']} writes)"
        )
    table.add_row("writes", writes)
    table.add_row(
        "connections",
        f"{stats['connections']} to this database, {stats['active_connections']} active",
    )
    table.add_row("listeners", str(stats["listeners"]))
    table.add_row("NOTIFY queue", f"{stats['notification_queue_usage'] * 100:.1f}% used")
    return table


def types_table(types: dict[str, int]) -> Table:
    """A table of record counts per type."""
    table = Table(title="records per type")
    table.add_column("type")
    table.add_column("records", justify="right")
    for name, count in types.items():
        table.add_row(name, str(count))
    return table


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@app.command()
def metrics(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Print metrics in the Prometheus text format: the server-side figures, one shot.

    A fresh process has served no traffic: operation counts and latency histograms
    come from the application (``store.metrics()``, ``serve_metrics``).
    """
    from .metrics import prometheus_text

    async def action(options: Options) -> None:
        async with await _open(options) as store:
            stats = await store.server_stats()
            snapshot = replace(store.metrics(), server=stats)
        if as_json:
            print(json.dumps(snapshot.as_dict(), indent=2))
        else:
            print(prometheus_text(snapshot), end="")

    _run(ctx, action)


@app.command()
def reset(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Drop every pgactors table (ALL STATE) and recreate the schema."""
    if not yes:
        if not sys.stdin.isatty():
            err.print("error: reset deletes all state; with no terminal, pass --yes to confirm")
            raise typer.Exit(EXIT_USAGE)
        if not typer.confirm("This deletes every record. Continue?", default=False):
            err.print("reset cancelled")
            raise typer.Exit(EXIT_FAILED)

    async def action(options: Options) -> None:
        async with await _open(options) as store:
            await store.drop_schema()
            await store.init_schema()
        out.print(f"schema {store.config.schema!r} reset: every record deleted")

    _run(ctx, action)


# -- records ----------------------------------------------------------------------------------


@app.command()
def get(
    ctx: typer.Context,
    type: Annotated[str, typer.Argument(help="Record type.")],
    id: Annotated[str, typer.Argument(help="Record id.")],
    meta: Annotated[bool, typer.Option("--meta", help="Include version and timestamps.")] = False,
) -> None:
    """Print a record's data as pretty JSON (exit 1 if missing)."""

    async def action(options: Options) -> None:
        async with await _open(options) as store:
            record = await store.load(type, id)
        if record is None:
            raise Failed(f"not found: {type}/{id}")
        shown: Any = record.data
        if meta:
            shown = {
                "type": record.type,
                "id": record.id,
                "version": record.version,
                "created_at": record.created_at.isoformat(),
                "updated_at": record.updated_at.isoformat(),
                "expires_at": record.expires_at and record.expires_at.isoformat(),
                "data": record.data,
            }
        print(json.dumps(shown, indent=2, ensure_ascii=False))

    _run(ctx, action)


@app.command()
def put(
    ctx: typer.Context,
    type: Annotated[str, typer.Argument(help="Record type.")],
    id: Annotated[str, typer.Argument(help="Record id.")],
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

    async def action(options: Options) -> None:
        async with await _open(options) as store:
            record = await store.save(type, id, value, expected_version=expected_version, ttl=ttl)
        out.print(f"saved {record.type}/{record.id} version {record.version}", markup=False)

    _run(ctx, action)


@app.command()
def delete(
    ctx: typer.Context,
    type: Annotated[str, typer.Argument(help="Record type.")],
    id: Annotated[str, typer.Argument(help="Record id.")],
    expected_version: Annotated[
        int | None, typer.Option(help="Delete only if the stored version is N.")
    ] = None,
) -> None:
    """Delete a record (exit 1 if it did not exist)."""

    async def action(options: Options) -> None:
        async with await _open(options) as store:
            deleted = await store.delete(type, id, expected_version=expected_version)
        if not deleted:
            raise Failed(f"not found: {type}/{id}")
        out.print(f"deleted {type}/{id}", markup=False)

    _run(ctx, action)


@app.command("ls")
def list_ids(
    ctx: typer.Context,
    type: Annotated[str, typer.Argument(help="Record type.")],
    prefix: Annotated[str | None, typer.Option(help="Only ids starting with this.")] = None,
    after: Annotated[str | None, typer.Option(help="Only ids after this one (paging).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many ids.")] = 1000,
) -> None:
    """List the ids of a type, one per line, in code-point order."""

    async def action(options: Options) -> None:
        async with await _open(options) as store:
            ids = await store.list_ids(type, prefix=prefix, after=after, limit=limit)
        for record_id in ids:
            print(record_id)

    _run(ctx, action)


@app.command()
def types(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every type with its record count."""

    async def action(options: Options) -> None:
        async with await _open(options) as store:
            counts = await store.types()
        if as_json:
            print(json.dumps(counts, indent=2))
        elif counts:
            out.print(types_table(counts))
        else:
            err.print("no records")

    _run(ctx, action)


# -- queries ----------------------------------------------------------------------------------

index_app = typer.Typer(help="Expression indexes on hot data paths.", no_args_is_help=True)
app.add_typer(index_app, name="index")

WhereOption = Annotated[
    str | None,
    typer.Option(
        "--where", help='A JSON filter, e.g. \'{"score": {"$gt": 100}}\' (see the README).'
    ),
]


def _where(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidQuery(f"--where is not valid JSON: {exc}") from None


def _record_json(record: Record) -> dict[str, Any]:
    return {
        "type": record.type,
        "id": record.id,
        "version": record.version,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "data": record.data,
    }


@app.command()
def query(
    ctx: typer.Context,
    type: Annotated[str, typer.Argument(help="Record type.")],
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

    async def action(options: Options) -> None:
        async with await _open(options) as store:
            page = await store.query(
                type, _where(where), order_by=order_by, limit=limit, after=after
            )
        if as_json:
            items = [_record_json(r) for r in page.items]
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

    _run(ctx, action)


@app.command()
def count(
    ctx: typer.Context,
    type: Annotated[str, typer.Argument(help="Record type.")],
    where: WhereOption = None,
) -> None:
    """How many records of a type match a filter."""

    async def action(options: Options) -> None:
        async with await _open(options) as store:
            print(await store.count(type, _where(where)))

    _run(ctx, action)


def _metric(spec: str) -> tuple[str, str | tuple[str, str]]:
    name, _, rest = spec.partition("=")
    function, _, path = rest.partition(":")
    if not name or not function:
        raise InvalidQuery(f"--metric {spec!r}: expected NAME=count or NAME=FUNCTION:PATH")
    return name, (function if not path else (function, path))


@app.command()
def stats(
    ctx: typer.Context,
    type: Annotated[str, typer.Argument(help="Record type.")],
    group_by: Annotated[
        list[str] | None, typer.Option("--group-by", help="Path to group by; repeatable.")
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", help="NAME=count or NAME=FUNCTION:PATH (count/sum/avg/min/max)."),
    ] = None,
    where: WhereOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Counts and sum/avg/min/max per group (default metric: count)."""

    async def action(options: Options) -> None:
        metrics = dict(_metric(m) for m in metric) if metric else None
        async with await _open(options) as store:
            rows = await store.aggregate(type, _where(where), group_by=group_by, metrics=metrics)
        if as_json:
            print(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
            return
        columns = list(rows[0]) if rows else [*(group_by or []), *(metrics or {"count": ""})]
        table = Table(*columns)
        for row in rows:
            table.add_row(*(json.dumps(row[c], ensure_ascii=False, default=str) for c in columns))
        out.print(table)

    _run(ctx, action)


@index_app.command("create")
def index_create(
    ctx: typer.Context,
    type: Annotated[str, typer.Argument(help="Record type.")],
    path: Annotated[str, typer.Argument(help="Data path, e.g. profile.level.")],
) -> None:
    """Index a path of one type, for equality, $in and number ranges."""

    async def action(options: Options) -> None:
        async with await _open(options) as store:
            name = await store.create_index(type, path)
        out.print(f"index {name} on {type} {path}", markup=False)

    _run(ctx, action)


@index_app.command("drop")
def index_drop(
    ctx: typer.Context,
    type: Annotated[str, typer.Argument(help="Record type.")],
    path: Annotated[str, typer.Argument(help="Data path.")],
) -> None:
    """Drop the index on a path (exit 1 if there was none)."""

    async def action(options: Options) -> None:
        async with await _open(options) as store:
            dropped = await store.drop_index(type, path)
        if not dropped:
            raise Failed(f"no index on {type} {path}")
        out.print(f"dropped the index on {type} {path}", markup=False)

    _run(ctx, action)


@index_app.command("ls")
def index_ls(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every path index: type, path and index name."""

    async def action(options: Options) -> None:
        async with await _open(options) as store:
            found = await store.indexes()
        if as_json:
            rows = [{"type": t, "path": p, "index": n} for t, p, n in found]
            print(json.dumps(rows, indent=2))
            return
        table = Table("type", "path", "index")
        for row in found:
            table.add_row(*row)
        out.print(table)

    _run(ctx, action)


@app.command()
def purge(
    ctx: typer.Context,
    type: Annotated[str | None, typer.Option("--type", help="Only records of this type.")] = None,
) -> None:
    """Delete the expired records (saved with a ttl) now, and print how many."""

    async def action(options: Options) -> None:
        async with await _open(options) as store:
            purged = await store.purge_expired(type=type)
        noun = "record" if purged == 1 else "records"
        out.print(f"purged {purged} expired {noun}", markup=False)

    _run(ctx, action)


@app.command()
def watch(
    ctx: typer.Context,
    types: Annotated[list[str] | None, typer.Argument(help="Only these types.")] = None,
    since: Annotated[
        int | None, typer.Option(help="Resume after this position (0: oldest retained).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Stream changes live until interrupted: time, op, type, id, version (and position)."""

    async def action(options: Options) -> None:
        async with (
            await _open(options) as store,
            store.changes(types or None, since=since) as stream,
        ):
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

    _run(ctx, action)


# -- import and export ----------------------------------------------------------------------------


class OnConflictMode(StrEnum):
    """``--on-conflict`` choices."""

    skip = "skip"
    overwrite = "overwrite"
    fail = "fail"


@app.command()
def export(
    ctx: typer.Context,
    types: Annotated[
        list[str] | None, typer.Option("--type", "-t", help="Only this type (repeatable).")
    ] = None,
    where: WhereOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Write every record (of the types, matching --where) as JSONL, one object per line,
    in (type, id) order."""

    async def action(options: Options) -> None:
        condition = _where(where)
        async with await _open(options) as store:
            total = None
            if err.is_terminal:
                if condition is None:
                    counts = await store.types()
                    total = sum(n for t, n in counts.items() if not types or t in types)
                elif types:
                    total = sum([await store.count(t, condition) for t in types])
            exported = await run_export(store, types or None, stream, total, condition)
        err.print(f"exported {exported} records", markup=False)

    if output is None:
        try:
            with open(sys.stdout.fileno(), "wb", closefd=False) as stream:
                _run(ctx, action)
        except BrokenPipeError:
            # The reader went away (`pgactors export | head`): stop quietly, as Unix tools do.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(EXIT_FAILED) from None
        return
    # Written aside and renamed at the end, so a failed export leaves no partial file.
    partial = output.with_name(output.name + ".partial")
    try:
        with open(partial, "wb") as stream:
            _run(ctx, action)
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)


@app.command("import")
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
    is_dir = str(source) != "-" and source.is_dir()
    if is_dir and type is None:
        err.print("error: importing a directory needs --type (the type of every file)")
        raise typer.Exit(EXIT_USAGE)
    if not is_dir and str(source) != "-" and not source.is_file():
        err.print(f"error: {source} is not a file or directory", markup=False)
        raise typer.Exit(EXIT_USAGE)

    async def action(options: Options) -> ImportResult:
        async with await _open(options) as store:
            try:
                if is_dir:
                    assert type is not None
                    return await import_dir(store, source, type, on_conflict.value, strict)
                return await import_jsonl(store, stream, size, type, on_conflict.value, strict)
            except ImportAborted as exc:
                raise Failed(f"error: {exc}") from None

    stdin = str(source) == "-"
    size = None if stdin or is_dir else source.stat().st_size
    with (
        contextlib.nullcontext(None)
        if is_dir
        else open(sys.stdin.fileno(), "rb", closefd=False)
        if stdin
        else open(source, "rb")
    ) as stream:
        result = _run(ctx, action)
    for issue in result.errors:
        err.print(str(issue), markup=False)
    if result.failed > len(result.errors):
        err.print(f"... and {result.failed - len(result.errors)} more", markup=False)
    if as_json:
        print(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))
    err.print(
        f"imported {result.imported}, overwritten {result.overwritten}, "
        f"skipped {result.skipped}, failed {result.failed}",
        markup=False,
    )
    if result.failed:
        raise typer.Exit(EXIT_FAILED)


def _progress(total: float | None, unit: str) -> Progress | None:
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
) -> int:
    """Write the export to ``stream``; return how many records were written."""
    bar = _progress(total, "export")
    count = 0
    loop = asyncio.get_running_loop()
    # Each block is written by a worker thread while the next one is fetched: a file
    # write blocks (a third of the time on a disk), and the event loop must not.
    writing: asyncio.Future[int] | None = None
    with bar or contextlib.nullcontext():
        try:
            async for block in store.export_jsonl(types, where=where):
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
    bar = _progress(files, "import")

    def on_files(done: int) -> None:
        if bar is not None:
            bar.update(bar.task_ids[0], completed=done, done=done)

    with bar or contextlib.nullcontext():
        return await store.import_dir(
            source, type=type, on_conflict=on_conflict, strict=strict, progress=on_files
        )


async def import_jsonl(
    store: Store,
    stream: BinaryIO | None,
    size: int | None,
    type: str | None,
    on_conflict: OnConflict,
    strict: bool,
) -> ImportResult:
    """Import JSONL from an open file of ``size`` bytes, with a progress bar on a terminal."""
    assert stream is not None
    bar = _progress(size, "import")
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


# -- embedded server ------------------------------------------------------------------------------


def _server_action(ctx: typer.Context, action: Callable[[EmbeddedServer], None]) -> None:
    options = _options(ctx)
    try:
        action(options.server())
    except PgActorsError as exc:
        _fail(options, exc, EXIT_USAGE)


@server_app.command("start")
def server_start(ctx: typer.Context) -> None:
    """Start the embedded server (no-op if it is running)."""

    def action(server: EmbeddedServer) -> None:
        started = server.start()
        _print_system_changes(server)
        out.print(("started" if started else "already running") + f": {server.data_dir}")
        print(server.dsn)

    _server_action(ctx, action)


@server_app.command("stop")
def server_stop(ctx: typer.Context) -> None:
    """Stop the embedded server."""

    def action(server: EmbeddedServer) -> None:
        stopped = server.stop()
        out.print(("stopped" if stopped else "not running") + f": {server.data_dir}")

    _server_action(ctx, action)


@server_app.command("status")
def server_status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Whether the embedded server runs, its pid, socket and version (exit 1 if stopped)."""

    def action(server: EmbeddedServer) -> None:
        info = server.status()
        report = {
            "running": info.running,
            "data_dir": str(info.data_dir),
            "pid": info.pid,
            "socket_dir": str(info.socket_dir) if info.socket_dir else None,
            "port": info.port,
            "dsn": info.dsn,
            "version": info.version,
        }
        if as_json:
            print(json.dumps(report, indent=2))
        else:
            table = Table(title="embedded PostgreSQL", show_header=False)
            table.add_column("", style="bold")
            table.add_column("")
            for key, value in report.items():
                table.add_row(key, "-" if value is None else str(value))
            out.print(table)
        if not info.running:
            raise typer.Exit(EXIT_FAILED)

    _server_action(ctx, action)


@server_app.command("url")
def server_url(ctx: typer.Context) -> None:
    """Print the embedded server's DSN (for psql and other clients)."""
    _server_action(ctx, lambda server: print(server.dsn))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def psql(ctx: typer.Context) -> None:
    """Open the bundled psql on the configured database (extra arguments pass through)."""
    from .embedded import bin_path
    from .postgres import build_conninfo

    options = _options(ctx)
    try:
        conninfo = build_conninfo(options.config())
        command = [str(bin_path("psql")), conninfo, *ctx.args]
    except PgActorsError as exc:
        _fail(options, exc, EXIT_USAGE)
    raise typer.Exit(subprocess.call(command))


# -- demo -----------------------------------------------------------------------------------------


@app.command()
def demo(ctx: typer.Context) -> None:
    """A tour: profiles, a chat room, concurrent compare-and-set, durability, status."""
    from .demo import run_demo

    _run(ctx, lambda options: run_demo(options, out))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except (ConfigError, InvalidInput) as exc:  # raised while parsing options
        err.print(f"error: {exc}", markup=False)
        sys.exit(EXIT_USAGE)
