"""The server a benchmark script runs against: ``--dsn``, or a fresh embedded one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from pgactors.embedded import EmbeddedServer


@contextmanager
def server_dsn(dsn: str | None, prefix: str) -> Iterator[str]:
    """Yield ``dsn``; without one, start an embedded server in a temp dir and stop it after."""
    if dsn is not None:
        yield dsn
        return
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    directory.chmod(0o711)  # run as root, the server's own user must pass through it
    server = EmbeddedServer(directory / "data")
    server.start()
    try:
        yield server.dsn
    finally:
        server.stop()


def server_cpu_seconds(dsn: str) -> float | None:
    """CPU seconds used so far by the PostgreSQL server of ``dsn``: its postmaster and
    every process it started, from /proc. None when it does not run on this machine."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        try:  # while connected: the backend exits once its connection closes
            postmaster = _stat(int(row[0]))[0]
        except OSError:
            return None
    ticks = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent, used = _stat(int(entry))
            except OSError:
                continue  # exited meanwhile
            if parent == postmaster or int(entry) == postmaster:
                ticks += used
    return ticks / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, int]:
    """The parent pid and the CPU ticks (user + system) of process ``pid``."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])
