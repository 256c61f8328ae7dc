"""Version history: the past versions kept for the types that opted in, and their limits.

A save or delete of a type with history enabled keeps the version it replaced, in
the same transaction as the change. Retention keeps at most ``keep_versions`` past
versions per record and only those replaced less than ``keep_days`` ago (None: no
such limit; both None: keep every version). The limits apply on read at once; the
purger (or ``Store.purge_history``) frees the space later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from .checks import int_in_range
from .errors import InvalidInput
from .record import Record

MAX_KEEP_VERSIONS: Final = 1_000_000
MAX_KEEP_DAYS: Final = 36_500.0
MAX_HISTORY_LIMIT: Final = 100_000
MAX_VERSION: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class PastVersion(Record):
    """A version that a save or delete replaced: the record as it was, plus when it
    was replaced and whether by a delete (or an expiry)."""

    replaced_at: datetime = field(kw_only=True)
    deleted: bool = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """A type's history setting: recording or not, and its retention limits."""

    type: str
    enabled: bool
    keep_versions: int | None
    keep_days: float | None

    def keeps(self, rank: int, replaced_at: datetime, now: datetime) -> bool:
        """Whether the ``rank``-th newest past version (1: the newest) of a record,
        replaced at ``replaced_at``, is within the limits at ``now``."""
        if self.keep_versions is not None and rank > self.keep_versions:
            return False
        return self.keep_days is None or replaced_at > now - timedelta(days=self.keep_days)


@dataclass(frozen=True, slots=True)
class HistoryInfo:
    """A type with history (enabled, or disabled with rows kept): its setting, and how
    many past versions it keeps and their size in bytes."""

    type: str
    enabled: bool
    keep_versions: int | None
    keep_days: float | None
    rows: int
    bytes: int


def check_keep_versions(value: object) -> int | None:
    """``keep_versions`` if None or an int from 1 to the maximum, else ``InvalidInput``."""
    if value is None or int_in_range(value, 1, MAX_KEEP_VERSIONS):
        return value
    raise InvalidInput(
        f"keep_versions must be None (no count limit) or an int from 1 to "
        f"{MAX_KEEP_VERSIONS}, got {value!r}"
    )


def check_keep_days(value: object) -> float | None:
    """``keep_days`` as a float if None or a finite number > 0 (fractions allowed), else
    ``InvalidInput``."""
    if value is None:
        return None
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not 0 < value <= MAX_KEEP_DAYS
    ):
        raise InvalidInput(
            f"keep_days must be None (no age limit) or a number of days > 0 and <= "
            f"{MAX_KEEP_DAYS:g} (fractions allowed), got {value!r}"
        )
    return float(value)


def check_history_limit(value: object) -> int:
    """``limit`` of ``Store.history`` if an int from 1 to the maximum, else ``InvalidInput``."""
    if int_in_range(value, 1, MAX_HISTORY_LIMIT):
        return value
    raise InvalidInput(f"limit must be an int from 1 to {MAX_HISTORY_LIMIT}, got {value!r}")


def check_version_number(value: object) -> int:
    """A version to load: an int >= 1, else ``InvalidInput``."""
    if int_in_range(value, 1, MAX_VERSION):
        return value
    raise InvalidInput(f"version must be an int >= 1 (a record's version), got {value!r}")
