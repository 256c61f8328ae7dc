"""The change feed: every committed change, in commit order, gap-free across reconnects.

Writers append to a durable log; positions are numbered after commit, contiguous and
in commit order (see ``sql/migrations/0008_lean_changes.sql``). Each numbering pass
sends one notification naming the range of positions it numbered (``range_payload``).
One ``ChangeFeed`` per store owns one listener connection and, for each notification,
reads the new changes from the log once for all its ``changes()`` streams.
Notifications are a fast path, never the source of truth: on reconnecting, and when
quiet, a stream reads whatever it missed from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Literal, Protocol, Self

from .checks import int_in_range
from .errors import (
    ChangesExpired,
    ChangesLost,
    ConfigError,
    InvalidInput,
    PgActorsError,
    SchemaMismatch,
)
from .record import check_type

logger = logging.getLogger("pgactors.changes")

FETCH_LIMIT = 1000
POLL_INTERVAL = 1.0
PRUNE_INTERVAL = 60.0
MAX_BACKOFF = 5.0


@dataclass(frozen=True, slots=True)
class Change:
    """One committed change: the record's key, its new version, and where it stands.

    ``position`` is a totally ordered resume point: pass it as ``since`` to resume
    right after this change.
    """

    type: str
    id: str
    version: int
    op: Literal["save", "delete"]
    at: datetime
    position: int

    def payload(self) -> str:
        """The change as JSON (notifications carry ranges, see ``range_payload``)."""
        return json.dumps(
            {
                "type": self.type,
                "id": self.id,
                "version": self.version,
                "op": self.op,
                "position": self.position,
                "at": self.at.isoformat(),
            }
        )

    @classmethod
    def from_payload(cls, payload: str) -> Change:
        """Parse ``payload()``."""
        raw = json.loads(payload)
        return cls(
            raw["type"],
            raw["id"],
            int(raw["version"]),
            raw["op"],
            datetime.fromisoformat(raw["at"]),
            int(raw["position"]),
        )


def range_payload(first: int, last: int) -> str:
    """The notification of one numbering pass: positions ``first`` to ``last``, inclusive.

    PostgreSQL's ``sequence_changes`` sends the same fields (spaced differently).
    """
    return json.dumps({"from": first, "to": last})


def parse_range(payload: str) -> tuple[int, int] | None:
    """The range a notification names; None for a payload that is not a range."""
    try:
        raw = json.loads(payload)
        return int(raw["from"]), int(raw["to"])
    except (ValueError, TypeError, KeyError):
        return None


class FeedListener(Protocol):
    """A dedicated connection that receives change notifications."""

    async def connect(self) -> None:
        """Connect and start listening; raise if notifications cannot arrive."""
        ...

    async def wait(self, seconds: float) -> list[str]:
        """Notification payloads, as soon as any arrive; empty after ``seconds``."""
        ...

    async def ping(self) -> None:
        """Check that the connection is alive."""
        ...

    async def close(self) -> None:
        """Stop listening and disconnect."""
        ...


class FeedSource(Protocol):
    """What the change feed needs from a backend."""

    async def feed_state(self) -> tuple[int, int]:
        """The newest numbered position and the newest pruned one."""
        ...

    async def fetch_changes(
        self, after: int, types: Sequence[str] | None, limit: int
    ) -> list[Change]:
        """Numbered changes after ``after``, in position order."""
        ...

    async def sequence_changes(self) -> int:
        """Number the committed changes not yet numbered, and notify; return how many."""
        ...

    async def prune_changes(self) -> int:
        """Delete changes older than the retention; return how many."""
        ...

    def feed_listener(self) -> FeedListener:
        """A new, unconnected listener."""
        ...

    def check_listen(self) -> None:
        """Raise ``ConfigError`` if listeners cannot work here (a transaction pooler)."""
        ...


@dataclass(eq=False)
class Subscriber:
    """One stream's place in the feed: its types, last position, and queue (or sink)."""

    types: frozenset[str] | None
    last: int
    queue: asyncio.Queue[Change | BaseException] = field(default_factory=asyncio.Queue)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    failed: bool = False
    # Called at delivery instead of queueing (a watcher, see ``ChangeFeed.watch``).
    sink: Callable[[Change | BaseException], None] | None = None

    def accept(self, change: Change) -> None:
        if change.position <= self.last:
            return
        self.last = change.position
        if self.types is None or change.type in self.types:
            if self.sink is not None:
                self.sink(change)
            else:
                self.queue.put_nowait(change)

    def fail(self, exc: BaseException) -> None:
        if not self.failed:
            self.failed = True
            if self.sink is not None:
                self.sink(exc)
            else:
                self.queue.put_nowait(exc)


class ChangeFeed:
    """One listener per store, fanned out to every ``changes()`` stream."""

    def __init__(
        self,
        source: FeedSource,
        *,
        poll_interval: float = POLL_INTERVAL,
        prune_interval: float = PRUNE_INTERVAL,
    ) -> None:
        self._source = source
        self._poll_interval = poll_interval
        self._prune_interval = prune_interval
        self._subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()  # the running listener task's own stop flag
        self.reconnects = 0
        self._live = False
        self._on_live: list[Callable[[bool], None]] = []

    @property
    def live(self) -> bool:
        """True while the listener is connected and has caught up with the log since."""
        return self._live

    def on_live(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(live)`` whenever :attr:`live` changes."""
        self._on_live.append(callback)

    def _set_live(self, live: bool) -> None:
        if self._task is not asyncio.current_task():
            return  # a listener being stopped while a newer one runs
        if live != self._live:
            self._live = live
            for callback in list(self._on_live):
                callback(live)

    async def watch(
        self, sink: Callable[[Change | BaseException], None], since: int | None = None
    ) -> Subscriber:
        """Like :meth:`subscribe` for every type, but each change (or the failure that
        ends it) is handed to ``sink`` at delivery, in the feed's task, with no queue."""
        return await self.subscribe(None, since, sink=sink)

    async def subscribe(
        self,
        types: Sequence[str] | None,
        since: int | None,
        *,
        sink: Callable[[Change | BaseException], None] | None = None,
    ) -> Subscriber:
        """Register a stream starting after ``since`` (None: now; 0: oldest retained)."""
        wanted = _check_types(types)
        since = _check_since(since)
        head, pruned = await self._source.feed_state()
        if since is None:
            last = head
        elif since == 0:
            last = pruned
        elif since < pruned:
            raise ChangesExpired(since, pruned)
        elif since > head:
            raise ChangesLost(since, head)
        else:
            last = since
        subscriber = Subscriber(wanted, last, sink=sink)
        self._subscribers.add(subscriber)
        if self._task is None or self._task.done():
            self._stop = asyncio.Event()
            self._task = asyncio.create_task(self._run(self._stop), name="pgactors-change-feed")
        async with subscriber.lock:
            await self._fill(subscriber)
        return subscriber

    async def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget a stream; the listener stops with the last one."""
        self._subscribers.discard(subscriber)
        if not self._subscribers:
            # Only the listener: a stream subscribing meanwhile gets a new one, and lives.
            await self._stop_listener()

    async def close(self) -> None:
        """Stop the listener task; open streams end (their iteration stops)."""
        await self._stop_listener()
        for subscriber in self._subscribers:
            subscriber.fail(StopAsyncIteration())
        self._subscribers.clear()

    async def _stop_listener(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()  # that task's flag: a listener started later has its own
        if self._live:
            self._live = False
            for callback in list(self._on_live):
                callback(False)
        # A cancellation that lands as a wait completes can be swallowed (asyncio before
        # 3.12), so the task also checks its flag, and we cancel again.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)

    async def _run(self, stop: asyncio.Event) -> None:
        backoff = 0.1
        listener = self._source.feed_listener()
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        try:
            while not stop.is_set():
                try:
                    await listener.connect()
                    backoff = 0.1
                    await self._catch_up()
                    self._set_live(True)
                    while not stop.is_set():
                        payloads = await listener.wait(self._poll_interval)
                        ranges = [r for r in map(parse_range, payloads) if r is not None]
                        if ranges:
                            await self._dispatch(max(last for _, last in ranges))
                        if payloads:
                            continue
                        await listener.ping()
                        await self._catch_up()
                        if loop.time() >= next_prune:
                            next_prune = loop.time() + self._prune_interval
                            await self._source.prune_changes()
                except (ConfigError, SchemaMismatch) as exc:
                    for subscriber in self._subscribers:
                        subscriber.fail(exc)
                    return
                except (PgActorsError, OSError) as exc:
                    self._set_live(False)
                    self.reconnects += 1
                    logger.warning("change feed connection lost, reconnecting: %s", exc)
                    await listener.close()
                    await asyncio.sleep(backoff * random.uniform(0.5, 1.0))  # noqa: S311
                    backoff = min(backoff * 2, MAX_BACKOFF)
        except Exception as exc:
            # Never leave a stream waiting on a listener that is gone.
            for subscriber in self._subscribers:
                subscriber.fail(exc)
            raise
        finally:
            self._set_live(False)
            await listener.close()

    async def _catch_up(self) -> None:
        await self._source.sequence_changes()
        for subscriber in list(self._subscribers):
            async with subscriber.lock:
                await self._fill(subscriber)

    async def _dispatch(self, upto: int) -> None:
        """Deliver the changes through ``upto`` (numbered, so in the log) to every stream,
        reading the log once for all of them."""
        behind = [s for s in self._subscribers if s.last < upto and not s.failed]
        if not behind:
            return
        async with contextlib.AsyncExitStack() as locks:
            for subscriber in behind:
                await locks.enter_async_context(subscriber.lock)
            after = min(s.last for s in behind)
            # Every type, so that a gap (changes pruned meanwhile) shows.
            batch = await self._source.fetch_changes(after, None, FETCH_LIMIT)
            if not batch or batch[0].position != after + 1 or len(batch) == FETCH_LIMIT:
                # Pruned past a stream, or a long way behind: read the log per stream.
                for subscriber in behind:
                    await self._fill(subscriber)
                return
            for subscriber in behind:
                for change in batch:
                    subscriber.accept(change)

    async def _fill(self, subscriber: Subscriber) -> None:
        """Deliver every logged change after the subscriber's position (lock held)."""
        if subscriber.failed:
            return
        head, pruned = await self._source.feed_state()
        if subscriber.last < pruned:
            subscriber.fail(ChangesExpired(subscriber.last, pruned))
            return
        if subscriber.last > head:  # positions only grow, unless changes were lost
            subscriber.fail(ChangesLost(subscriber.last, head))
            return
        types = sorted(subscriber.types) if subscriber.types is not None else None
        while True:
            batch = await self._source.fetch_changes(subscriber.last, types, FETCH_LIMIT)
            for change in batch:
                subscriber.accept(change)
            if len(batch) < FETCH_LIMIT:
                break
        subscriber.last = max(subscriber.last, head)


class Sequencer:
    """Numbers committed changes soon after writes, one run at a time, off the caller's path.

    Writes call :meth:`kick`; if a run is going, one more run follows it, so every
    write is numbered (and notified) by a run that started after it committed. Under a
    stream of writes, runs are spaced ``min_interval`` apart while ``listened()`` says a
    listener waits for them, and ``quiet_interval`` apart while none does: each run is
    a transaction of its own, which costs the writes beside it. ``heavy``, a rate and an
    interval: while the last run numbered changes faster than that rate (changes a
    second since the run before), listened runs are spaced that interval apart.
    """

    def __init__(
        self,
        run: Callable[[], Awaitable[int]],
        *,
        max_rows: int,
        min_interval: float = 0.0,
        quiet_interval: float | None = None,
        heavy: tuple[float, float] | None = None,
        listened: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self._run = run
        self._max_rows = max_rows
        self._min_interval = min_interval
        self._quiet_interval = min_interval if quiet_interval is None else quiet_interval
        self._listened = listened
        self._heavy = heavy
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._last_run = 0.0
        self._rate = 0.0  # changes a second numbered by the last run

    def kick(self) -> None:
        """Ask for a run (cheap; never waits)."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Under a stream of writes, wait a moment so one run numbers many of them.
            interval = self._min_interval
            if self._listened is not None and not await self._listened():
                interval = self._quiet_interval
            elif self._heavy is not None and self._rate > self._heavy[0]:
                interval = self._heavy[1]
            wait = self._last_run + interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._again = False
            previous, self._last_run = self._last_run, loop.time()
            try:
                numbered = await self._run()
                self._rate = numbered / max(self._last_run - previous, 1e-6)
            except PgActorsError as exc:
                # Listeners number pending changes on their next poll.
                logger.debug("numbering changes failed: %s", exc)
                return
            if not self._again and numbered < self._max_rows:
                return

    async def drain(self) -> None:
        """Wait for the current run (before closing the store)."""
        task = self._task
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await task


class ChangeStream:
    """``async for change in store.changes(...)``; or ``async with`` it to subscribe first."""

    def __init__(self, feed: ChangeFeed, types: Sequence[str] | None, since: int | None) -> None:
        self._feed = feed
        self._types = types
        self._since = since
        self._subscriber: Subscriber | None = None
        self._starting = asyncio.Lock()
        self._closed = False

    async def start(self) -> Self:
        """Subscribe now (so that ``since=None`` means now, not at the first read)."""
        async with self._starting:  # concurrent first reads subscribe once
            if self._subscriber is None and not self._closed:
                subscriber = await self._feed.subscribe(self._types, self._since)
                if self._closed:
                    await self._feed.unsubscribe(subscriber)
                else:
                    self._subscriber = subscriber
        return self

    @property
    def position(self) -> int | None:
        """The position of the last change this stream has passed (delivered or filtered)."""
        return self._subscriber.last if self._subscriber else None

    async def close(self) -> None:
        """Unsubscribe; a pending read ends (iteration stops)."""
        self._closed = True
        if self._subscriber is not None:
            subscriber, self._subscriber = self._subscriber, None
            subscriber.fail(StopAsyncIteration())
            await self._feed.unsubscribe(subscriber)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Change:
        if self._closed:
            raise StopAsyncIteration
        await self.start()
        if self._subscriber is None:  # closed while subscribing
            raise StopAsyncIteration
        item = await self._subscriber.queue.get()
        if isinstance(item, BaseException):
            await self.close()
            if isinstance(item, StopAsyncIteration):
                raise StopAsyncIteration
            raise item
        return item


def _check_types(types: Sequence[str] | None) -> frozenset[str] | None:
    if types is None:
        return None
    if isinstance(types, str):
        types = [types]
    return frozenset(check_type(t) for t in types)


def _check_since(since: object) -> int | None:
    if since is None:
        return None
    if isinstance(since, str) and since.isdigit():
        since = int(since)
    if not int_in_range(since, 0):
        raise InvalidInput(f"since must be None, 0 or a position (an int >= 0), got {since!r}")
    return since
