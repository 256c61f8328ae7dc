"""The wheel's psql, for tests that check a server from outside pgactors."""

from __future__ import annotations

import subprocess

from pgactors.embedded import bin_path


def psql(dsn: str, sql: str) -> str:
    """Run SQL with the wheel's psql and return its unaligned output."""
    completed = subprocess.run(
        [str(bin_path("psql")), dsn, "-X", "-v", "ON_ERROR_STOP=1", "-Atc", sql],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.strip()
