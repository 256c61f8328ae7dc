"""A streaming-replication standby of an embedded server, its promotion, and the
multi-host DSN that follows the primary across a failover.

The standby is an ordinary embedded server in a data directory of its own (so a socket
of its own), cloned from the running primary by ``pg_basebackup`` and fed over the
primary's Unix socket through a physical replication slot. With ``synchronous=True``
the primary waits at every commit until the standby has flushed the commit to disk, so
an acknowledged write survives the loss of the primary; without, a failover can lose
the last writes. See the README's "Failover".
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from urllib.parse import quote

from .embedded import EmbeddedServer
from .errors import ServerError
from .postmaster import fsync_dir

__all__ = ["DEFAULT_STANDBY_NAME", "Standby", "failover_dsn"]

DEFAULT_STANDBY_NAME = "pgactors_standby"
"""The standby's ``application_name`` and replication slot, unless told otherwise."""

# A replication slot name: lower-case letters, digits and underscores, at most 63.
_NAME = re.compile(r"[a-z0-9_]{1,63}")
_POLL_SECONDS = 0.05
_DB_USER = "postgres"
# Appended to the clone's postgresql.auto.conf: the primary's own setting (if it has one)
# names the standby itself, and a promoted standby has no standby to wait for.
_STANDBY_CONF = """
# --- added by pgactors: once promoted, this server waits for no standby ---
synchronous_standby_names = ''
"""


def failover_dsn(*servers: EmbeddedServer) -> str:
    """A libpq URL naming every server's socket in order, that connects to the first one
    accepting writes (``target_session_attrs=read-write``): give it the primary and its
    standby, and after a failover it finds the promoted standby. Every server must run."""
    if not servers:
        raise ServerError("failover_dsn needs at least one server")
    hosts, ports = [], []
    for server in servers:
        status = server.status()
        if status.socket_dir is None or status.port is None:
            raise ServerError(
                f"the PostgreSQL server of {server.data_dir} is not running; start it to "
                "learn its socket"
            )
        if "," in str(status.socket_dir):
            raise ServerError(
                f"the socket directory {status.socket_dir} contains a comma, which a "
                "multi-host connection string cannot hold"
            )
        hosts.append(quote(str(status.socket_dir), safe="/"))
        ports.append(str(status.port))
    return (
        f"postgresql://{_DB_USER}@/postgres?host={','.join(hosts)}&port={','.join(ports)}"
        "&target_session_attrs=read-write"
    )


class Standby:
    """A standby of a running embedded ``primary``, kept in ``data_dir``.

    ``start()`` clones the primary the first time, starts the standby and waits until it
    streams; ``promote()`` turns it into a primary once the old one is stopped.
    ``name`` is its ``application_name`` and replication slot on the primary.
    """

    def __init__(
        self,
        primary: EmbeddedServer,
        data_dir: str | os.PathLike[str],
        *,
        name: str = DEFAULT_STANDBY_NAME,
        synchronous: bool = True,
    ) -> None:
        if not _NAME.fullmatch(name):
            raise ServerError(
                f"standby name must be 1 to 63 lower-case letters, digits or underscores, "
                f"got {name!r}"
            )
        self.primary = primary
        self.server = EmbeddedServer(data_dir)
        self.name = name
        self.synchronous = synchronous
        if self.server.data_dir == primary.data_dir:
            raise ServerError(f"a standby needs a data directory of its own, not {data_dir}")

    def __repr__(self) -> str:
        return f"Standby({self.primary!r}, {str(self.server.data_dir)!r}, name={self.name!r})"

    @property
    def dsn(self) -> str:
        """A libpq URL for the standby itself (read-only until promoted)."""
        return self.server.dsn

    def is_standby(self) -> bool:
        """True while the data directory is a standby's (not yet promoted)."""
        return (self.server.pgdata / "standby.signal").is_file()

    def start(self, timeout: float = 120.0) -> bool:
        """Clone the primary if this is the first start, start the standby and wait until
        it streams from the primary; if ``synchronous``, the primary then waits for it at
        every commit. Returns True if this call started the standby."""
        deadline = time.monotonic() + timeout
        if not (self.server.pgdata / "PG_VERSION").is_file():
            self._clone(deadline)
        started = self.server.start(timeout=_left(deadline))
        if self.is_standby():
            self._wait_replication("streaming", deadline)
            if self.synchronous:
                self.set_synchronous(True, timeout=_left(deadline))
        return started

    def set_synchronous(self, synchronous: bool, timeout: float = 60.0) -> None:
        """Make the primary wait for this standby at every commit (True), or not (False).

        While synchronous, the primary's writes block whenever the standby is down."""
        deadline = time.monotonic() + timeout
        value = f'"{self.name}"' if synchronous else ""
        self._primary_sql(f"ALTER SYSTEM SET synchronous_standby_names = '{value}'", deadline)
        self._primary_sql("SELECT pg_reload_conf()", deadline)
        self.synchronous = synchronous
        if synchronous:
            self._wait_replication("streaming", deadline, sync=True)

    def promote(self, timeout: float = 60.0, *, force: bool = False) -> None:
        """Turn the standby into a primary, after replaying all the WAL it received.

        Refuses while the old primary runs (two primaries would both take writes), unless
        ``force``: stop or kill the primary first."""
        if not force and self.primary.is_running():
            raise ServerError(
                f"the primary of {self.primary.data_dir} is still running: stop it "
                "before promoting its standby, or two servers would take writes"
            )
        if not self.is_standby():
            raise ServerError(f"{self.server.data_dir} is not a standby (already promoted?)")
        code, output = self.server.run_program(
            "pg_ctl",
            ["promote", "-D", str(self.server.pgdata), "-w", "-t", str(max(1, int(timeout)))],
            timeout=timeout,
        )
        if code != 0:
            raise ServerError(
                f"could not promote the standby in {self.server.data_dir}: pg_ctl exited "
                f"with code {code}: {' '.join(output.split())}"
            )

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the standby (or the promoted server). While it is a synchronous standby,
        the primary's writes then wait until it is back."""
        return self.server.stop(timeout=timeout)

    # --- internals ---

    def _clone(self, deadline: float) -> None:
        """pg_basebackup the primary into a scratch directory, then rename it into place."""
        primary = self.primary.status()
        if primary.socket_dir is None or primary.port is None:
            raise ServerError(
                f"the primary of {self.primary.data_dir} is not running; start it first"
            )
        self._drop_stale_slot(deadline)
        scratch = self.server.data_dir / "pgdata.basebackup"
        shutil.rmtree(scratch, ignore_errors=True)
        conninfo = " ".join(
            f"{key}={_conninfo_value(value)}"
            for key, value in (
                ("host", str(primary.socket_dir)),
                ("port", str(primary.port)),
                ("user", _DB_USER),
                ("application_name", self.name),
            )
        )
        code, output = self.server.run_program(
            "pg_basebackup",
            # -R: standby.signal and primary_conninfo; -C -S: a replication slot.
            [
                *("-D", str(scratch), "-d", conninfo, "-X", "stream", "-c", "fast"),
                *("-R", "-C", "-S", self.name, "-w"),
            ],
            timeout=_left(deadline),
        )
        if code != 0:
            shutil.rmtree(scratch, ignore_errors=True)
            raise ServerError(
                f"pg_basebackup of {self.primary.data_dir} into {self.server.data_dir} "
                f"failed (exit code {code}): {' '.join(output.split())}"
            )
        try:
            owner = scratch.stat()
            auto_conf = scratch / "postgresql.auto.conf"
            with auto_conf.open("a") as conf:
                conf.write(_STANDBY_CONF)
                conf.flush()
                os.fsync(conf.fileno())
            os.chown(auto_conf, owner.st_uid, owner.st_gid)
            with contextlib.suppress(FileNotFoundError):
                self.server.pgdata.rmdir()
            scratch.rename(self.server.pgdata)
            fsync_dir(self.server.data_dir)
        except OSError as exc:
            raise ServerError(f"cannot finish the standby in {self.server.pgdata}: {exc}") from exc

    def _drop_stale_slot(self, deadline: float) -> None:
        """Drop an inactive slot of this name (a discarded standby's); refuse an active one."""
        active = self._primary_sql(
            f"SELECT active FROM pg_replication_slots WHERE slot_name = '{self.name}'", deadline
        )
        if active == "t":
            raise ServerError(
                f"a standby named {self.name!r} already streams from {self.primary.data_dir}: "
                "choose another name"
            )
        if active == "f":
            self._primary_sql(f"SELECT pg_drop_replication_slot('{self.name}')", deadline)

    def _wait_replication(self, state: str, deadline: float, *, sync: bool = False) -> None:
        """Poll the primary until this standby's connection is in ``state`` (and sync)."""
        query = (
            "SELECT state || ' ' || sync_state FROM pg_stat_replication "
            f"WHERE application_name = '{self.name}'"
        )
        seen = ""
        while True:
            seen = self._primary_sql(query, deadline)
            words = seen.split()
            if words[:1] == [state] and (not sync or words[1:] == ["sync"]):
                return
            if time.monotonic() >= deadline:
                wanted = f"{state}, synchronous" if sync else state
                raise ServerError(
                    f"the standby in {self.server.data_dir} did not become {wanted} in time "
                    f"(replication: {seen or 'not connected'}); see {self.server.log_path}"
                )
            time.sleep(_POLL_SECONDS)

    def _primary_sql(self, sql: str, deadline: float) -> str:
        """Run one statement on the primary with the wheel's psql; return its output."""
        code, output = self.primary.run_program(
            "psql",
            [self.primary.dsn, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
            timeout=_left(deadline),
        )
        if code != 0:
            raise ServerError(
                f"cannot run {sql!r} on the primary of {self.primary.data_dir}: "
                f"{' '.join(output.split())}"
            )
        return output.strip()


def _left(deadline: float) -> float:
    return max(1.0, deadline - time.monotonic())


def _conninfo_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
