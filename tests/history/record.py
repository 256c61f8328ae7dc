"""Recording a history: every operation of every client, with its invoke and complete
times (``time.monotonic()``), arguments and outcome.

An outcome is ``ok`` (acknowledged), ``fail`` (definitely not applied: a
``VersionConflict``), or ``unknown``: the call raised mid-flight (``StoreUnavailable``,
a timeout, any other error), so a write may or may not have committed. An operation
still running when the history is checked is ``unknown`` too.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from pgactors import PgActorsError, VersionConflict

Kind = Literal["read", "write"]
Outcome = Literal["ok", "fail", "unknown"]


@dataclass
class Op:
    """One operation on one key (a versioned register).

    A write carries a unique ``token`` (the data it writes is ``{"token": token}``) and
    ``expected`` (None: a blind write; N: compare-and-set on version N). A read's result
    is the ``version`` and ``token`` it saw (version 0, token None: no record). An ok
    write's ``version`` is the version the store returned.
    """

    id: int
    client: int
    kind: Kind
    key: str
    invoke: float
    token: str | None = None
    expected: int | None = None
    complete: float | None = None
    outcome: Outcome = "unknown"
    version: int | None = None
    error: str | None = None

    @property
    def end(self) -> float:
        """When it completed; never, for one still running."""
        return self.complete if self.complete is not None else float("inf")


@dataclass
class Invocation:
    """What a client fills in while its operation runs."""

    op: Op

    def ok(self, version: int, token: str | None = None) -> None:
        self.op.outcome, self.op.version = "ok", version
        if self.op.kind == "read":
            self.op.token = token


@dataclass
class History:
    """Operations in invocation order. ``leaks``: exceptions that were not a
    ``PgActorsError`` (the store promises that driver errors never leak)."""

    ops: list[Op] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    @asynccontextmanager
    async def invoke(
        self,
        client: int,
        kind: Kind,
        key: str,
        *,
        token: str | None = None,
        expected: int | None = None,
    ) -> AsyncIterator[Invocation]:
        """Record one operation around the block that runs it; the block calls ``ok``.

        ``VersionConflict`` makes it ``fail``; any other exception makes it ``unknown``.
        The exception is swallowed (it is recorded) unless it is a cancellation.
        """
        op = Op(next(self._ids), client, kind, key, time.monotonic(), token, expected)
        self.ops.append(op)
        invocation = Invocation(op)
        try:
            yield invocation
        except VersionConflict as exc:
            op.outcome, op.error = "fail", type(exc).__name__
        except Exception as exc:
            op.outcome, op.error = "unknown", f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, PgActorsError):
                self.leaks.append(f"op {op.id} ({kind} {key}): {type(exc).__module__}.{op.error}")
        op.complete = time.monotonic()

    def writes(self) -> list[Op]:
        return [op for op in self.ops if op.kind == "write"]

    def reads(self) -> list[Op]:
        return [op for op in self.ops if op.kind == "read"]

    def counts(self) -> dict[str, int]:
        """Operations by kind and outcome, e.g. ``{"write ok": 120, ...}``."""
        counts: dict[str, int] = {}
        for op in self.ops:
            name = f"{op.kind} {op.outcome}"
            counts[name] = counts.get(name, 0) + 1
        return counts

    def errors(self) -> dict[str, int]:
        """Operations with an unknown outcome, by exception class."""
        counts: dict[str, int] = {}
        for op in self.ops:
            if op.outcome == "unknown":
                name = (op.error or "still running").split(":", 1)[0]
                counts[name] = counts.get(name, 0) + 1
        return counts


def token_of(data: Any) -> str | None:
    """The token a record's data carries (None for data no write of ours wrote)."""
    if isinstance(data, dict):
        token = data.get("token")
        return token if isinstance(token, str) else None
    return None
