"""Game sessions as actors, queried by player (the seeds' session store, without its SQL).

Each session is an actor (``GameSession/<id>``) holding the player, difficulty, score and
completion time. The stored JSON is exactly those fields, so the store's query API finds
a player's sessions, the active ones and the hard ones, and ``aggregate`` gives the
statistics per player (the seeds' ``get_session_stats``). Each player is an actor too
(``Player/<id>``) keeping the ids of its sessions: an index kept by the runtime, read
with one ``load_many``, for when a query per lookup is too much.

Run: ``python examples/game_sessions.py`` (``PGACTORS_DSN`` if set, else the embedded
server in ``$PGACTORS_DATA_DIR`` or ``./.pgactors``; ``pgactors server stop`` stops it).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from pgactors import Actor, ActorSystem, Store
from pgactors.objects import state_from_json


@dataclass
class SessionState:
    player_id: str = ""
    difficulty: str = ""
    score: int = 0
    started_at: float = 0.0
    completed_at: float | None = None


class GameSession(Actor[SessionState]):
    async def start(self, player_id: str, difficulty: str, now: float) -> None:
        if self.state.player_id:
            raise ValueError(f"session {self.id} already started")
        self.state.player_id, self.state.difficulty, self.state.started_at = (
            player_id,
            difficulty,
            now,
        )

    async def score_points(self, points: int) -> int:
        if self.state.completed_at is not None:
            raise ValueError(f"session {self.id} is over")
        self.state.score += points
        return self.state.score

    async def complete(self, now: float) -> None:
        self.state.completed_at = now


@dataclass
class PlayerState:
    sessions: list[str] = field(default_factory=list)


class Player(Actor[PlayerState]):
    async def add_session(self, session_id: str) -> None:
        if session_id not in self.state.sessions:
            self.state.sessions.append(session_id)

    async def session_ids(self) -> list[str]:
        return list(self.state.sessions)


async def sessions_of(system: ActorSystem, player_id: str) -> list[SessionState]:
    """Every session of a player, in one round trip for the sessions themselves."""
    ids = await system.actor(Player, player_id).session_ids()
    records = await system.store.load_many("GameSession", ids)
    return [state_from_json(SessionState, records[i].data) for i in ids if i in records]


async def main() -> None:
    async with await Store.open() as store:
        await store.init_schema()
        for type in ("GameSession", "Player"):  # start fresh on every run
            await store.delete_many(type, await store.list_ids(type))

        plays = [
            ("s1", "ann", "easy", [10, 20], True),
            ("s2", "ann", "hard", [50], True),
            ("s3", "ann", "hard", [5], False),
            ("s4", "bob", "easy", [1, 2, 3], True),
        ]
        async with ActorSystem(store) as system:
            for session_id, player_id, difficulty, points, done in plays:
                session = system.actor(GameSession, session_id)
                await session.start(player_id, difficulty, time.time())
                await system.actor(Player, player_id).add_session(session_id)
                for p in points:
                    await session.score_points(p)
                if done:
                    await session.complete(time.time())

        async with ActorSystem(store) as system:  # a restarted service
            for player_id in ("ann", "bob"):
                sessions = await sessions_of(system, player_id)
                completed = [s for s in sessions if s.completed_at is not None]
                hard = [s for s in sessions if s.difficulty == "hard"]
                best = max((s.score for s in sessions), default=0)
                print(
                    f"{player_id}: {len(sessions)} sessions, {len(completed)} completed, "
                    f"{len(hard)} hard, best score {best}, "
                    f"total {sum(s.score for s in sessions)}"
                )

        by_score = await store.query("GameSession", {"player_id": "ann"}, order_by="-score")
        print("ann's sessions by score:", [r.id for r in by_score.items])
        active = await store.query("GameSession", {"completed_at": None})
        print("active sessions:", [(r.id, r.data["player_id"]) for r in active.items])
        hard = await store.count("GameSession", {"difficulty": "hard", "score": {"$gte": 10}})
        print(f"hard sessions scoring 10 or more: {hard}")
        stats = await store.aggregate(
            "GameSession",
            group_by="player_id",
            metrics={"sessions": "count", "best": ("max", "score"), "avg": ("avg", "score")},
        )
        for row in stats:
            print(
                f"stats {row['player_id']}: {row['sessions']} sessions, best {row['best']}, "
                f"average {row['avg']:.1f}"
            )


if __name__ == "__main__":
    asyncio.run(main())
