"""Schema and administration commands: init, migrate, verify, status, metrics, reset, purge."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from typing import Annotated, Any

import typer
from rich.table import Table

from ..stats import ServerStats
from ..store import Store
from .app import EXIT_FAILED, EXIT_USAGE, Failed, JsonOption, with_store
from .history import history_json
from .render import err, out, print_status

__all__ = ["init", "metrics", "migrate", "purge", "reset", "status", "verify"]


@with_store
async def init(
    store: Store,
    partitions: Annotated[
        int | None,
        typer.Option(
            help="Create the state table hash-partitioned by id into N tables "
            "(new tables only; 0: not partitioned)."
        ),
    ] = None,
) -> None:
    """Create the schema (or migrate it to the current version)."""
    applied = await store.init_schema(partitions=partitions)
    version = await store.schema_version()
    state = f"applied {applied} migration(s)" if applied else "already up to date"
    layout = f", {partitions} partitions" if partitions else ""
    out.print(f"schema {store.config.schema!r} at version {version}{layout}: {state}")


def migrate(ctx: typer.Context) -> None:
    """Apply pending migrations (same as init; safe to run anytime)."""
    init(ctx, partitions=None)


@with_store
async def verify(store: Store) -> None:
    """Check every table, index and function and the schema version; exit 1 on drift."""
    from ..schema import latest_version

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


@with_store
async def status(store: Store, as_json: JsonOption = False) -> None:
    """Latency, versions, records per type, sizes, vacuum, writes, connections, reminders."""
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
        "stats": None if stats is None else stats_report(stats),
        "history": history_json(await store.history_info()) if info.schema_version else [],
    }
    if as_json:
        print(json.dumps(report, indent=2))
        return
    print_status(report)


def stats_report(stats: ServerStats) -> dict[str, Any]:
    """The ``stats`` part of a status report: rates rounded, types left out."""
    report = stats.as_dict()
    del report["types"]  # already in the report
    for key in ("writes_per_second", "notification_queue_usage"):
        if report[key] is not None:
            report[key] = round(report[key], 3)
    return report


@with_store
async def metrics(store: Store, as_json: JsonOption = False) -> None:
    """Print metrics in the Prometheus text format: the server-side figures, one shot.

    A fresh process has served no traffic: operation counts and latency histograms
    come from the application (``store.metrics()``, ``serve_metrics``).
    """
    from ..metrics import prometheus_text

    stats = await store.server_stats()
    snapshot = replace(store.metrics(), server=stats)
    if as_json:
        print(json.dumps(snapshot.as_dict(), indent=2))
    else:
        print(prometheus_text(snapshot), end="")


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
    recreate_schema(ctx)


@with_store
async def recreate_schema(store: Store) -> None:
    """Drop the schema's tables and create them again."""
    await store.drop_schema()
    await store.init_schema()
    out.print(f"schema {store.config.schema!r} reset: every record deleted")


@with_store
async def purge(
    store: Store,
    type: Annotated[str | None, typer.Option("--type", help="Only records of this type.")] = None,
    history: Annotated[
        bool,
        typer.Option("--history", help="Also the past versions beyond their type's limits."),
    ] = False,
) -> None:
    """Delete the expired records (saved with a ttl) now, and print how many."""
    purged = await store.purge_expired(type=type)
    noun = "record" if purged == 1 else "records"
    out.print(f"purged {purged} expired {noun}", markup=False)
    if history:
        past = await store.purge_history()
        noun = "version" if past == 1 else "versions"
        out.print(f"purged {past} past {noun} beyond the history limits", markup=False)
