"""Checking a history of versioned registers and a change feed.

Each key is a register whose value carries a version. The checks:

- **reads**: a read returns a value some write of that key wrote (ok or unknown, invoked
  before the read completed), at the version that write got; never a version older than
  one acknowledged (write completed, or read completed) before the read began;
- **compare-and-set**: no two writes win the same ``(key, version)``; an acknowledged
  compare-and-set on version N got version N + 1;
- **durability**: the final state of each key is at a version >= every acknowledged
  write's, and holds the data the write at that version wrote;
- **the change feed**: positions contiguous (no gap, no duplicate); per key, versions in
  order, each exactly once, 1 to the final version with none missing; every acknowledged
  write appears.

Each finding is an ``Anomaly``; an empty list means the history passed.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .record import History, Op


@dataclass(frozen=True)
class Anomaly:
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass(frozen=True)
class FeedChange:
    """What the consumer received: a change's key, version and position."""

    key: str
    version: int
    position: int


@dataclass(frozen=True)
class FinalState:
    """A key's state read after the run: version 0 and token None when absent."""

    version: int
    token: str | None


# Kinds that mean an acknowledged write was lost: its version is gone, holds other data,
# was acknowledged to another write too, or never reached the feed.
LOST_KINDS = frozenset({"lost-write", "duplicate-version", "feed-missing-ack"})


def check_registers(history: History, final: Mapping[str, FinalState]) -> list[Anomaly]:
    """Reads, compare-and-set and durability (see the module docstring)."""
    anomalies: list[Anomaly] = []
    writes_by_token = {op.token: op for op in history.writes() if op.token is not None}
    # (key, version) -> token, from acknowledged writes, then from what reads saw.
    owner: dict[tuple[str, int], str] = {}
    for op in history.writes():
        if op.outcome != "ok":
            continue
        assert op.version is not None and op.token is not None
        if op.expected is not None and op.version != op.expected + 1:
            anomalies.append(
                Anomaly(
                    "cas-version",
                    f"write {op.id} on {op.key} expected version "
                    f"{op.expected} but got {op.version}",
                )
            )
        other = owner.setdefault((op.key, op.version), op.token)
        if other != op.token:
            anomalies.append(
                Anomaly(
                    "duplicate-version",
                    f"writes {writes_by_token[other].id} and {op.id} "
                    f"were both acknowledged as {op.key} version {op.version}",
                )
            )
    anomalies += _check_observations(history, owner, writes_by_token)
    anomalies += _check_stale_reads(history)
    anomalies += _check_final(history, final, owner)
    return anomalies


def _check_observations(
    history: History, owner: dict[tuple[str, int], str], writes_by_token: Mapping[str, Op]
) -> list[Anomaly]:
    """Every value read was written, to that key, by a write invoked before the read
    completed, and belongs to the version read: one write's data is always seen at
    one version, and one version always holds one write's data."""
    anomalies: list[Anomaly] = []
    # token -> the version it was written as (acknowledged, or first seen by a read)
    version_of = {token: version for (_, version), token in owner.items()}
    for read in history.reads():
        if read.outcome != "ok" or not read.version:
            continue
        write = writes_by_token.get(read.token) if read.token else None
        if write is None or write.key != read.key or write.invoke > read.end:
            anomalies.append(
                Anomaly(
                    "phantom-read",
                    f"read {read.id} of {read.key} saw version "
                    f"{read.version} with token {read.token!r}, which no write wrote",
                )
            )
            continue
        if write.outcome == "fail":
            anomalies.append(
                Anomaly(
                    "phantom-read",
                    f"read {read.id} of {read.key} saw write {write.id}, "
                    "which failed (a version conflict: not applied)",
                )
            )
            continue
        assert write.token is not None
        at = version_of.setdefault(write.token, read.version)
        if at != read.version:
            anomalies.append(
                Anomaly(
                    "wrong-data",
                    f"read {read.id} of {read.key} saw write {write.id}'s data at version "
                    f"{read.version}, but it was version {at}",
                )
            )
        seen = owner.setdefault((read.key, read.version), write.token)
        if seen != write.token:
            # An acknowledged write's version holding other data: that write was lost.
            acknowledged = writes_by_token[seen].outcome == "ok"
            anomalies.append(
                Anomaly(
                    "lost-write" if acknowledged else "wrong-data",
                    f"read {read.id} of {read.key} version {read.version} "
                    f"returned write {write.id}'s data, but version {read.version} is "
                    f"write {writes_by_token[seen].id}'s",
                )
            )
    return anomalies


def _check_stale_reads(history: History) -> list[Anomaly]:
    """A read never returns a version older than one acknowledged, by a write or a read,
    before it was invoked (registers are linearizable)."""
    anomalies: list[Anomaly] = []
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in history.ops:
        if op.outcome == "ok" and op.complete is not None:
            by_key[op.key].append(op)
    for ops in by_key.values():
        done = sorted(ops, key=lambda op: op.end)
        reads = sorted((op for op in ops if op.kind == "read"), key=lambda op: op.invoke)
        newest, newest_op, i = 0, None, 0
        for read in reads:
            while i < len(done) and done[i].end < read.invoke:
                if (done[i].version or 0) > newest:
                    newest, newest_op = done[i].version or 0, done[i]
                i += 1
            if (read.version or 0) < newest:
                assert newest_op is not None
                anomalies.append(
                    Anomaly(
                        "stale-read",
                        f"read {read.id} of {read.key} saw version "
                        f"{read.version}, but {newest_op.kind} {newest_op.id} had "
                        f"acknowledged version {newest} before it began",
                    )
                )
    return anomalies


def _check_final(
    history: History, final: Mapping[str, FinalState], owner: Mapping[tuple[str, int], str]
) -> list[Anomaly]:
    """Acknowledged writes survive: each key ends at or past every acknowledged (or
    read) version, with the data of the write that made its final version."""
    anomalies: list[Anomaly] = []
    for op in history.writes():
        if op.outcome != "ok":
            continue
        state = final.get(op.key, FinalState(0, None))
        assert op.version is not None
        if state.version < op.version:
            anomalies.append(
                Anomaly(
                    "lost-write",
                    f"write {op.id} was acknowledged as {op.key} version "
                    f"{op.version}, but the final state is version {state.version}",
                )
            )
        elif state.version == op.version and state.token != op.token:
            anomalies.append(
                Anomaly(
                    "lost-write",
                    f"write {op.id} was acknowledged as {op.key} version "
                    f"{op.version}, but the final state at that version holds "
                    f"{state.token!r}",
                )
            )
    for read in history.reads():
        state = final.get(read.key, FinalState(0, None))
        if read.outcome == "ok" and (read.version or 0) > state.version:
            anomalies.append(
                Anomaly(
                    "lost-write",
                    f"read {read.id} saw {read.key} version {read.version} committed, but "
                    f"the final state is version {state.version}",
                )
            )
    writes_by_token = {op.token: op for op in history.writes() if op.token is not None}
    for key, state in final.items():
        if not state.version:
            continue
        write = writes_by_token.get(state.token) if state.token else None
        if write is None or write.key != key or write.outcome == "fail":
            anomalies.append(
                Anomaly(
                    "phantom-read",
                    f"the final state of {key} (version {state.version}) "
                    f"holds {state.token!r}, which no write of it wrote",
                )
            )
            continue
        seen = owner.get((key, state.version))
        # (An acknowledged owner of that version is reported above, as a lost write.)
        if seen is not None and seen != state.token and writes_by_token[seen].outcome != "ok":
            anomalies.append(
                Anomaly(
                    "wrong-data",
                    f"the final state of {key} (version {state.version}) "
                    f"holds write {write.id}'s data, but a read saw {seen!r} there",
                )
            )
    return anomalies


def check_feed(
    changes: Sequence[FeedChange],
    history: History,
    final: Mapping[str, FinalState],
    *,
    first_position: int = 1,
) -> list[Anomaly]:
    """The change feed, as one consumer received it from ``first_position`` on."""
    anomalies: list[Anomaly] = []
    expect = first_position
    for change in changes:
        if change.position != expect:
            what = "duplicate" if change.position < expect else "gap"
            anomalies.append(
                Anomaly(
                    f"feed-{what}",
                    f"position {change.position} came where "
                    f"{expect} was due ({change.key} version {change.version})",
                )
            )
        expect = max(expect, change.position + 1)
    versions: dict[str, list[int]] = defaultdict(list)
    for change in changes:
        versions[change.key].append(change.version)
    for key, seen in versions.items():
        if any(b <= a for a, b in itertools.pairwise(seen)):
            anomalies.append(Anomaly("feed-order", f"{key}'s versions came as {_short(seen)}"))
    for key, state in final.items():
        missing = sorted(set(range(1, state.version + 1)) - set(versions.get(key, [])))
        if missing:
            anomalies.append(
                Anomaly(
                    "feed-missing",
                    f"{key} ended at version {state.version}, but the feed "
                    f"never carried version(s) {_short(missing)}",
                )
            )
        beyond = [v for v in versions.get(key, []) if v > state.version]
        if beyond:
            anomalies.append(
                Anomaly(
                    "feed-phantom",
                    f"{key} ended at version {state.version}, but the "
                    f"feed carried version(s) {_short(beyond)}",
                )
            )
    for op in history.writes():
        if op.outcome == "ok" and op.version not in versions.get(op.key, []):
            anomalies.append(
                Anomaly(
                    "feed-missing-ack",
                    f"write {op.id} ({op.key} version {op.version}) "
                    "was acknowledged but never appeared in the feed",
                )
            )
    return anomalies


def lost_writes(anomalies: Iterable[Anomaly]) -> int:
    """How many anomalies say an acknowledged write was lost."""
    return sum(1 for a in anomalies if a.kind in LOST_KINDS)


def _short(values: Sequence[int]) -> str:
    shown = ", ".join(map(str, values[:10]))
    return f"[{shown}{', ...' if len(values) > 10 else ''}]"
