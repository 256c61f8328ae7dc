"""The postmaster of a data directory, as ``postmaster.pid`` describes it, and the
process checks (through ``/proc``) that tell a live server from a stale pid file."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Postmaster:
    """What ``postmaster.pid`` says about the server of a data directory."""

    pid: int
    socket_dir: Path | None
    port: int | None
    state: str


def read_pidfile(pgdata: Path) -> Postmaster | None:
    """Parse ``pgdata/postmaster.pid``; None if it is missing or malformed."""
    try:
        lines = (pgdata / "postmaster.pid").read_text(errors="replace").splitlines()
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
    return Postmaster(
        pid=pid,
        socket_dir=Path(line(4)) if line(4) else None,
        port=port,
        state=line(7),
    )


def running_postmaster(pgdata: Path) -> Postmaster | None:
    """Parse postmaster.pid; None unless its postmaster process is alive."""
    postmaster = read_pidfile(pgdata)
    if postmaster is None or not is_postmaster(postmaster.pid):
        return None
    return postmaster


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, ...)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def pid_exists(pid: int) -> bool:
    """True if the pid is in use at all, zombies included."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_alive(pid: int) -> bool:
    """True if the pid is a live (not zombie) process."""
    if not pid_exists(pid):
        return False
    fields = _proc_stat(pid)
    return fields is None or fields[0] not in {"Z", "X"}


def is_postmaster(pid: int) -> bool:
    """True if the pid is a live PostgreSQL process (not a reused pid of another program)."""
    if not process_alive(pid):
        return False
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return True
    return os.path.basename(argv0).startswith(b"postgres")


def live_children(pid: int) -> list[int]:
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


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a file created or renamed in it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "Postmaster",
    "fsync_dir",
    "is_postmaster",
    "live_children",
    "pid_exists",
    "process_alive",
    "read_pidfile",
    "running_postmaster",
]
