"""Chat rooms as actors: members and a bounded history, shared by two app instances.

Two ``ActorSystem``s on one store stand for two processes of a chat service. Alice's
instance posts; Bob's instance hosts the same room, sees her messages through
``watch()``, and replies. Afterwards a fresh system reads the history back, as a
restarted service would.

Run: ``python examples/chat_rooms.py`` (``PGACTORS_DSN`` if set, else the embedded
server in ``$PGACTORS_DATA_DIR`` or ``./.pgactors``; ``pgactors server stop`` stops it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pgactors import Actor, ActorSystem, Store

HISTORY = 50  # messages kept per room


@dataclass
class Message:
    seq: int
    user: str
    text: str


@dataclass
class RoomState:
    members: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    next_seq: int = 1


class ChatRoom(Actor[RoomState]):
    async def join(self, user: str) -> list[str]:
        if user not in self.state.members:
            self.state.members.append(user)
        return list(self.state.members)

    async def post(self, user: str, text: str) -> int:
        if user not in self.state.members:
            raise PermissionError(f"{user} is not in room {self.id}")
        seq = self.state.next_seq
        self.state.messages.append(Message(seq, user, text))
        del self.state.messages[:-HISTORY]
        self.state.next_seq += 1
        return seq

    async def history(self, after: int = 0) -> list[Message]:
        return [m for m in self.state.messages if m.seq > after]


async def main() -> None:
    async with await Store.open() as store:
        await store.init_schema()
        await store.delete("ChatRoom", "lobby")  # start fresh on every run

        alices = ActorSystem(store)  # "instance A"
        bobs = ActorSystem(store)  # "instance B", same room id
        room_a, room_b = alices.actor(ChatRoom, "lobby"), bobs.actor(ChatRoom, "lobby")
        await room_a.join("alice")
        await room_b.join("bob")

        seen: list[Message] = []
        subscribed, alice_seen = asyncio.Event(), asyncio.Event()

        async def bob_watches() -> None:
            last = 0
            async for state in room_b.watch():  # first: the room as it is now
                subscribed.set()
                for message in state.messages:
                    if message.seq > last:
                        seen.append(message)
                        line = f"#{message.seq} {message.user}: {message.text}"
                        print(f"  bob's instance sees {line}")
                        last = message.seq
                if last >= 2:
                    alice_seen.set()
                if last >= 3:
                    return

        watcher = asyncio.create_task(bob_watches())
        await subscribed.wait()
        await room_a.post("alice", "hi bob")
        await room_a.post("alice", "are you there?")
        await asyncio.wait_for(alice_seen.wait(), 10)
        await room_b.post("bob", "hello alice")  # B's cached room was refreshed first
        await asyncio.wait_for(watcher, 10)

        try:
            await room_a.post("mallory", "spam")
        except PermissionError as exc:
            print(f"refused: {exc}")

        await alices.shutdown()
        await bobs.shutdown()

        async with ActorSystem(store) as restarted:
            history = await restarted.actor(ChatRoom, "lobby").history()
            print("history after restart:", [f"{m.user}: {m.text}" for m in history])
            members = await restarted.actor(ChatRoom, "lobby").join("carol")
            print("members:", members)


if __name__ == "__main__":
    asyncio.run(main())
