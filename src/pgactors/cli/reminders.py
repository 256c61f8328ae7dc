"""Reminder commands: the ``reminders`` group (``ls``, ``cancel``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import InvalidInput
from ..reminders import Reminder
from ..store import Store
from .app import Failed, JsonOption, handle_errors, with_store
from .render import err, out

__all__ = ["cancel", "list_reminders", "parse_due_before", "reminder_json"]

TypeArgument = Annotated[str, typer.Argument(help="Record type.")]
IdArgument = Annotated[str, typer.Argument(help="Record id.")]
NameArgument = Annotated[str, typer.Argument(help="Reminder name.")]


def parse_due_before(text: str | None) -> datetime | None:
    """``--due-before`` as an aware datetime (None when not given); ``InvalidInput`` if it
    is not an ISO 8601 date and time with a timezone."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        when = None
    if when is None or when.utcoffset() is None:
        raise InvalidInput(
            "--due-before must be an ISO 8601 date and time with a timezone, "
            f"e.g. 2026-12-01T12:00:00+00:00 or 2026-12-01T12:00Z, got {text!r}"
        )
    return when


def reminder_json(reminder: Reminder, now: datetime) -> dict[str, Any]:
    """A reminder as plain JSON values: due time in ISO 8601, overdue as of ``now``."""
    return {
        "type": reminder.type,
        "id": reminder.id,
        "name": reminder.name,
        "due_at": reminder.due_at.isoformat(),
        "period": reminder.period,
        "overdue": reminder.due_at <= now,
    }


def list_reminders(
    ctx: typer.Context,
    type: Annotated[str | None, typer.Option("--type", help="Only reminders of this type.")] = None,
    id: Annotated[str | None, typer.Option("--id", help="Only reminders of this id.")] = None,
    due_before: Annotated[
        str | None,
        typer.Option(
            "--due-before", help="Only reminders due before this ISO 8601 time (with timezone)."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many reminders.")] = 1000,
    as_json: JsonOption = False,
) -> None:
    """Stored reminders, soonest first: type, id, name, due time, period, overdue."""
    with handle_errors(ctx):
        before = parse_due_before(due_before)
    show_reminders(ctx, type, id, before, limit, as_json)


@with_store
async def show_reminders(
    store: Store,
    type: str | None,
    id: str | None,
    due_before: datetime | None,
    limit: int,
    as_json: bool,
) -> None:
    """Print the reminders, as a JSON list or as a table."""
    found = await store.reminders(type, id, due_before=due_before, limit=limit)
    now = datetime.now(UTC)
    if len(found) == limit:
        err.print(f"showing the first {limit}: raise --limit to see more", markup=False)
    if as_json:
        print(json.dumps([reminder_json(r, now) for r in found], indent=2, ensure_ascii=False))
        return
    if not found:
        err.print("no reminders", markup=False)
        return
    table = Table("type", "id", "name", "due at", "period", "overdue")
    for reminder in found:
        table.add_row(
            reminder.type,
            escape(reminder.id),  # ids may hold anything, [brackets] too
            reminder.name,
            reminder.due_at.isoformat(sep=" ", timespec="seconds"),
            "once" if reminder.period is None else f"{reminder.period:g} s",
            "[red]yes[/red]" if reminder.due_at <= now else "no",
        )
    out.print(table)


@with_store
async def cancel(store: Store, type: TypeArgument, id: IdArgument, name: NameArgument) -> None:
    """Cancel (delete) a reminder (exit 1 if there was none)."""
    if not await store.cancel_reminder(type, id, name):
        raise Failed(f"no reminder {name} of {type}/{id}")
    out.print(f"cancelled reminder {name} of {type}/{id}", markup=False)
