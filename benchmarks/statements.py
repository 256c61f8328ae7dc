"""The SQL the baselines run: pgactors' own named queries, composed for one schema.

Taking the text from ``pgactors.schema.queries()`` (the parsed ``sql/queries.sql``)
guarantees the psycopg peer and the pgbench scripts run exactly the statements the
store runs, with only the way values are bound differing.
"""

from __future__ import annotations

from psycopg import sql

from pgactors import StoreConfig, schema


def query(name: str, schema_name: str, table_prefix: str = "pgactors") -> str:
    """The named query (``save_lww``, ``load``, ``save_cas``...) with identifiers filled in.

    Placeholders stay psycopg-style (``%(type)s``, ``%(id)s``, ``%(data)s``, ...).
    """
    config = StoreConfig(schema=schema_name, table_prefix=table_prefix)
    idents = {key: sql.Identifier(value) for key, value in schema.identifiers(config).items()}
    return sql.SQL(schema.queries()[name]).format(**idents).as_string()
