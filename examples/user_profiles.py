"""Persistent objects: create, update and load user profiles; see a stale copy refused.

Run: ``python examples/user_profiles.py`` (``PGACTORS_DSN`` if set, else the embedded
server in ``$PGACTORS_DATA_DIR`` or ``./.pgactors``; ``pgactors server stop`` stops it).
"""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass, field

import pgactors
from pgactors import Store, VersionConflict, load_object, save_object


@dataclass
class UserProfile(pgactors.PersistentObject):
    username: str = ""
    score: int = 0
    badges: list[str] = field(default_factory=list)


async def main() -> None:
    async with await Store.open() as store:
        await store.init_schema()
        await store.delete("UserProfile", "user-123")  # start fresh on every run

        alice = UserProfile(id="user-123", username="alice", score=100)
        record = await save_object(store, alice)
        print(f"created {record.type}/{record.id} version {record.version}")

        loaded = await load_object(store, UserProfile, "user-123")
        assert loaded is not None
        stale = copy.copy(loaded)
        loaded.score += 20
        record = await save_object(store, loaded)
        print(f"updated to version {record.version}: {loaded}")

        stale.score = 0
        try:
            await save_object(store, stale)
        except VersionConflict as exc:
            print(f"stale copy refused: VersionConflict ({exc})")

        stored = await store.load("UserProfile", "user-123")
        assert stored is not None
        print("stored JSON:", json.dumps(stored.data, sort_keys=True))


if __name__ == "__main__":
    asyncio.run(main())
