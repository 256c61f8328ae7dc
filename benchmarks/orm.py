"""SQLAlchemy 2.0 async ORM peer: what a Python user would write instead of pgactors.

A mapped class on the same ``<schema>.pgactors_state`` table (``type``, ``id``,
``version``, ``data`` JSONB, ``created_at``, ``updated_at``), the ``postgresql+psycopg``
async dialect (the same driver as pgactors, so no new driver), ``create_async_engine``
with a ``QueuePool`` of the same size as the other systems' pools, and
``async_sessionmaker(expire_on_commit=False)`` as the SQLAlchemy asyncio docs recommend.
Every call opens its own session, as a request handler would:

* save (``save``): ``session.get``, then change the object (or ``session.add`` a new
  one), ``version += 1``, ``commit``. This is the ORM's own unit-of-work idiom, the one
  the SQLAlchemy tutorial teaches; it costs BEGIN, SELECT, UPDATE and COMMIT.
* load (``load``): ``session.get``; the session closes with a ROLLBACK.
* update (``update``): ``session.get(..., with_for_update=True)``, ``counter + 1``,
  ``version += 1``, commit: the ORM's read-modify-write.
* upsert (``upsert``, off by default): ``insert().on_conflict_do_update()`` from the
  PostgreSQL dialect, the same statement as pgactors' ``save_lww``, then ``commit``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import URL, BigInteger, DateTime, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.orm.attributes import flag_modified

from benchmarks.harness import RECORD_TYPE, Op, Params, bump

STATE_TABLE = "pgactors_state"


def url_from_dsn(dsn: str) -> URL:
    """The ``postgresql+psycopg`` URL for a libpq DSN (URL or ``key=value`` conninfo).

    libpq parses the DSN; user, password and database become URL parts and every other
    parameter (``host``, ``port``, ``sslmode``...) a query parameter, which the psycopg
    dialect passes back to ``psycopg.connect``. A unix-socket directory therefore stays a
    ``?host=/path`` query parameter, as in the embedded server's DSN, where a URL host
    part could not hold it. As in libpq, a comma in ``host`` separates several hosts.
    """
    params = {key: str(value) for key, value in conninfo_to_dict(dsn).items() if value is not None}
    return URL.create(
        "postgresql+psycopg",
        username=params.pop("user", None),
        password=params.pop("password", None),
        database=params.pop("dbname", None),
        query=params,
    )


class StateColumns:
    """The mapped columns (pgactors' ``payload``, ``manifest`` and ``expires_at`` are not
    mapped: they stay NULL)."""

    type: Mapped[str] = mapped_column(Text, primary_key=True)
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    if TYPE_CHECKING:

        def __init__(self, **kwargs: Any) -> None: ...


def make_model(schema_name: str) -> type[StateColumns]:
    """The mapped class for ``<schema_name>.pgactors_state``.

    A user would write the schema into the class; the benchmark's schema is random, so
    the class is made here, once per process, with its own declarative base.
    """

    class Base(DeclarativeBase):
        pass

    class State(StateColumns, Base):
        __tablename__ = STATE_TABLE
        __table_args__ = {"schema": schema_name}  # noqa: RUF012

    return State


@dataclass(frozen=True)
class Orm:
    """The engine, the session factory and the mapped class."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    model: type[StateColumns]


async def open_orm(dsn: str, schema_name: str, pool_size: int) -> Orm:
    """An engine whose pool holds ``pool_size`` connections, all opened before it returns."""
    engine = create_async_engine(
        url_from_dsn(dsn), pool_size=pool_size, max_overflow=0, pool_timeout=60
    )
    # Open every connection now, as the other systems' pools do, not during the run.
    connections = [engine.connect() for _ in range(pool_size)]
    await asyncio.gather(*(conn.start() for conn in connections))
    await asyncio.gather(*(conn.close() for conn in connections))
    return Orm(engine, async_sessionmaker(engine, expire_on_commit=False), make_model(schema_name))


def save(orm: Orm, p: Params) -> Op:
    """``session.get``, change or add, ``version += 1``, ``commit``."""
    sessions, model = orm.sessions, orm.model

    async def op(rng: random.Random) -> int:
        key = p.key(rng)
        async with sessions() as session:
            state = await session.get(model, (RECORD_TYPE, key))
            if state is None:
                session.add(model(type=RECORD_TYPE, id=key, version=1, data=p.payload))
            else:
                state.data = p.payload
                # The benchmark writes the same document every time; a real save changes
                # it. Without this the ORM would see an equal value and leave the column
                # out of the UPDATE, sending and writing less than every other system.
                flag_modified(state, "data")
                state.version += 1
            await session.commit()
        return 0

    return op


def load(orm: Orm, p: Params) -> Op:
    """``session.get`` of a random key."""
    sessions, model = orm.sessions, orm.model

    async def op(rng: random.Random) -> int:
        key = p.key(rng)
        async with sessions() as session:
            if await session.get(model, (RECORD_TYPE, key)) is None:
                raise RuntimeError(f"key {key!r} was not preloaded")
        return 0

    return op


def update(orm: Orm, p: Params) -> Op:
    """``session.get(with_for_update=True)``, ``counter + 1``, ``version += 1``, commit."""
    sessions, model = orm.sessions, orm.model

    async def op(rng: random.Random) -> int:
        key = p.key(rng)
        async with sessions.begin() as session:
            state = await session.get(model, (RECORD_TYPE, key), with_for_update=True)
            if state is None:
                raise RuntimeError(f"key {key!r} was not preloaded")
            state.data = bump(state.data)
            state.version += 1
        return 0

    return op


def upsert(orm: Orm, p: Params) -> Op:
    """``insert(...).on_conflict_do_update(...)`` (pgactors' ``save_lww``), then commit."""
    sessions, model = orm.sessions, orm.model

    async def op(rng: random.Random) -> int:
        insert = pg_insert(model).values(type=RECORD_TYPE, id=p.key(rng), version=1, data=p.payload)
        statement = insert.on_conflict_do_update(
            index_elements=[model.type, model.id],
            set_={
                model.version: model.version + 1,
                model.data: insert.excluded.data,
                model.updated_at: func.now(),
            },
        ).returning(model.version, model.created_at, model.updated_at)
        async with sessions() as session:
            (await session.execute(statement)).one()
            await session.commit()
        return 0

    return op


FACTORIES: dict[str, Callable[[Orm, Params], Op]] = {
    "save": save,
    "load": load,
    "update": update,
    "upsert": upsert,
}
