"""Rendering for the ``pgactors`` command: consoles, tables, status, byte sizes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from ..embedded import EmbeddedServer

__all__ = [
    "err",
    "format_bytes",
    "history_table",
    "key_value_table",
    "limits_text",
    "out",
    "print_embedded",
    "print_status",
    "print_system_changes",
    "reminders_summary",
    "stats_table",
    "types_table",
]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def print_system_changes(server: EmbeddedServer) -> None:
    """Say what starting the server changed outside its data directory (as root)."""
    for change in server.system_changes:
        err.print(f"[yellow]changed outside the data directory: {escape(change)}[/yellow]")


def print_embedded(server: EmbeddedServer, started: bool) -> None:
    """Say which embedded server the command uses, and what starting it changed."""
    print_system_changes(server)
    verb = "started" if started else "using"
    err.print(
        f"[dim]{verb} the embedded PostgreSQL server in {server.data_dir}"
        + (" (stop it with `pgactors server stop`)" if started else "")
        + "[/dim]"
    )


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
    table.add_row("table size", format_bytes(report["table_bytes"]))
    table.add_row("index size", format_bytes(report["index_bytes"]))
    table.add_row("database size", format_bytes(report["database_bytes"]))
    if report["changes"]:
        feed = report["changes"]
        table.add_row(
            "change log",
            f"{feed['rows']} changes, {format_bytes(feed['bytes'])}, positions "
            f"{feed['oldest_position'] or '-'}..{feed['last_position']} "
            f"(retention {feed['retention_seconds']:g} s)",
        )
    out.print(table)
    if report.get("stats"):
        out.print(stats_table(report["stats"]))
    if report["types"]:
        out.print(types_table(report["types"]))
    if report.get("history"):
        out.print(history_table(report["history"]))


def stats_table(stats: dict[str, Any]) -> Table:
    """Health figures of a status report: storage, vacuum, writes, connections."""
    table = Table(title="health", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    partitions = stats["partitions"]
    table.add_row("layout", f"{partitions} hash partitions" if partitions else "not partitioned")
    table.add_row(
        "storage",
        f"heap {format_bytes(stats['heap_bytes'])}, TOAST {format_bytes(stats['toast_bytes'])}, "
        f"indexes {format_bytes(stats['index_bytes'])}",
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
    table.add_row("reminders", reminders_summary(stats))
    return table


def reminders_summary(stats: dict[str, Any]) -> str:
    """How many reminders are set and overdue, and since when the oldest overdue is due."""
    text = f"{stats['reminders']} set, {stats['reminders_overdue']} overdue"
    oldest = stats["oldest_overdue_reminder"]
    return text if oldest is None else f"{text} (the oldest due {oldest})"


def types_table(types: dict[str, int]) -> Table:
    """A table of record counts per type."""
    table = Table(title="records per type")
    table.add_column("type")
    table.add_column("records", justify="right")
    for name, count in types.items():
        table.add_row(name, str(count))
    return table


def key_value_table(title: str, rows: dict[str, Any]) -> Table:
    """A two-column table without header: bold keys, values (``-`` for None)."""
    table = Table(title=title, show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for key, value in rows.items():
        table.add_row(key, "-" if value is None else str(value))
    return table


def limits_text(keep_versions: int | None, keep_days: float | None) -> str:
    """The retention limits in words."""
    limits = []
    if keep_versions is not None:
        limits.append(f"at most {keep_versions} per record")
    if keep_days is not None:
        limits.append(f"replaced less than {keep_days:g} days ago")
    return ", ".join(limits) if limits else "every version"


def history_table(rows: list[dict[str, Any]]) -> Table:
    """The types with history, their limits, rows and bytes."""
    table = Table(title="version history")
    for column in ("type", "recording", "keeps", "past versions", "size"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            escape(row["type"]),
            "yes" if row["enabled"] else "no (disabled)",
            limits_text(row["keep_versions"], row["keep_days"]),
            str(row["rows"]),
            format_bytes(row["bytes"]),
        )
    return table


def format_bytes(n: int) -> str:
    """A byte count for people: ``512 B``, ``1.5 KiB`` ... ``3.2 GiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
