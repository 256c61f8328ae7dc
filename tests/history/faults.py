"""Fault injectors, for the server this process started (never another one).

A fault is anything with a ``kind`` and ``async inject(cluster) -> FaultEvent``; the
runner takes a list of them and injects them in turn, so new kinds plug in without
touching the runner. Each returns when the fault is over (the server is up again).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import psycopg

from pgactors.embedded import EmbeddedServer
from pgactors.postmaster import live_children
from pgactors.standby import Standby, failover_dsn


@dataclass
class Cluster:
    """What faults act on: the embedded server this process started (the primary), its
    standby if it has one, and the DSN clients use (its socket directory and port stay
    the same across restarts; with a standby it names both servers' sockets, and
    ``Failover`` keeps both in use, so it stays valid across failovers).
    """

    server: EmbeddedServer | None
    dsn: str
    standby: Standby | None = None

    @classmethod
    def replicated(
        cls,
        primary_dir: str | os.PathLike[str],
        standby_dir: str | os.PathLike[str],
        *,
        synchronous: bool = True,
    ) -> Cluster:
        """Start a primary in ``primary_dir`` and its standby in ``standby_dir``
        (synchronous unless told otherwise); clients get ``failover_dsn`` of both."""
        primary = EmbeddedServer(primary_dir)
        cluster = cls(primary, "", Standby(primary, standby_dir, synchronous=synchronous))
        try:
            primary.start()
            cluster.our_standby().start()
        except BaseException:
            cluster.stop()
            raise
        cluster.dsn = failover_dsn(primary, cluster.our_standby().server)
        return cluster

    def our_server(self) -> EmbeddedServer:
        if self.server is None:
            raise RuntimeError("this fault needs an embedded server started by this process")
        return self.server

    def our_standby(self) -> Standby:
        if self.standby is None:
            raise RuntimeError("this fault needs a standby (see Cluster.replicated)")
        return self.standby

    def stop(self) -> None:
        """Stop the standby, then the primary (whichever servers hold the roles now)."""
        try:
            if self.standby is not None:
                self.standby.stop()
        finally:
            if self.server is not None:
                self.server.stop()


async def _stopped_for(pids: Iterable[int], seconds: float) -> int:
    """SIGSTOP each of ``pids`` still alive, wait ``seconds``, SIGCONT them; how many
    were stopped."""
    stopped: list[int] = []
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        await asyncio.sleep(seconds)
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    return len(stopped)


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
        try:
            stopped = await _stopped_for(live_children(postmaster), self.duration)
        finally:
            os.kill(postmaster, signal.SIGCONT)
        detail = {"stopped": stopped + 1}
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
        # Only children of our postmaster: never a pid some other program reused.
        ours = sorted(listed.intersection(live_children(postmaster)))
        stopped = await _stopped_for(ours, self.duration)
        return FaultEvent(self.kind, start, time.monotonic(), {"stopped": stopped})


@dataclass
class Failover:
    """SIGKILL the primary, promote its standby, wait until the DSN reaches it and it
    accepts writes, then make the dead primary's data directory a fresh standby of the
    new primary (its old files deleted, a new ``pg_basebackup`` in their place).

    The rebuilt standby keeps the old primary's directory, so its socket: the 2-host DSN
    the stores were made with stays valid for every later failover (the roles swap).
    A new standby is synchronous if the one promoted was.

    ``freeze`` (seconds): first SIGSTOP the standby's WAL receiver that long, with the
    primary still taking writes, and SIGCONT it after the kill. With a synchronous
    standby the writes wait meanwhile (none is acknowledged without it); with an
    asynchronous one those acknowledged meanwhile are lost, which the checker must
    report as ``lost-write``.
    """

    freeze: float = 0.0
    timeout: float = 60.0  # liveness: until the promoted server takes writes
    kind: str = "failover"

    async def inject(self, cluster: Cluster) -> FaultEvent:
        old, standby = cluster.our_server(), cluster.our_standby()
        if not standby.is_standby():
            raise RuntimeError(f"{standby} is not a standby")
        start = time.monotonic()
        deadline = start + self.timeout
        receiver = await _wal_receiver(standby) if self.freeze > 0 else None
        try:
            if receiver is not None:
                os.kill(receiver, signal.SIGSTOP)
                await asyncio.sleep(self.freeze)
            await asyncio.to_thread(old.kill)
        finally:
            if receiver is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(receiver, signal.SIGCONT)
        killed = int(not old.is_running())
        await asyncio.to_thread(standby.promote)
        new = standby.server
        # The roles are swapped from here on, whatever happens next: the old primary is
        # dead, and stop() stops the new one (and its standby once there is one).
        cluster.server, cluster.standby = new, None
        await _until_writable(cluster.dsn, new, deadline)
        writable = time.monotonic()
        await asyncio.to_thread(shutil.rmtree, old.pgdata)
        cluster.standby = Standby(
            new, old.data_dir, name=standby.name, synchronous=standby.synchronous
        )
        await asyncio.to_thread(cluster.standby.start, max(1.0, deadline - time.monotonic()))
        detail = {
            "killed": killed,
            "froze_receiver": int(receiver is not None),
            "promoted": int(not standby.is_standby()),
            "rebuilt": int(cluster.standby.is_standby() and cluster.standby.server.is_running()),
            "writable_ms": int((writable - start) * 1000),
        }
        return FaultEvent(self.kind, start, time.monotonic(), detail)


async def _wal_receiver(standby: Standby) -> int:
    """The pid of the standby's WAL receiver, checked to be a child of its postmaster."""
    postmaster = standby.server.status().pid
    if postmaster is None:
        raise RuntimeError(f"{standby} is not running")
    async with await psycopg.AsyncConnection.connect(
        standby.dsn, autocommit=True, application_name="history-admin"
    ) as conn:
        cur = await conn.execute("SELECT pid FROM pg_stat_wal_receiver")
        row = await cur.fetchone()
    if row is None or row[0] not in live_children(postmaster):
        raise RuntimeError(f"{standby} has no WAL receiver")
    return int(row[0])


async def _until_writable(dsn: str, server: EmbeddedServer, deadline: float) -> None:
    """Poll until ``dsn`` (a read-write multi-host DSN) reaches ``server``, out of
    recovery; fail at ``deadline``."""
    want = str(server.pgdata)
    seen: object = None
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                dsn, autocommit=True, application_name="history-admin", connect_timeout=5
            ) as conn:
                cur = await conn.execute(
                    "SELECT pg_is_in_recovery(), current_setting('data_directory')"
                )
                seen = await cur.fetchone()
            if seen == (False, want):
                return
        except psycopg.OperationalError as exc:
            seen = exc
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{server} did not take writes through {dsn} in time: {seen}")
        await asyncio.sleep(0.05)


def default_faults(pause: float = 1.5, down: float = 0.5) -> list[Fault]:
    """One of each kind: pauses of ``pause`` seconds, ``down`` seconds between a SIGKILL
    and the restart, and a failover (the cluster needs a standby: ``Cluster.replicated``)."""
    return [TerminateBackends(), KillRestart(down), Pause(pause), PauseBackends(pause), Failover()]
