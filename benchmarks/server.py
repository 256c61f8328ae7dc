"""The server a benchmark script runs against: ``--dsn``, or a fresh embedded one."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
