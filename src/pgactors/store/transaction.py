"""Transactions (``Store.transaction()``), and the encoding rules they share with ``Store``."""

from __future__ import annotations

import copy
import inspect
from collections.abc import (
    Awaitable,
    Callable,
)
from datetime import datetime
from types import TracebackType
from typing import Any, TypeAlias

from ..backend import (
    Backend,
    CallRequest,
    TransactionBackend,
)
from ..errors import InvalidInput, NotFound
from ..record import (
    JSON,
    MISSING,
    AppliedCall,
    Encoded,
    Record,
    check_call_id,
    check_id,
    check_ttl,
    check_type,
    check_version,
    encode_data,
)
from ..reminders import Reminder, check_name, reminder_request

UpdateFn: TypeAlias = Callable[[Any], Any | Awaitable[Any]]


async def apply_update(fn: UpdateFn, data: Any) -> Any:
    """Run ``fn`` on ``data``; a None result means ``fn`` changed ``data`` in place."""
    result = fn(data)
    if inspect.isawaitable(result):
        result = await result
    return data if result is None else result


async def next_state(
    record: Record | None, type: str, id: str, fn: UpdateFn, default: Any, max_bytes: int
) -> tuple[str, int]:
    """The JSON text ``fn`` makes of the record (or of ``default``), and the version to expect."""
    if record is not None:
        data, expected = record.data, record.version
    elif default is MISSING:
        raise NotFound(type, id)
    else:
        data, expected = copy.deepcopy(default), 0
    return encode_data(await apply_update(fn, data), max_bytes), expected


class Transaction:
    """Operations inside ``store.transaction()``: applied in order, committed together."""

    def __init__(self, backend: TransactionBackend, max_bytes: int) -> None:
        self._backend = backend
        self._max_bytes = max_bytes

    async def load(self, type: str, id: str, *, lock: bool = False) -> Record | None:
        """Read a record as this transaction sees it; ``lock`` holds its row until the
        transaction ends (another writer of it waits; a missing record is not locked)."""
        return await self._backend.load(check_type(type), check_id(id), for_update=lock)

    async def save(
        self,
        type: str,
        id: str,
        data: JSON | Encoded,
        *,
        expected_version: int | None = None,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        """Write a record (same version and expiry rules as ``Store.save``)."""
        type, id = check_type(type), check_id(id)
        expected = check_version("expected_version", expected_version)
        seconds = check_ttl(ttl, sliding)
        if isinstance(data, Encoded) and data.text is None:
            if seconds is not None:
                raise InvalidInput("a ttl is not supported for a binary state in a transaction")
            assert data.payload is not None and data.manifest is not None
            return await self._backend.save_binary(type, id, data.payload, data.manifest, expected)
        text = text_of(data, self._max_bytes)
        return await self._backend.save(type, id, text, expected, seconds, sliding)

    async def save_call(
        self,
        type: str,
        id: str,
        data: JSON | Encoded,
        *,
        expected_version: int,
        call_id: str,
        result: JSON | Encoded = None,
    ) -> Record:
        """``Store.save_call`` inside this transaction."""
        request = call_request(type, id, data, expected_version, call_id, result, self._max_bytes)
        return await self._backend.save_call(request)

    async def applied_call(self, type: str, id: str, call_id: str) -> AppliedCall | None:
        """``Store.applied_call`` as this transaction sees it."""
        return await self._backend.applied_call(
            check_type(type), check_id(id), check_call_id(call_id)
        )

    async def delete(self, type: str, id: str, *, expected_version: int | None = None) -> bool:
        """Delete a record; False if it did not exist."""
        expected = check_version("expected_version", expected_version)
        return await self._backend.delete(check_type(type), check_id(id), expected)

    async def update(
        self,
        type: str,
        id: str,
        fn: UpdateFn,
        *,
        default: Any = MISSING,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        """Read (locking the record), apply ``fn`` and write, within this transaction."""
        type, id = check_type(type), check_id(id)
        seconds = check_ttl(ttl, sliding)
        record = await self._backend.load(type, id, for_update=True)
        text, expected = await next_state(record, type, id, fn, default, self._max_bytes)
        return await self._backend.save(type, id, text, expected, seconds, sliding)

    async def set_reminder(
        self,
        type: str,
        id: str,
        name: str,
        *,
        at: datetime | None = None,
        after: float | None = None,
        every: float | None = None,
    ) -> Reminder:
        """``Store.set_reminder``, committed with this transaction."""
        request = reminder_request(type, id, name, at, after, every)
        return await self._backend.set_reminder(request)

    async def cancel_reminder(self, type: str, id: str, name: str) -> bool:
        """``Store.cancel_reminder``, committed with this transaction."""
        return await self._backend.cancel_reminder(check_type(type), check_id(id), check_name(name))


class TransactionContext:
    """``store.transaction()``: opens the backend's transaction, yields a ``Transaction``."""

    def __init__(self, backend: Backend, max_bytes: int) -> None:
        self._cm = backend.records.transaction()
        self._max_bytes = max_bytes

    async def __aenter__(self) -> Transaction:
        return Transaction(await self._cm.__aenter__(), self._max_bytes)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._cm.__aexit__(exc_type, exc, tb)


def text_of(data: JSON | Encoded, max_bytes: int) -> str:
    """The JSON text to store: encoded now, or as ``Store.encode`` made it."""
    if isinstance(data, Encoded):
        if data.text is None:
            raise InvalidInput("a binary state cannot be saved here")
        return data.text
    return encode_data(data, max_bytes)


def call_request(
    type: str,
    id: str,
    data: JSON | Encoded,
    expected_version: int,
    call_id: str,
    result: JSON | Encoded,
    max_bytes: int,
    advance: Reminder | None = None,
) -> CallRequest:
    """A checked ``save_call``: raises ``InvalidInput`` before anything is written."""
    expected = check_version("expected_version", expected_version, allow_none=False)
    assert expected is not None
    if isinstance(result, Encoded) and result.text is None:
        raise InvalidInput("a call's result is stored as JSON: it cannot be a binary state")
    state = data if isinstance(data, Encoded) else Encoded(encode_data(data, max_bytes))
    return CallRequest(
        check_type(type),
        check_id(id),
        state,
        expected,
        check_call_id(call_id),
        text_of(result, max_bytes),
        advance,
    )
