"""The JSON behind every page: ``/api/overview``, ``/api/types``, ``/api/types/{type}``,
``/api/types/{type}/{id}`` (GET; PUT and DELETE with ``allow_writes``)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import InvalidInput, InvalidQuery, NotFound, PgActorsError
from ..record import Record, check_id, check_type
from ..store import Store

PAGE_LIMIT: Final = 50
MAX_PAGE_LIMIT: Final = 1000
AGGREGATES: Final = ("count", "sum", "avg", "min", "max")


class WritesDisabled(PgActorsError):
    """The dashboard is read-only: it was started without ``allow_writes``."""


def iso(value: Any) -> Any:
    """A datetime as ISO 8601; anything else unchanged."""
    return value.isoformat() if value is not None and hasattr(value, "isoformat") else value


def record_summary(record: Record) -> dict[str, Any]:
    """A record's key, version and times (a list row)."""
    return {
        "id": record.id,
        "version": record.version,
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "expires_at": iso(record.expires_at),
    }


def record_json(record: Record) -> dict[str, Any]:
    """A whole record; a binary state as its manifest and size."""
    binary = None
    if record.payload is not None:
        binary = {"manifest": record.manifest, "bytes": len(record.payload)}
    return {"type": record.type, **record_summary(record), "data": record.data, "binary": binary}


def store_of(request: Request) -> Store:
    """The dashboard's store."""
    store: Store = request.app.state.store
    return store


SILO_TIMEOUT: Final = 2.0
"""Seconds the overview waits for the silos' status."""


async def overview(request: Request) -> Response:
    """GET /api/overview: health, change feed, reminders, and every type's count."""
    store = store_of(request)
    figures = (await store.overview()).as_dict()
    figures["target"] = store.config.target()
    figures["schema"] = store.config.schema
    figures["writable"] = request.app.state.allow_writes
    silos = request.app.state.silos
    if silos is not None:
        figures["silos"] = await silo_figures(silos)
    return JSONResponse(figures)


async def silo_figures(silos: Callable[[], Awaitable[Sequence[Any]]]) -> dict[str, Any]:
    """Each silo's status as JSON (``{"error": ...}`` when asking failed)."""
    try:
        statuses = await asyncio.wait_for(silos(), SILO_TIMEOUT)
    except Exception as exc:  # the overview shows the rest; the page says why
        return {"error": f"{type(exc).__name__}: {exc}"[:300], "silos": []}
    return {"error": None, "silos": [_plain(s) for s in statuses]}


def _plain(status: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(status) and not isinstance(status, type):
        return dataclasses.asdict(status)
    return dict(status)


async def types(request: Request) -> Response:
    """GET /api/types: every type with its record count (``estimated``: from statistics)."""
    figures = await store_of(request).overview()
    listed = [{"type": name, "count": count} for name, count in figures.types.items()]
    return JSONResponse({"types": listed, "estimated": figures.types_estimated})


def where_of(request: Request) -> dict[str, Any] | None:
    """``?where=`` parsed as a JSON object (the query language)."""
    raw = request.query_params.get("where", "").strip()
    if not raw:
        return None
    try:
        where = json.loads(raw)
    except ValueError as exc:
        raise InvalidQuery(f"where: not JSON ({exc})") from None
    if not isinstance(where, dict):
        raise InvalidQuery('where: a JSON object, like {"level": {"$gte": 3}}')
    return where


def limit_of(request: Request) -> int:
    """``?limit=``, 1 to 1000."""
    raw = request.query_params.get("limit") or str(PAGE_LIMIT)
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_LIMIT:
        raise InvalidInput(f"limit must be an int from 1 to {MAX_PAGE_LIMIT}, got {raw!r}")
    return int(raw)


def order_of(request: Request) -> list[str] | None:
    """``?order_by=a,-b`` (or repeated) as a list of paths."""
    parts = [p.strip() for v in request.query_params.getlist("order_by") for p in v.split(",")]
    return [p for p in parts if p] or None


async def aggregate_of(store: Store, type: str, where: Any, path: str) -> dict[str, Any]:
    """count, sum, avg, min and max of the numbers at ``path``."""
    metrics = {name: (name, path) for name in AGGREGATES}
    rows = await store.aggregate(type, where, metrics=metrics)
    values = rows[0] if rows else dict.fromkeys(AGGREGATES)
    return {"path": path, **{name: values.get(name) for name in AGGREGATES}}


async def type_page(request: Request) -> Response:
    """GET /api/types/{type}: a page of ids (keyset paging with ``after``), the count of
    matches, and with ``?aggregate=path`` the statistics of that path."""
    store = store_of(request)
    type = check_type(request.path_params["type"])
    where, params = where_of(request), request.query_params
    page = await store.query(
        type,
        where,
        order_by=order_of(request),
        limit=limit_of(request),
        after=params.get("after") or None,
    )
    result: dict[str, Any] = {
        "type": type,
        "items": [record_summary(record) for record in page.items],
        "next": page.next,
        "count": await store.count(type, where),
    }
    path = params.get("aggregate", "").strip()
    if path:
        result["aggregate"] = await aggregate_of(store, type, where, path)
    return JSONResponse(result)


def key_of(request: Request) -> tuple[str, str]:
    """The record's ``(type, id)`` from the address."""
    return check_type(request.path_params["type"]), check_id(request.path_params["id"])


async def record(request: Request) -> Response:
    """GET /api/types/{type}/{id}: the record, 404 if there is none."""
    type, id = key_of(request)
    found = await store_of(request).load(type, id, fresh=True)
    if found is None:
        raise NotFound(type, id)
    return JSONResponse({**record_json(found), "writable": request.app.state.allow_writes})


def check_writable(request: Request) -> None:
    """Refuse a write when the dashboard is read-only."""
    if not request.app.state.allow_writes:
        raise WritesDisabled("the dashboard is read-only: start it with --allow-writes to edit")


def version_of(raw: object) -> int:
    """The ``expected_version`` of an edit: the version the user saw."""
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise InvalidInput(f"expected_version: the version you edited (an int), got {raw!r}")
    return raw


async def save(request: Request) -> Response:
    """PUT /api/types/{type}/{id} ``{"data": ..., "expected_version": N}``: compare-and-set."""
    check_writable(request)
    type, id = key_of(request)
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise InvalidInput(f"the body must be JSON ({exc})") from None
    if not isinstance(body, dict) or "data" not in body:
        raise InvalidInput('the body must be {"data": ..., "expected_version": N}')
    expected = version_of(body.get("expected_version"))
    saved = await store_of(request).save(type, id, body["data"], expected_version=expected)
    return JSONResponse({**record_json(saved), "writable": True})


async def delete(request: Request) -> Response:
    """DELETE /api/types/{type}/{id}?expected_version=N: delete if still at version N."""
    check_writable(request)
    type, id = key_of(request)
    raw = request.query_params.get("expected_version", "")
    expected = version_of(int(raw)) if raw.isdigit() else version_of(raw or None)
    if not await store_of(request).delete(type, id, expected_version=expected):
        raise NotFound(type, id)
    return JSONResponse({"deleted": True, "type": type, "id": id})
