"""The embedded server's commands (``server start/stop/status/url/standby/promote``),
``psql`` and ``demo``."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from ..embedded import EmbeddedServer
from ..errors import PgActorsError
from ..standby import DEFAULT_STANDBY_NAME, Standby, failover_dsn
from .app import EXIT_FAILED, EXIT_USAGE, JsonOption, fail, get_options, run
from .render import key_value_table, out, print_system_changes

__all__ = [
    "demo",
    "psql",
    "server_promote",
    "server_standby",
    "server_start",
    "server_status",
    "server_stop",
    "server_url",
]

StandbyDir = Annotated[Path, typer.Argument(help="The standby's own data directory.")]
StandbyName = Annotated[
    str, typer.Option(help="Its application_name and replication slot on the primary.")
]


def on_server(ctx: typer.Context, action: Callable[[EmbeddedServer], None]) -> None:
    """Run ``action`` on the embedded server of ``--data-dir``; errors exit 2."""
    options = get_options(ctx)
    try:
        action(options.server())
    except PgActorsError as exc:
        fail(options, exc, EXIT_USAGE)


def server_start(
    ctx: typer.Context,
    tls: Annotated[
        bool,
        typer.Option(
            "--tls",
            help="Also accept TLS connections on 127.0.0.1 (a free port), with certificates "
            "made in <data dir>/tls; prints the DSN to use (needs pgactors[tls]).",
        ),
    ] = False,
) -> None:
    """Start the embedded server (no-op if it is running)."""

    def action(server: EmbeddedServer) -> None:
        started = server.start(tls=tls)
        print_system_changes(server)
        out.print(("started" if started else "already running") + f": {server.data_dir}")
        print(server.tls_dsn if tls else server.dsn)

    on_server(ctx, action)


def server_stop(ctx: typer.Context) -> None:
    """Stop the embedded server."""

    def action(server: EmbeddedServer) -> None:
        stopped = server.stop()
        out.print(("stopped" if stopped else "not running") + f": {server.data_dir}")

    on_server(ctx, action)


def server_status(
    ctx: typer.Context,
    as_json: JsonOption = False,
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
            "tls_port": info.tls_port,
            "tls_dsn": info.tls_dsn,
            "version": info.version,
        }
        if as_json:
            print(json.dumps(report, indent=2))
        else:
            out.print(key_value_table("embedded PostgreSQL", report))
        if not info.running:
            raise typer.Exit(EXIT_FAILED)

    on_server(ctx, action)


def server_url(ctx: typer.Context) -> None:
    """Print the embedded server's DSN (for psql and other clients); over TLS if it
    runs with --tls, else its Unix socket."""

    def action(server: EmbeddedServer) -> None:
        info = server.status()
        print(info.tls_dsn or server.dsn)

    on_server(ctx, action)


def server_standby(
    ctx: typer.Context,
    standby_dir: StandbyDir,
    name: StandbyName = DEFAULT_STANDBY_NAME,
    asynchronous: Annotated[
        bool,
        typer.Option(
            "--async",
            help="Do not make the primary wait for the standby at commit (a failover can "
            "then lose the last acknowledged writes).",
        ),
    ] = False,
) -> None:
    """Start a streaming standby of the embedded server in STANDBY_DIR (cloning it the
    first time); print the DSN that follows a failover."""

    def action(primary: EmbeddedServer) -> None:
        standby = Standby(primary, standby_dir, name=name, synchronous=not asynchronous)
        started = standby.start()
        print_system_changes(standby.server)
        mode = "asynchronous" if asynchronous else "synchronous"
        state = "started" if started else "already running"
        out.print(f"{mode} standby {state}: {standby.server.data_dir}")
        print(failover_dsn(primary, standby.server))

    on_server(ctx, action)


def server_promote(
    ctx: typer.Context,
    standby_dir: StandbyDir,
    name: StandbyName = DEFAULT_STANDBY_NAME,
    force: Annotated[
        bool, typer.Option(help="Promote even though the primary is still running.")
    ] = False,
) -> None:
    """Promote the standby in STANDBY_DIR to primary (stop the primary first)."""

    def action(primary: EmbeddedServer) -> None:
        standby = Standby(primary, standby_dir, name=name)
        standby.promote(force=force)
        out.print(f"promoted: {standby.server.data_dir}")
        print(standby.dsn)

    on_server(ctx, action)


def psql(ctx: typer.Context) -> None:
    """Open the bundled psql on the configured database (extra arguments pass through)."""
    from ..embedded import bin_path
    from ..postgres import build_conninfo

    options = get_options(ctx)
    try:
        conninfo = build_conninfo(options.config())
        command = [str(bin_path("psql")), conninfo, *ctx.args]
    except PgActorsError as exc:
        fail(options, exc, EXIT_USAGE)
    raise typer.Exit(subprocess.call(command))


def demo(ctx: typer.Context) -> None:
    """A tour: profiles, a chat room, concurrent compare-and-set, durability, status."""
    from ..demo import run_demo

    run(ctx, lambda options: run_demo(options, out))
