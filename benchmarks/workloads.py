"""pgactors workloads: each function builds one :data:`~benchmarks.harness.Op` on a Store."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from benchmarks.harness import RECORD_TYPE, Op, Params, bump
from pgactors import Store, VersionConflict


async def open_store(
    dsn: str, schema_name: str, pool_size: int, *, coalesce: bool, changes: bool = False
) -> Store:
    """A Store whose pool holds exactly ``pool_size`` connections.

    The change feed is off unless asked for, as it is for every other system (see
    ``FEED_OFF``): the suite compares the store's own statements like for like, and
    ``benchmarks.feed`` measures what the feed costs.
    """
    return await Store.connect(
        dsn,
        schema=schema_name,
        pool_min_size=pool_size,
        pool_max_size=pool_size,
        coalesce=coalesce,
        changes=changes,
    )


def save_lww(store: Store, p: Params) -> Op:
    """``store.save`` without an expected version (last write wins) on a random key."""

    async def op(rng: random.Random) -> int:
        await store.save(RECORD_TYPE, p.key(rng), p.payload)
        return 0

    return op


def save_cas(store: Store, p: Params) -> Op:
    """``store.load``, then ``store.save(counter + 1, expected_version=...)``; retried."""

    async def op(rng: random.Random) -> int:
        key = p.key(rng)
        conflicts = 0
        while True:
            record = await store.load(RECORD_TYPE, key)
            if record is None:
                raise RuntimeError(f"key {key!r} was not preloaded")
            try:
                await store.save(
                    RECORD_TYPE, key, bump(record.data), expected_version=record.version
                )
            except VersionConflict:
                conflicts += 1
            else:
                return conflicts

    return op


def load(store: Store, p: Params) -> Op:
    """``store.load`` of a random key."""

    async def op(rng: random.Random) -> int:
        key = p.key(rng)
        if await store.load(RECORD_TYPE, key) is None:
            raise RuntimeError(f"key {key!r} was not preloaded")
        return 0

    return op


def _increment(data: Any) -> None:
    data["counter"] += 1


def update(store: Store, p: Params) -> Op:
    """``store.update`` of a random key, incrementing ``counter`` in place.

    ``store.update`` retries version conflicts itself and does not report them, so this
    workload always reports 0 conflicts.
    """

    async def op(rng: random.Random) -> int:
        await store.update(RECORD_TYPE, p.key(rng), _increment)
        return 0

    return op


def load_many(store: Store, p: Params) -> Op:
    """``store.load_many`` of ``p.batch`` distinct random keys."""

    async def op(rng: random.Random) -> int:
        keys = p.keys(rng)
        found = await store.load_many(RECORD_TYPE, keys)
        if len(found) != len(keys):
            raise RuntimeError(f"load_many found {len(found)} of {len(keys)} preloaded keys")
        return 0

    return op


def save_many(store: Store, p: Params) -> Op:
    """``store.save_many`` of ``p.batch`` distinct random keys (last write wins)."""

    async def op(rng: random.Random) -> int:
        await store.save_many(RECORD_TYPE, dict.fromkeys(p.keys(rng), p.payload))
        return 0

    return op


FACTORIES: dict[str, Callable[[Store, Params], Op]] = {
    "save_lww": save_lww,
    "save_cas": save_cas,
    "load": load,
    "update": update,
    "load_many": load_many,
    "save_many": save_many,
}
