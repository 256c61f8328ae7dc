"""A real PgBouncer in front of the test server, for the tests that need one.

Debian's ``pgbouncer`` package (``.ci/run`` installs it). It listens on a free loopback
port and forwards to the embedded server's Unix socket. PgBouncer refuses to run as
root, so as root it runs as the embedded server's service account (``-u``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg

START_SECONDS = 15.0


def pgbouncer_binary() -> str | None:
    """The pgbouncer executable (Debian puts it in /usr/sbin), or None."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgBouncer:
    """One pgbouncer process in ``pool_mode`` (``transaction`` or ``session``)."""

    def __init__(self, workdir: Path, server_dsn: str, pool_mode: str) -> None:
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError("pgbouncer is not installed (apt-get install pgbouncer)")
        self.binary = binary
        self.workdir = workdir
        self.pool_mode = pool_mode
        url = urlsplit(server_dsn)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.user = url.username or "postgres"
        self.database = url.path.lstrip("/") or self.user
        self.server_host = query.get("host") or url.hostname or "localhost"
        self.server_port = int(query.get("port") or url.port or 5432)
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        """Where clients connect: the pooler, on loopback."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _config(self) -> str:
        return "\n".join(
            [
                "[databases]",
                f"{self.database} = host={self.server_host} port={self.server_port} "
                f"dbname={self.database} user={self.user}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {self.port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {self.workdir / 'userlist.txt'}",
                f"pool_mode = {self.pool_mode}",
                "max_client_conn = 500",
                "default_pool_size = 20",
                f"logfile = {self.workdir / 'pgbouncer.log'}",
                "ignore_startup_parameters = extra_float_digits",
                f"admin_users = {self.user}",
                "",
            ]
        )

    def start(self) -> None:
        """Start it and wait until it answers a query."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "userlist.txt").write_text(f'"{self.user}" ""\n')
        ini = self.workdir / "pgbouncer.ini"
        ini.write_text(self._config())
        command = [self.binary, str(ini)]
        if os.geteuid() == 0:
            # PgBouncer will not run as root: run it as the account that owns the server.
            owner = pwd.getpwuid(os.stat(self.server_host).st_uid).pw_name
            for path in (self.workdir, *self.workdir.iterdir()):
                shutil.chown(path, owner)
            os.chmod(self.workdir, 0o700)
            parent = self.workdir.parent
            os.chmod(parent, os.stat(parent).st_mode | 0o001)
            command = [self.binary, "-u", owner, str(ini)]
        # PgBouncer logs to stderr as well as to its log file: a pipe nobody reads fills
        # up after a few hundred lines and blocks it, so it writes to a file.
        with open(self.workdir / "stderr.log", "wb") as stderr:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + START_SECONDS
        while True:
            if self.process.poll() is not None:
                err = (self.workdir / "stderr.log").read_text()
                code = self.process.returncode
                raise RuntimeError(f"pgbouncer exited ({code}): {err}{self.log()}")
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)

    def log(self) -> str:
        path = self.workdir / "pgbouncer.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        """Shut it down (SIGINT: PgBouncer's safe shutdown) and wait."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
