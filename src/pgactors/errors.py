"""The single exception hierarchy of pgactors.

Every error a caller can see is a :class:`PgActorsError`. Driver exceptions are
translated at the edge (``postgres.py``) and never leak raw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class PgActorsError(Exception):
    """Base class of every error raised by pgactors."""


class ConfigError(PgActorsError, ValueError):
    """A configuration value is invalid; the message names the field and what is allowed."""


class InvalidInput(PgActorsError, ValueError):
    """A type, id or data value was refused before anything was written."""


class InvalidQuery(InvalidInput):
    """A query filter, ordering or cursor was refused before any SQL ran."""


class NotFound(PgActorsError, LookupError):
    """The record does not exist (raised where absence is an error, e.g. ``update``)."""

    def __init__(self, type: str, id: str) -> None:
        super().__init__(f"record {type}/{id!r} does not exist")
        self.type = type
        self.id = id


class VersionConflict(PgActorsError):
    """A compare-and-set failed: the stored version is not the expected one. Nothing changed.

    ``expected`` and ``actual`` describe the first conflicting record (``actual`` is 0
    when the record is missing); ``conflicts`` maps every conflicting id to
    ``(expected, actual)`` for batch operations.
    """

    def __init__(
        self,
        type: str,
        id: str,
        expected: int,
        actual: int,
        *,
        conflicts: Mapping[str, tuple[int, int]] | None = None,
    ) -> None:
        self.type = type
        self.id = id
        self.expected = expected
        self.actual = actual
        self.conflicts: dict[str, tuple[int, int]] = dict(conflicts or {id: (expected, actual)})
        if len(self.conflicts) > 1:
            listed = ", ".join(
                f"{k!r} (expected {e}, actual {a})" for k, (e, a) in sorted(self.conflicts.items())
            )
            message = f"version conflict on {len(self.conflicts)} {type} records: {listed}"
        else:
            message = f"version conflict on {type}/{id!r}: expected version {expected}, " + (
                "but the record does not exist" if actual == 0 else f"found {actual}"
            )
        super().__init__(message)

    @classmethod
    def in_batch(cls, type: str, conflicts: Mapping[str, tuple[int, int]]) -> VersionConflict:
        """The conflict of a batch: ``conflicts`` maps ids to ``(expected, actual)``."""
        first = min(conflicts)
        return cls(type, first, *conflicts[first], conflicts=conflicts)

    @classmethod
    def check(cls, type: str, id: str, expected: int | None, actual: int) -> None:
        """Raise unless ``expected`` (None: any version) is the ``actual`` one (0: absent)."""
        if expected is not None and expected != actual:
            raise cls(type, id, expected, actual)


class CallAlreadyApplied(PgActorsError):
    """``Store.save_call``: this call id is already recorded for the record, so nothing
    was saved. ``call`` is the recorded call, with its original result."""

    def __init__(self, type: str, id: str, call: Any) -> None:
        self.type = type
        self.id = id
        self.call = call
        super().__init__(
            f"call {call.call_id!r} was already applied to {type}/{id!r} at "
            f"{call.applied_at.isoformat()}: nothing was saved again"
        )


class StoreUnavailable(PgActorsError, ConnectionError):
    """The database cannot be reached or the connection was lost.

    For a write, the outcome is unknown when this is raised mid-operation: the write
    may or may not have committed.
    """


class SiloUnavailable(PgActorsError):
    """A Ray silo (``pgactors.ray``) cannot be reached: stopped, or its node is gone.
    The call may or may not have been applied."""


class StoreTimeout(StoreUnavailable):
    """An operation exceeded ``statement_timeout`` or the pool had no free connection in time."""


class SchemaMismatch(PgActorsError):
    """The database schema is missing, or newer than this version of pgactors understands."""


class ChangesExpired(PgActorsError):
    """A change feed resume point is older than the retained log: changes were pruned.

    Resume from ``oldest`` (or reload the state) instead of silently missing changes.
    """

    def __init__(self, since: int, oldest: int) -> None:
        super().__init__(
            f"changes after position {since} are no longer retained (the log now starts "
            f"after position {oldest}): resume from a newer position, or reload the state"
        )
        self.since = since
        self.oldest = oldest


class ChangesLost(ChangesExpired):
    """A change feed resume point is beyond the newest change in the log: changes this
    consumer saw are gone (a failover to a standby that had not received them), and the
    positions after it may be numbered again. Reload the state; ``oldest`` is the newest
    position the log has now."""

    def __init__(self, since: int, newest: int) -> None:
        PgActorsError.__init__(
            self,
            f"the change feed resume point {since} is beyond the newest change in the log "
            f"({newest}): changes seen there are gone (a failover to a standby that had not "
            "received them?), and positions after it may be reused: reload the state",
        )
        self.since = since
        self.oldest = newest


class DatabaseError(PgActorsError):
    """PostgreSQL refused an operation for a reason not covered by a more specific error."""


class RetryableError(DatabaseError):
    """PostgreSQL rolled the transaction back because it conflicted with a concurrent one
    (a deadlock or a serialization failure). Nothing it did was kept: run it again."""


class ImportAborted(PgActorsError):
    """An import stopped and wrote nothing: a refused record with ``strict``, or (with
    ``on_conflict="fail"``) a record that already exists.

    ``errors`` lists the refused input (``"line 3: ..."``); ``conflicts`` the
    ``(type, id)`` keys that already existed (at most 10).
    """

    def __init__(
        self,
        message: str,
        *,
        errors: Sequence[str] = (),
        conflicts: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.errors = list(errors)
        self.conflicts = list(conflicts)


class ServerError(PgActorsError):
    """The embedded PostgreSQL server could not be initialised, started or stopped."""


__all__ = [
    "ChangesExpired",
    "ChangesLost",
    "ConfigError",
    "DatabaseError",
    "ImportAborted",
    "InvalidInput",
    "NotFound",
    "PgActorsError",
    "SchemaMismatch",
    "ServerError",
    "StoreTimeout",
    "StoreUnavailable",
    "VersionConflict",
]
