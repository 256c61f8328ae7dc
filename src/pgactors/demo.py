"""``pgactors demo``: a short tour of the store on the embedded server (or ``--dsn``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from rich.console import Console

from .cli.render import types_table
from .config import StoreConfig
from .embedded import EmbeddedServer
from .errors import VersionConflict
from .store import Store

PROFILES = {
    "demo-alice": {"username": "alice", "score": 100, "tags": ["admin"]},
    "demo-bob": {"username": "bob", "score": 70, "tags": []},
    "demo-carol": {"username": "carol", "score": 85, "tags": ["beta"]},
}
ROOM = "demo-lobby"
WRITERS = 8
MESSAGES_EACH = 5


class DemoOptions(Protocol):
    """What the tour needs from the command's global options."""

    embedded: EmbeddedServer | None

    def config(self) -> StoreConfig:
        """The store configuration, on the embedded server when none is given (then
        ``embedded`` is that server)."""
        ...


async def run_demo(options: DemoOptions, out: Console) -> None:
    """Run the tour; raises ``PgActorsError`` on any failure."""
    started = time.perf_counter()
    config = await asyncio.to_thread(options.config)
    server = options.embedded
    out.rule("[bold]pgactors demo")
    async with await Store.connect(config) as store:
        applied = await store.init_schema()
        out.print(f"1. schema ready in {config.target()} ({applied} migration(s) applied)")
        await store.delete_many("UserProfile", list(PROFILES))
        await store.delete("ChatRoom", ROOM)

        saved = await store.save_many("UserProfile", PROFILES)
        out.print(f"2. saved {len(saved)} user profiles in one atomic batch:")
        for record in saved.values():
            out.print(f"   UserProfile/{record.id} v{record.version} {record.data}")
        await store.update("UserProfile", "demo-bob", lambda d: d | {"score": d["score"] + 15})
        bob = await store.load("UserProfile", "demo-bob")
        assert bob is not None
        out.print(f"   update() gave bob 15 points: score {bob.data['score']}, v{bob.version}")  # type: ignore[index,call-overload]

        await store.save("ChatRoom", ROOM, {"name": "Lobby", "messages": []}, expected_version=0)
        out.print(f"3. created ChatRoom/{ROOM} with create-only (expected_version=0)")
        try:
            await store.save("ChatRoom", ROOM, {"name": "Imposter"}, expected_version=0)
        except VersionConflict as exc:
            out.print(f"   a second create-only save is refused: {exc}")

        async with store.changes("ChatRoom") as feed:
            conflicts = await _post_messages(store, out)
            room = await store.load("ChatRoom", ROOM)
            assert room is not None and isinstance(room.data, dict)
            posted = len(room.data["messages"])
            out.print(
                f"4. {WRITERS} concurrent writers posted {posted} messages with "
                f"compare-and-set; {conflicts} conflicts were detected and retried, none lost"
            )
            if posted != WRITERS * MESSAGES_EACH:
                raise AssertionError(f"expected {WRITERS * MESSAGES_EACH} messages, found {posted}")
            versions = []
            async for change in feed:
                versions.append(change.version)
                if change.version == room.version:
                    break
            out.print(
                f"   the change feed delivered all {len(versions)} versions in commit order "
                f"(v{versions[0]}..v{versions[-1]}), as other instances would see them"
            )
        version_before = room.version

    if server is not None:
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        out.print("5. closed the store and restarted the embedded PostgreSQL server")
    else:
        out.print("5. closed the store")
    async with await Store.connect(config) as store:
        room = await store.load("ChatRoom", ROOM)
        assert room is not None and isinstance(room.data, dict)
        out.print(
            f"   reopened: ChatRoom/{ROOM} is at v{room.version} (was v{version_before}) "
            f"with {len(room.data['messages'])} messages -- the state survived"
        )
        info = await store.info()
    out.print(
        f"6. status: PostgreSQL {info.server_version} at {config.target()}, "
        f"{info.latency_ms:.2f} ms round trip"
    )
    out.print(types_table(info.types))
    out.print(f"[green]done in {time.perf_counter() - started:.1f} s[/green]")
    out.print(
        "try: [bold]pgactors get UserProfile demo-alice[/bold], "
        "[bold]pgactors status[/bold], [bold]pgactors psql[/bold]"
    )


async def _post_messages(store: Store, out: Console) -> int:
    conflicts = 0
    shown = 0

    async def writer(n: int) -> None:
        nonlocal conflicts, shown
        for m in range(MESSAGES_EACH):
            while True:
                room = await store.load("ChatRoom", ROOM)
                assert room is not None and isinstance(room.data, dict)
                data: dict[str, Any] = room.data
                data["messages"].append({"from": f"writer-{n}", "text": f"hello #{m}"})
                await asyncio.sleep(0)
                try:
                    await store.save("ChatRoom", ROOM, data, expected_version=room.version)
                    break
                except VersionConflict as exc:
                    conflicts += 1
                    if shown < 2:
                        shown += 1
                        out.print(f"   [yellow]conflict[/yellow] writer-{n}: {exc}; retrying")

    await asyncio.gather(*(writer(n) for n in range(WRITERS)))
    return conflicts
