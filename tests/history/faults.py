"""Fault injectors, for the server this process started (never another one).

A fault is anything with a ``kind`` and ``async inject(cluster) -> FaultEvent``; the
runner takes a list of them and injects them in turn, so new kinds plug in without
touching the runner. Each returns when the fault is over (the server is up again).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Protocol

import psycopg

from pgactors.embedded import EmbeddedServer
from pgactors.postmaster import live_children


@dataclass
class Cluster:
    """What faults act on: the embedded server this process started, and its DSN
    (its socket directory and port stay the same across restarts).

    A failover fault will need a standby here too (see ``Failover``).
    """

    server: EmbeddedServer | None
    dsn: str

    def our_server(self) -> EmbeddedServer:
        if self.server is None:
            raise RuntimeError("this fault needs an embedded server started by this process")
        return self.server


@dataclass
class FaultEvent:
    """One injected fault: when it began and ended (``time.monotonic()``) and what it did,
    e.g. ``{"terminated": 5}``."""

    kind: str
    start: float
    end: float
    detail: dict[str, int] = field(default_factory=dict)


class Fault(Protocol):
    kind: str

    async def inject(self, cluster: Cluster) -> FaultEvent:
        """Inject the fault and return once it is over."""
        ...


@dataclass
class TerminateBackends:
    """``pg_terminate_backend`` every connection of the store under test (its
    ``application_name`` starts with ``prefix``: the pool's and the change feed's), from
    a separate admin connection."""

    prefix: str = "pgactors"
    kind: str = "terminate"

    async def inject(self, cluster: Cluster) -> FaultEvent:
        start = time.monotonic()
        async with await psycopg.AsyncConnection.connect(
            cluster.dsn, autocommit=True, application_name="history-admin"
        ) as conn:
            cur = await conn.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int"
                " FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
                " AND datname = current_database() AND application_name LIKE %s",
                (self.prefix.replace("%", r"\%") + "%",),
            )
            row = await cur.fetchone()
        terminated = row[0] if row else 0
        return FaultEvent(self.kind, start, time.monotonic(), {"terminated": terminated})


@dataclass
class KillRestart:
    """SIGKILL the postmaster and all its children (a crash), stay down ``down`` seconds,
    then start the server again on the same data directory (crash recovery)."""

    down: float = 0.5
    kind: str = "kill"

    async def inject(self, cluster: Cluster) -> FaultEvent:
        server = cluster.our_server()
        start = time.monotonic()
        old_pid = server.status().pid or 0
        await asyncio.to_thread(server.kill)
        killed = int(not server.is_running())
        await asyncio.sleep(self.down)
        await asyncio.to_thread(server.start)
        new_pid = server.status().pid or 0
        detail = {"killed": killed, "restarted": int(new_pid not in {0, old_pid})}
        return FaultEvent(self.kind, start, time.monotonic(), detail)


@dataclass
class Pause:
    """SIGSTOP the postmaster and every child (backends included) for ``duration``
    seconds, then SIGCONT them: a stalled server, as under a VM pause or swap storm.

    The postmaster is stopped first: a stopped parent cannot fork, nor reap a child
    that exits, so no pid we signal can meanwhile be reused by another program.
    """

    duration: float = 1.5
    kind: str = "pause"

    async def inject(self, cluster: Cluster) -> FaultEvent:
        server = cluster.our_server()
        postmaster = server.status().pid
        if postmaster is None:
            raise RuntimeError(f"{server} is not running")
        start = time.monotonic()
        os.kill(postmaster, signal.SIGSTOP)
        stopped: list[int] = []
        try:
            for pid in live_children(postmaster):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
            await asyncio.sleep(self.duration)
        finally:
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            os.kill(postmaster, signal.SIGCONT)
        detail = {"stopped": len(stopped) + 1}
        return FaultEvent(self.kind, start, time.monotonic(), detail)


@dataclass
class PauseBackends:
    """SIGSTOP only the store's backends (``application_name`` starting with
    ``prefix``) for ``duration`` seconds, then SIGCONT them: the server still accepts
    new connections while the old ones hang, some perhaps holding a row lock."""

    duration: float = 1.5
    prefix: str = "pgactors"
    kind: str = "pause-backends"

    async def inject(self, cluster: Cluster) -> FaultEvent:
        postmaster = cluster.our_server().status().pid
        if postmaster is None:
            raise RuntimeError(f"{cluster.server} is not running")
        async with await psycopg.AsyncConnection.connect(
            cluster.dsn, autocommit=True, application_name="history-admin"
        ) as conn:
            cur = await conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s",
                (self.prefix.replace("%", r"\%") + "%",),
            )
            listed = {row[0] for row in await cur.fetchall()}
        start = time.monotonic()
        stopped: list[int] = []
        try:
            # Only children of our postmaster: never a pid some other program reused.
            for pid in sorted(listed.intersection(live_children(postmaster))):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
            await asyncio.sleep(self.duration)
        finally:
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        return FaultEvent(self.kind, start, time.monotonic(), {"stopped": len(stopped)})


@dataclass
class Failover:
    """Promote a streaming standby and move clients to it. Not wired in yet.

    TODO(failover): the ``failover`` branch builds a standby + promote API. To wire it
    in: give ``Cluster`` the standby (and a DSN listing both servers, e.g.
    ``host=a,b target_session_attrs=read-write`` so the store follows the primary),
    implement ``inject`` as: stop or SIGKILL the primary, promote the standby, wait
    until it accepts writes, and report ``{"promoted": 1}``; then add ``Failover()`` to
    ``default_faults``. With synchronous replication off, acknowledged writes not yet
    replicated can be lost: the checker will report them as ``lost-write``, which is
    the point of running it.
    """

    kind: str = "failover"

    async def inject(self, cluster: Cluster) -> FaultEvent:
        raise NotImplementedError("failover needs the standby API of the failover branch")


def default_faults(pause: float = 1.5, down: float = 0.5) -> list[Fault]:
    """One of each kind that works on a lone embedded server: pauses of ``pause``
    seconds, and ``down`` seconds between a SIGKILL and the restart."""
    return [TerminateBackends(), KillRestart(down), Pause(pause), PauseBackends(pause)]
