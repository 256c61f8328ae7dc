"""Server-sent events from ``store.changes``: the live change feed and one record's changes.

``GET /api/changes?type=T&id=X&since=N``: every change (of type T, of record X), one
event per change with the change as JSON and its position as the event id, so a
reconnecting ``EventSource`` resumes (``Last-Event-ID``) without a gap. A comment is
sent when the feed is quiet, so proxies keep the stream open and a gone client is seen.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Final

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..changes import Change, ChangeStream
from ..config import redact
from ..errors import InvalidInput, PgActorsError
from ..store import Store

KEEPALIVE_SECONDS: Final = 10.0


def change_json(change: Change) -> dict[str, object]:
    """A change as the API sends it."""
    return {
        "position": change.position,
        "type": change.type,
        "id": change.id,
        "version": change.version,
        "op": change.op,
        "at": change.at.isoformat(),
    }


def since_of(request: Request) -> int | None:
    """Where to start: ``Last-Event-ID`` (a reconnect), else ``?since=``, else now."""
    raw = request.headers.get("last-event-id") or request.query_params.get("since")
    if raw is None or raw == "":
        return None
    try:
        since = int(raw)
    except ValueError:
        raise InvalidInput(f"since must be a change position (an int >= 0), got {raw!r}") from None
    if since < 0:
        raise InvalidInput(f"since must be a change position (an int >= 0), got {raw!r}")
    return since


def event(data: object, *, id: int | None = None, name: str | None = None) -> bytes:
    """One SSE message."""
    lines = []
    if name is not None:
        lines.append(f"event: {name}")
    if id is not None:
        lines.append(f"id: {id}")
    lines.append(f"data: {json.dumps(data, ensure_ascii=False)}")
    return ("\n".join(lines) + "\n\n").encode()


async def stream_changes(
    store: Store, stream: ChangeStream, id: str | None
) -> AsyncIterator[bytes]:
    """The SSE body: a ready event, then the changes (of record ``id``)."""
    try:
        await stream.start()
        yield event({"position": stream.position}, name="ready")
        iterator = aiter(stream)
        while True:
            try:
                change = await asyncio.wait_for(anext(iterator), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            if id is None or change.id == id:
                yield event(change_json(change), id=change.position)
    except StopAsyncIteration:
        return
    except PgActorsError as exc:
        message = redact(str(exc), store.config)
        yield event({"error": message, "kind": type(exc).__name__}, name="failure")
    finally:
        # The client went away: Starlette cancels this body, and keeps cancelling every
        # await in it; unsubscribing must still finish.
        with anyio.CancelScope(shield=True):
            await stream.close()


async def changes(request: Request) -> Response:
    """GET /api/changes: the change feed as server-sent events."""
    store: Store = request.app.state.store
    types = request.query_params.getlist("type") or None
    record_id = request.query_params.get("id")
    if record_id is not None and (types is None or len(types) != 1):
        raise InvalidInput("id needs exactly one type: /api/changes?type=T&id=X")
    stream = store.changes(types, since=since_of(request))
    return StreamingResponse(
        stream_changes(store, stream, record_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
