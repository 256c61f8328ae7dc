"""The PostgreSQL backend: the only package that imports the driver (psycopg 3).

``PostgresBackend`` (``backend.py``) is a set of roles sharing one connection pool
(``connection.py``, which also translates every driver exception into a
``PgActorsError``): records (``records.py``, with the single-record statements in
``ops.py`` and their coalescing in ``coalesced.py``), queries (``queries.py``),
the change feed's source (``feed.py``), export and import (``transfer.py``), and
the schema and statistics (``admin.py``).
"""

from .backend import PostgresBackend
from .connection import build_conninfo, translate

__all__ = ["PostgresBackend", "build_conninfo", "translate"]
