"""``SyncTransaction``: the blocking twin of ``Transaction``."""

from __future__ import annotations

from collections.abc import (
    Callable,
)
from datetime import datetime
from typing import Any

from ..record import JSON, MISSING, AppliedCall, Encoded, Record
from ..reminders import Reminder
from ..store import Transaction
from .loop import LoopThread


class SyncTransaction:
    """The blocking view of a ``Transaction``."""

    def __init__(self, tx: Transaction, runner: LoopThread) -> None:
        self._tx = tx
        self._run = runner.run

    def load(self, type: str, id: str, *, lock: bool = False) -> Record | None:
        """Read a record as this transaction sees it (``lock``: hold its row lock)."""
        return self._run(self._tx.load(type, id, lock=lock))

    def save(
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
        return self._run(
            self._tx.save(
                type, id, data, expected_version=expected_version, ttl=ttl, sliding=sliding
            )
        )

    def delete(self, type: str, id: str, *, expected_version: int | None = None) -> bool:
        """Delete a record; False if it did not exist."""
        return self._run(self._tx.delete(type, id, expected_version=expected_version))

    def save_call(
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
        return self._run(
            self._tx.save_call(
                type, id, data, expected_version=expected_version, call_id=call_id, result=result
            )
        )

    def applied_call(self, type: str, id: str, call_id: str) -> AppliedCall | None:
        """``Store.applied_call`` as this transaction sees it."""
        return self._run(self._tx.applied_call(type, id, call_id))

    def update(
        self,
        type: str,
        id: str,
        fn: Callable[[Any], Any],
        *,
        default: Any = MISSING,
        ttl: float | None = None,
        sliding: bool = False,
    ) -> Record:
        """Read (locking), apply ``fn`` and write within this transaction."""
        return self._run(self._tx.update(type, id, fn, default=default, ttl=ttl, sliding=sliding))

    def set_reminder(
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
        return self._run(self._tx.set_reminder(type, id, name, at=at, after=after, every=every))

    def cancel_reminder(self, type: str, id: str, name: str) -> bool:
        """``Store.cancel_reminder``, committed with this transaction."""
        return self._run(self._tx.cancel_reminder(type, id, name))
