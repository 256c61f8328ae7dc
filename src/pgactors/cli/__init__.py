"""The ``pgactors`` admin command line: the command table.

``app`` (the Typer app, global options, error handling) is in ``app.py``; the commands
are grouped by area (``admin``, ``records``, ``history``, ``query``, ``transfer``, ``reminders``,
``server``, ``ui``), and everything they print is drawn by ``render.py``. Commands are
registered here, in the order ``--help`` lists them.
"""

from __future__ import annotations

import typer

from . import admin, history, query, records, reminders, server, transfer, ui
from .app import app, main

__all__ = ["app", "main"]

app.command()(admin.init)
app.command()(admin.migrate)
app.command()(admin.verify)
app.command()(admin.status)
app.command()(admin.metrics)
app.command()(admin.reset)
app.command()(records.get)
app.command()(records.put)
app.command()(records.delete)
app.command("ls")(records.list_ids)
app.command()(records.types)
app.command()(history.history)
app.command("history-enable")(history.history_enable)
app.command("history-disable")(history.history_disable)
app.command()(query.query)
app.command()(query.count)
app.command()(query.stats)
app.command()(admin.purge)
app.command()(transfer.watch)
app.command()(transfer.export)
app.command("import")(transfer.import_)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
    server.psql
)
app.command()(server.demo)
app.command()(ui.ui)

server_app = typer.Typer(help="Manage the embedded PostgreSQL server.", no_args_is_help=True)
server_app.command("start")(server.server_start)
server_app.command("stop")(server.server_stop)
server_app.command("status")(server.server_status)
server_app.command("url")(server.server_url)
server_app.command("standby")(server.server_standby)
server_app.command("promote")(server.server_promote)
app.add_typer(server_app, name="server")

index_app = typer.Typer(help="Expression indexes on hot data paths.", no_args_is_help=True)
index_app.command("create")(query.index_create)
index_app.command("drop")(query.index_drop)
index_app.command("ls")(query.index_ls)
app.add_typer(index_app, name="index")

reminders_app = typer.Typer(help="Durable reminders of actors.", no_args_is_help=True)
reminders_app.command("ls")(reminders.list_reminders)
reminders_app.command("cancel")(reminders.cancel)
app.add_typer(reminders_app, name="reminders")
