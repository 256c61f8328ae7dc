"""`init_schema(partitions=N)`: a state table hash-partitioned by id.

The conformance suite also runs on a partitioned store (tests/test_conformance.py).
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgactors import InMemoryStore, InvalidInput, SchemaMismatch, Store
from pgactors.schema import migrations


def query(dsn: str, text: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(text, params).fetchall()


def partitions_of(dsn: str, schema: str) -> tuple[str | None, list[str]]:
    """The partition strategy of the state table ('h': hash) and its partitions' names."""
    table = f'"{schema}".pgactors_state'
    strategy = query(
        dsn, "SELECT partstrat FROM pg_partitioned_table WHERE partrelid = %s::regclass", table
    )
    children = query(
        dsn,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass ORDER BY c.relname",
        table,
    )
    return (strategy[0][0] if strategy else None), [row[0] for row in children]


async def test_partitioned_table_is_created(pg_dsn: str, schema_name: str) -> None:
    async with await Store.connect(pg_dsn, schema=schema_name) as store:
        assert await store.init_schema(partitions=5) == len(migrations())
        assert partitions_of(pg_dsn, schema_name) == (
            "h",
            [f"pgactors_state_p{i}" for i in range(5)],
        )
        assert all(present for _, _, present in await store.verify_schema())
        ids = [f"user-{i}" for i in range(200)]
        await store.save_many("User", {id: {"n": i} for i, id in enumerate(ids)})
        per_partition = query(
            pg_dsn,
            sql.SQL("SELECT tableoid::regclass::text, count(*) FROM {}.pgactors_state GROUP BY 1")
            .format(sql.Identifier(schema_name))
            .as_string(),
        )
        assert len(per_partition) == 5, "ids spread over every partition"
        assert sum(count for _, count in per_partition) == 200
        assert (await store.server_stats()).partitions == 5
        info = await store.info()
        assert info.table_bytes > 0 and info.index_bytes > 0  # summed over partitions
        # The same count again is a no-op; the change feed's triggers fire.
        assert await store.init_schema(partitions=5) == 0
        await store.sequence_changes()
        assert (await store.feed_stats()).last_position == 200


async def test_partitioning_an_existing_table_is_refused(pg_dsn: str, schema_name: str) -> None:
    async with await Store.connect(pg_dsn, schema=schema_name) as store:
        await store.init_schema()
        with pytest.raises(SchemaMismatch, match="exists and is not partitioned"):
            await store.init_schema(partitions=4)
        assert await store.init_schema(partitions=0) == 0
        assert partitions_of(pg_dsn, schema_name) == (None, [])


async def test_changing_the_partition_count_is_refused(pg_dsn: str, schema_name: str) -> None:
    async with await Store.connect(pg_dsn, schema=schema_name) as store:
        await store.init_schema(partitions=3)
        with pytest.raises(SchemaMismatch, match="already has 3 hash partitions, not 4"):
            await store.init_schema(partitions=4)
        assert await store.init_schema() == 0  # migrating needs no count
        await store.save("T", "a", 1)


@pytest.mark.parametrize("bad", [-1, 1025, 2.0, "4", True])
async def test_bad_partition_counts(bad: Any) -> None:
    with pytest.raises(InvalidInput, match="partitions"):
        await InMemoryStore().init_schema(partitions=bad)


async def test_later_migrations_apply_to_a_partitioned_table(pg_dsn: str, schema_name: str) -> None:
    # Future migrations use plain CREATE INDEX and ALTER TABLE ... ADD COLUMN on the
    # state table: both must cascade to every partition.
    async with await Store.connect(pg_dsn, schema=schema_name) as store:
        await store.init_schema(partitions=2)
        await store.save("T", "a", {"k": 1})
    state = sql.SQL("{}.pgactors_state").format(sql.Identifier(schema_name))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE INDEX later_gin_idx ON {} USING gin (data jsonb_path_ops)").format(
                state
            )
        )
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN later_col timestamptz").format(state))
        indexed = conn.execute(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            [f'"{schema_name}".later_gin_idx'],
        ).fetchone()
        assert indexed == (2,)
        columns = conn.execute(
            "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND a.attname = 'later_col'",
            [schema_name],
        ).fetchone()
        assert columns == (3,)  # the parent and both partitions
    async with await Store.connect(pg_dsn, schema=schema_name) as store:
        record = await store.update("T", "a", lambda d: {"k": d["k"] + 1})
        assert record.data == {"k": 2}


async def test_partitions_for_a_missing_but_recorded_table_are_refused(
    pg_dsn: str, schema_name: str
) -> None:
    async with await Store.connect(pg_dsn, schema=schema_name) as store:
        await store.init_schema()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP TABLE {}.pgactors_state").format(sql.Identifier(schema_name))
            )
        with pytest.raises(SchemaMismatch, match="missing although its migration is recorded"):
            await store.init_schema(partitions=2)
