"""Version history commands: ``history``, ``history-enable``, ``history-disable``.

``history TYPE ID`` lists a record's past versions, so enabling and disabling are
commands of their own rather than subcommands of a ``history`` group (``history
enable X`` would read as the record ``X`` of a type named ``enable``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..history import HistoryInfo, PastVersion
from ..jsonl import record_json
from ..store import Store
from .app import Failed, JsonOption, with_store
from .render import err, limits_text, out

__all__ = ["history", "history_disable", "history_enable", "history_json", "past_json"]

TypeArgument = Annotated[str, typer.Argument(help="Record type.")]
IdArgument = Annotated[str, typer.Argument(help="Record id.")]


def past_json(past: PastVersion) -> dict[str, Any]:
    """A past version as JSON: the export's record fields, expiry, and its replacement."""
    expires = past.expires_at
    return {
        **record_json(past),
        "expires_at": expires and expires.isoformat(),
        "replaced_at": past.replaced_at.isoformat(),
        "deleted": past.deleted,
    }


@with_store
async def history(
    store: Store,
    type: TypeArgument,
    id: IdArgument,
    limit: Annotated[int, typer.Option(help="At most this many versions.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """A record's kept past versions, newest first (`get --version N` prints one)."""
    versions = await store.history(type, id, limit=limit)
    if as_json:
        print(json.dumps([past_json(p) for p in versions], indent=2, ensure_ascii=False))
        return
    if not versions:
        err.print(f"no past versions of {escape(type)}/{escape(id)}")
        return
    table = Table(title=f"past versions of {escape(type)}/{escape(id)}, newest first")
    for column in ("version", "updated", "replaced", "by", "data"):
        table.add_column(column)
    for past in versions:
        data = json.dumps(past.data, ensure_ascii=False) if past.payload is None else None
        shown = data if data is not None else f"<{len(past.payload or b'')} bytes {past.manifest}>"
        table.add_row(
            str(past.version),
            past.updated_at.isoformat(timespec="seconds"),
            past.replaced_at.isoformat(timespec="seconds"),
            "delete" if past.deleted else "save",
            escape(shown if len(shown) <= 60 else shown[:57] + "..."),
        )
    out.print(table)


@with_store
async def history_enable(
    store: Store,
    type: TypeArgument,
    keep_versions: Annotated[
        int | None, typer.Option(help="Keep at most N past versions per record.")
    ] = None,
    keep_days: Annotated[
        float | None, typer.Option(help="Keep past versions replaced less than D days ago.")
    ] = None,
) -> None:
    """Keep the versions that writes of TYPE replace (no limit given: keep them all)."""
    await store.enable_history(type, keep_versions=keep_versions, keep_days=keep_days)
    out.print(f"history of {type} enabled: {limits_text(keep_versions, keep_days)}", markup=False)


@with_store
async def history_disable(store: Store, type: TypeArgument) -> None:
    """Record no more past versions of TYPE (those kept stay); exit 1 if not enabled."""
    if not await store.disable_history(type):
        raise Failed(f"history of {type} is not enabled")
    out.print(f"history of {type} disabled; the past versions kept stay", markup=False)


def history_json(infos: list[HistoryInfo]) -> list[dict[str, Any]]:
    """The history part of a status report."""
    return [
        {
            "type": i.type,
            "enabled": i.enabled,
            "keep_versions": i.keep_versions,
            "keep_days": i.keep_days,
            "rows": i.rows,
            "bytes": i.bytes,
        }
        for i in infos
    ]
