"""pgactors workloads: each function builds one :data:`~benchmarks.harness.Op` on a Store."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from benchmarks.harness import RECORD_TYPE, Op
from pgactors import Store, VersionConflict


async def preload(
    store: Store, keys: Sequence[str], payload: dict[str, Any], *, chunk: int = 500
) -> None:
    """Create every key with ``payload`` using ``save_many`` in chunks."""
    for start in range(0, len(keys), chunk):
        batch = dict.fromkeys(keys[start : start + chunk], payload)
        await store.save_many(RECORD_TYPE, batch)


def save_lww(store: Store, keys: Sequence[str], payload: dict[str, Any]) -> Op:
    """``store.save`` without an expected version (last write wins) on a random key."""
    count = len(keys)

    async def op(rng: random.Random) -> int:
        await store.save(RECORD_TYPE, keys[rng.randrange(count)], payload)
        return 0

    return op


def save_cas(store: Store, keys: Sequence[str], payload: dict[str, Any]) -> Op:
    """``store.load`` then ``store.save(expected_version=...)``, retried on conflict."""
    count = len(keys)

    async def op(rng: random.Random) -> int:
        key = keys[rng.randrange(count)]
        conflicts = 0
        while True:
            record = await store.load(RECORD_TYPE, key)
            if record is None:
                raise RuntimeError(f"key {key!r} was not preloaded")
            try:
                await store.save(RECORD_TYPE, key, payload, expected_version=record.version)
            except VersionConflict:
                conflicts += 1
            else:
                return conflicts

    return op


def load(store: Store, keys: Sequence[str]) -> Op:
    """``store.load`` of a random key."""
    count = len(keys)

    async def op(rng: random.Random) -> int:
        key = keys[rng.randrange(count)]
        if await store.load(RECORD_TYPE, key) is None:
            raise RuntimeError(f"key {key!r} was not preloaded")
        return 0

    return op
