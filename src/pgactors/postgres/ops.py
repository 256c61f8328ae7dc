"""Single-record statements on one connection, their parameters, and transactions."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..backend import CallRequest
from ..config import StoreConfig
from ..errors import CallAlreadyApplied, PgActorsError, VersionConflict
from ..record import AppliedCall, Record, new_record
from ..reminders import HORIZON, Reminder, ReminderRequest
from . import decoding
from .connection import Conn, Connections, json_list, key_params, translated


def record_from_row(type: str, id: str, row: tuple[Any, ...]) -> Record:
    """A ``Record`` from the columns data, version, created_at, updated_at, payload,
    manifest, expires_at."""
    data, version, created_at, updated_at, payload, manifest, expires_at = row
    if payload is None:
        return new_record(type, id, data, version, created_at, updated_at, None, None, expires_at)
    return new_record(
        type, id, None, version, created_at, updated_at, bytes(payload), manifest, expires_at
    )


def decode(text: str) -> Any:
    """Stored JSON text as Python values."""
    return decoding.loads(text)


@dataclass(frozen=True, slots=True)
class SaveRequest:
    """One save waiting to be written (alone, or in a coalesced batch)."""

    type: str
    id: str
    text: str
    expected: int | None
    ttl: float | None = None
    sliding: bool = False

    def record(self, row: tuple[Any, ...]) -> Record:
        """The saved record, from the statement's (version, times, expiry) row."""
        version, created_at, updated_at, expires_at = row
        data = decode(self.text)
        return new_record(
            self.type, self.id, data, version, created_at, updated_at, None, None, expires_at
        )

    def conflict(self, actual: Mapping[tuple[str, str], int]) -> VersionConflict:
        """The conflict of a save that lost, given the current versions."""
        assert self.expected is not None
        return VersionConflict(
            self.type, self.id, self.expected, actual.get((self.type, self.id), 0)
        )


def call_params(batch: list[CallRequest]) -> dict[str, str]:
    """The parameters of ``save_call_batch``."""
    return {
        **key_params([(r.type, r.id) for r in batch]),
        "datas": "[" + ",".join(r.state.text or "null" for r in batch) + "]",
        "payloads": json.dumps(
            [
                None if r.state.payload is None else base64.b64encode(r.state.payload).decode()
                for r in batch
            ]
        ),
        "manifests": json.dumps([r.state.manifest for r in batch]),
        "expected": json.dumps([r.expected for r in batch]),
        "call_ids": json_list([r.call_id for r in batch]),
        "results": "[" + ",".join(r.result for r in batch) + "]",
    }


def firing_params(batch: list[CallRequest]) -> dict[str, str]:
    """The parameters of ``fire_reminders_batch``: ``call_params`` and the reminders."""
    reminders = [r.advance for r in batch]
    assert all(reminders)
    return {
        **call_params(batch),
        "names": json_list([r.name for r in reminders if r]),
        "dues": json.dumps([r.due_at.isoformat() for r in reminders if r]),
    }


def save_params(batch: list[SaveRequest]) -> dict[str, str]:
    """The parameters of the ``save_*_batch`` statements."""
    # The data is already JSON text: joining it is the cheapest way to send a batch.
    return {
        **key_params([(r.type, r.id) for r in batch]),
        "datas": "[" + ",".join(r.text for r in batch) + "]",
        "expected": json_list([r.expected for r in batch]),
        "ttls": json_list([r.ttl for r in batch]),
        "slidings": json_list([r.sliding for r in batch]),
    }


class Ops:
    """Single-record operations on a given connection (pooled or in a transaction)."""

    def __init__(self, db: Connections, channel: str) -> None:
        self._db = db
        self.q = db.statements
        self.channel = channel  # where set_reminders notifies

    async def _rows(
        self, conn: Conn, query: bytes, params: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        """The rows of a named statement, sent through the wire."""
        return await self._db.rows_on(conn, query, params)

    async def _row(
        self, conn: Conn, query: bytes, params: Mapping[str, Any]
    ) -> tuple[Any, ...] | None:
        rows = await self._rows(conn, query, params)
        return rows[0] if rows else None

    async def load_on(
        self, conn: Conn, type: str, id: str, *, for_update: bool = False
    ) -> Record | None:
        query = self.q.load_for_update if for_update else self.q.load
        row = await self._row(conn, query, {"type": type, "id": id})
        return record_from_row(type, id, row) if row else None

    async def save_on(
        self,
        conn: Conn,
        type: str,
        id: str,
        text: str,
        expected: int | None,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        params = {"data": text}
        queries = (self.q.save_lww, self.q.save_create, self.q.save_cas)
        row = await self._saved_on(conn, queries, type, id, expected, ttl, sliding, params)
        version, created_at, updated_at, expires_at = row
        return Record(
            type, id, decode(text), version, created_at, updated_at, None, None, expires_at
        )

    async def _saved_on(
        self,
        conn: Conn,
        queries: tuple[bytes, bytes, bytes],
        type: str,
        id: str,
        expected: int | None,
        ttl: float | None,
        sliding: bool,
        params: dict[str, Any],
    ) -> tuple[Any, ...]:
        """Run the last-write-wins, create or compare-and-set form of a save; its row,
        or ``VersionConflict`` naming the current version."""
        lww, create, cas = queries
        query = lww if expected is None else create if expected == 0 else cas
        params.update(type=type, id=id, expected=expected, ttl=ttl, sliding=sliding)
        row = await self._row(conn, query, params)
        if row is None:
            assert expected is not None
            raise VersionConflict(type, id, expected, await self.version_on(conn, type, id))
        return tuple(row)

    async def delete_on(self, conn: Conn, type: str, id: str, expected: int | None) -> bool:
        params = {"type": type, "id": id, "expected": expected}
        query = self.q.delete if expected is None else self.q.delete_cas
        if await self._row(conn, query, params) is not None:
            return True
        if expected is None:
            return False
        VersionConflict.check(type, id, expected, await self.version_on(conn, type, id))
        return False

    async def save_binary_on(
        self,
        conn: Conn,
        type: str,
        id: str,
        payload: bytes,
        manifest: str,
        expected: int | None,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        params = {"payload": payload, "manifest": manifest}
        queries = (self.q.save_binary_lww, self.q.save_binary_create, self.q.save_binary_cas)
        row = await self._saved_on(conn, queries, type, id, expected, ttl, sliding, params)
        version, created_at, updated_at, expires_at = row
        return Record(
            type, id, None, version, created_at, updated_at, payload, manifest, expires_at
        )

    async def save_call_on(self, conn: Conn, request: CallRequest) -> Record:
        if request.advance is None:
            row = await self._row(conn, self.q.save_call_batch, call_params([request]))
        else:
            row = await self._row(conn, self.q.fire_reminders_batch, firing_params([request]))
        if row is not None:
            return request.record(row[2:])
        raise await self.call_lost_on(conn, request)

    async def call_lost_on(self, conn: Conn, request: CallRequest) -> PgActorsError:
        """Why ``request`` was not saved: its call was applied already, or a stale version."""
        applied = await self.applied_call_on(conn, request.type, request.id, request.call_id)
        if applied is not None:
            return CallAlreadyApplied(request.type, request.id, applied)
        actual = await self.version_on(conn, request.type, request.id)
        return VersionConflict(request.type, request.id, request.expected, actual)

    async def applied_call_on(
        self, conn: Conn, type: str, id: str, call_id: str
    ) -> AppliedCall | None:
        params = {
            "types": json_list([type]),
            "ids": json_list([id]),
            "call_ids": json_list([call_id]),
        }
        row = await self._row(conn, self.q.applied_calls, params)
        return None if row is None else AppliedCall(row[2], row[3], row[4])

    async def version_on(self, conn: Conn, type: str, id: str) -> int:
        row = await self._row(conn, self.q.current_version, {"type": type, "id": id})
        return int(row[0]) if row else 0

    # -- reminders ------------------------------------------------------------------------

    async def set_reminders_on(self, conn: Conn, batch: list[ReminderRequest]) -> list[Reminder]:
        """Set reminders, in ``batch`` order (keys distinct)."""
        rows = await self._rows(conn, self.q.set_reminders, self._reminder_params(batch))
        found = {(t, i, n): Reminder(t, i, n, due, period) for t, i, n, due, period, _ in rows}
        return [found[(r.type, r.id, r.name)] for r in batch]

    def _reminder_params(self, batch: list[ReminderRequest]) -> dict[str, Any]:
        schedules = [r.schedule for r in batch]
        return {
            "types": json_list([r.type for r in batch]),
            "ids": json_list([r.id for r in batch]),
            "names": json_list([r.name for r in batch]),
            "ats": json.dumps([None if s.at is None else s.at.isoformat() for s in schedules]),
            "afters": json.dumps([s.after for s in schedules]),
            "periods": json.dumps([s.every for s in schedules]),
            "channel": self.channel,
            "horizon": HORIZON,
        }

    async def cancel_reminder_on(self, conn: Conn, type: str, id: str, name: str) -> bool:
        """Delete a reminder; False if there was none."""
        params = {"type": type, "id": id, "name": name}
        return await self._row(conn, self.q.cancel_reminder, params) is not None

    async def retry_reminder_on(self, conn: Conn, reminder: Reminder, delay: float) -> None:
        """After a failed firing: due again in ``delay`` seconds."""
        await self._rows(conn, self.q.retry_reminder, {**_reminder_key(reminder), "delay": delay})


def advance_params(batch: list[Reminder]) -> dict[str, str]:
    """The parameters of ``advance_reminders``."""
    return {
        "types": json_list([r.type for r in batch]),
        "ids": json_list([r.id for r in batch]),
        "names": json_list([r.name for r in batch]),
        "dues": json.dumps([r.due_at.isoformat() for r in batch]),
    }


class PostgresTransaction:
    """The records role inside one transaction, on its connection."""

    def __init__(
        self, conn: Conn, ops: Ops, config: StoreConfig, expiring: Callable[[], None]
    ) -> None:
        self._conn = conn
        self._ops = ops
        self._config = config
        self._expiring = expiring

    async def load(self, type: str, id: str, *, for_update: bool = False) -> Record | None:
        with translated(self._config):
            return await self._ops.load_on(self._conn, type, id, for_update=for_update)

    async def save(
        self,
        type: str,
        id: str,
        text: str,
        expected: int | None,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        if ttl is not None:
            self._expiring()
        with translated(self._config):
            return await self._ops.save_on(self._conn, type, id, text, expected, ttl, sliding)

    async def delete(self, type: str, id: str, expected: int | None) -> bool:
        with translated(self._config):
            return await self._ops.delete_on(self._conn, type, id, expected)

    async def save_binary(
        self, type: str, id: str, payload: bytes, manifest: str, expected: int | None
    ) -> Record:
        with translated(self._config):
            return await self._ops.save_binary_on(self._conn, type, id, payload, manifest, expected)

    async def save_call(self, request: CallRequest) -> Record:
        with translated(self._config):
            return await self._ops.save_call_on(self._conn, request)

    async def applied_call(self, type: str, id: str, call_id: str) -> AppliedCall | None:
        with translated(self._config):
            return await self._ops.applied_call_on(self._conn, type, id, call_id)

    async def set_reminder(self, request: ReminderRequest) -> Reminder:
        with translated(self._config):
            return (await self._ops.set_reminders_on(self._conn, [request]))[0]

    async def cancel_reminder(self, type: str, id: str, name: str) -> bool:
        with translated(self._config):
            return await self._ops.cancel_reminder_on(self._conn, type, id, name)


def reminder_channel(config: StoreConfig) -> str:
    """The channel told of reminders set to be due soon."""
    return f"{config.channel}_reminders"


def _reminder_key(reminder: Reminder) -> dict[str, Any]:
    return {
        "type": reminder.type,
        "id": reminder.id,
        "name": reminder.name,
        "due_at": reminder.due_at,
    }
