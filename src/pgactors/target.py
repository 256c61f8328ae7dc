"""Which server to connect to: the configured one, else the embedded one.

One rule for ``Store.open``, ``Store.embedded`` and the ``pgactors`` command: a config
that names a server (``dsn`` or ``host``) is used as it is; otherwise the embedded
PostgreSQL server in the data directory is started (or reused) and the config points
at it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .config import StoreConfig
from .embedded import EmbeddedServer

__all__ = ["resolve_target"]


def resolve_target(
    config: StoreConfig,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    on_embedded: Callable[[EmbeddedServer, bool], None] | None = None,
) -> StoreConfig:
    """``config`` if it names a server, else ``config`` pointed at the embedded server.

    The embedded server lives in ``data_dir`` (default ``$PGACTORS_DATA_DIR`` or
    ``./.pgactors``) and is started if it is not running; ``on_embedded(server, started)``
    is then called, ``started`` telling whether this call started it. Blocks while the
    server starts: call it in a thread from async code.
    """
    if config.has_target:
        return config
    server = EmbeddedServer(data_dir)
    started = server.start()
    if on_embedded is not None:
        on_embedded(server, started)
    return config.replace(dsn=server.dsn)
