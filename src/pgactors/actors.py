"""The actor runtime: turn-based actors whose state is loaded and saved for you.

::

    @dataclass
    class CounterState:
        n: int = 0

    class Counter(Actor[CounterState]):
        async def add(self, k: int) -> int:
            self.state.n += k
            return self.state.n

    system = ActorSystem(store)            # persistence="write_through" by default
    ref = system.actor(Counter, "c1")      # a proxy: await ref.add(1)
    await system.shutdown()                # flushes, deactivates; does not close the store

One call at a time per actor; calls to different actors run concurrently. Any number of
systems, in any number of processes, may host the same actor: correctness comes from
versions. A write-through call whose save meets a concurrent change reloads the state
and runs again (``turns.py``), so actor methods must be deterministic functions of
state and arguments (no side effects they cannot repeat). Cached actors follow the
change feed and reload before their next call when another instance changed them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Generic, Literal, TypeVar

from .actor_state import decode_state, encode_state, is_protobuf_class
from .changes import ChangeStream
from .codecs import BinaryCodec, ProtobufCodec
from .errors import ConfigError, InvalidInput, PgActorsError, VersionConflict
from .firing import ReminderFiring
from .objects import (
    Upcaster,
    check_versioning,
)
from .record import Encoded, check_id, check_type
from .reminders import Reminder, ReminderRequest, check_name, reminder_request
from .retry import DEFAULT_MAX_RETRIES
from .store import Store
from .turns import PESSIMISTIC_AFTER, Turns

logger = logging.getLogger("pgactors.actors")

S = TypeVar("S")
Persistence = Literal["write_through", "write_behind", "manual"]
POLICIES: tuple[str, ...] = typing.get_args(Persistence)


class Actor(Generic[S]):
    """Base class of actors; ``S`` is the state type.

    The state is stored as JSON (a dataclass, pydantic model, msgspec Struct or dict),
    or, with a ``codec``, as bytes plus a manifest (a protobuf message, raw bytes).

    Class attributes: ``type_name`` (default: the class name), ``persistence`` (None:
    the system's policy), ``codec`` (None: JSON; a protobuf state type gets a
    ``ProtobufCodec`` by default), and for JSON states ``state_version``
    and ``upcasters`` as for persistent objects (stored as the ``"_v"`` key above 1;
    keys the state type does not know are kept and written back). Override
    ``initial_state``, ``on_activate``, ``on_deactivate``.
    """

    type_name: ClassVar[str]
    persistence: ClassVar[Persistence | None] = None
    state_type: ClassVar[Any] = dict
    codec: ClassVar[BinaryCodec | None] = None
    state_version: ClassVar[int] = 1
    upcasters: ClassVar[typing.Mapping[int, Upcaster]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.type_name = check_type(cls.__dict__.get("type_name", cls.__name__))
        check_versioning(cls)
        if cls.persistence is not None and cls.persistence not in POLICIES:
            raise InvalidInput(
                f"{cls.__qualname__}.persistence must be one of {POLICIES} or None, "
                f"got {cls.persistence!r}"
            )
        for base in getattr(cls, "__orig_bases__", ()):
            if typing.get_origin(base) is Actor and typing.get_args(base):
                cls.state_type = typing.get_args(base)[0]
        if "codec" not in cls.__dict__ and is_protobuf_class(cls.state_type):
            cls.codec = ProtobufCodec([cls.state_type])
        if cls.codec is not None and not all(
            callable(getattr(cls.codec, name, None)) for name in ("encode", "decode")
        ):
            raise InvalidInput(
                f"{cls.__qualname__}.codec must be a BinaryCodec (ProtobufCodec, "
                f"RawBytesCodec) or None, got {cls.codec!r}"
            )
        if cls.codec is not None and cls.state_version != 1:
            raise InvalidInput(
                f"{cls.__qualname__}: state_version and upcasters apply to JSON states; "
                "a binary state evolves through its own format (e.g. protobuf fields)"
            )

    def __init__(self, id: str, state: S, activation: Activation) -> None:
        self.id = id
        self.state = state
        self._activation = activation

    def initial_state(self) -> S:
        """The state of an actor that was never saved (default: ``state_type()``)."""
        return typing.cast(S, self.state_type())

    async def on_activate(self) -> None:
        """Called after the state is loaded, before the first call."""

    async def on_deactivate(self) -> None:
        """Called before the actor is dropped from memory (after its last flush)."""

    async def save(self) -> None:
        """Save the state now (for ``persistence="manual"``; harmless otherwise)."""
        await self._activation.system.save_activation(self._activation)

    async def on_reminder(self, name: str) -> None:
        """Called, as a turn of this actor, when its reminder ``name`` is due (override it).

        Reminders fire on a system created with this class in ``actors=[...]``."""
        logger.warning("%s has no on_reminder: reminder %r did nothing", type(self).__name__, name)

    async def remind(
        self,
        name: str,
        *,
        at: datetime | None = None,
        after: float | None = None,
        every: float | None = None,
    ) -> None:
        """Set (or replace) this actor's reminder ``name``: due at ``at`` (an aware
        datetime) or ``after`` seconds; ``every`` seconds again after that (alone: first
        due one period from now). A write-through turn stores it with its state when the
        turn commits (a turn that raises stores nothing); other policies store it when the
        turn ends. Raises ``InvalidInput`` at once for a bad name or time."""
        activation = self._activation
        request = reminder_request(activation.cls.type_name, activation.id, name, at, after, every)
        activation.reminder_ops.append(request)

    async def cancel_reminder(self, name: str) -> None:
        """Cancel this actor's reminder ``name`` (with the turn, as ``remind`` sets one)."""
        self._activation.reminder_ops.append(check_name(name))

    async def reminders(self) -> list[Reminder]:
        """This actor's stored reminders, soonest first (not those set by this turn yet)."""
        store = self._activation.system.store
        return await store.reminders(self._activation.cls.type_name, self.id)


@dataclass(eq=False)
class Activation:
    """The runtime's bookkeeping of one active actor (not part of the public API)."""

    system: ActorSystem
    cls: type[Actor[Any]]
    id: str
    policy: Persistence
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    actor: Actor[Any] | None = None
    version: int = 0
    saved: Encoded | None = None
    unknown: dict[str, Any] = field(default_factory=dict)
    dirty: bool = False
    # Reload before the next turn: set when a save lost, or the feed told of a delete.
    marked_stale: bool = False
    # The newest version the change feed told of. A change heard before the save that
    # made it returned is not newer than the version that save then sets.
    heard: int = 0
    last_used: float = field(default_factory=time.monotonic)
    # Reminders the running turn set (a request) or cancelled (a name), stored with it.
    reminder_ops: list[ReminderRequest | str] = field(default_factory=list)

    @property
    def stale(self) -> bool:
        """The state in memory may not be the committed one: reload before the next turn."""
        return self.marked_stale or self.heard > self.version

    @stale.setter
    def stale(self, value: bool) -> None:
        self.marked_stale = value


class ActorRef:
    """A proxy: ``await ref.method(*args)`` runs one turn of the actor, wherever it lives."""

    def __init__(self, system: ActorSystem, cls: type[Actor[Any]], id: str) -> None:
        self._system = system
        self._cls = cls
        self.id = id

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("_"):
            raise AttributeError(name)
        if not callable(getattr(self._cls, name, None)):
            raise AttributeError(f"{self._cls.__qualname__} has no method {name!r}")

        system, cls, id = self._system, self._cls, self.id

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await system._invoke(cls, id, name, args, kwargs, None, False)

        self.__dict__[name] = call  # found directly from now on
        return call

    async def watch(self) -> AsyncIterator[Any]:
        """The committed state now (None if never saved), then after each change,
        whichever instance made it. The first item comes once the watch is subscribed,
        so no change after it is missed."""
        store = self._system.store
        last = 0
        async with store.changes(self._cls.type_name) as stream:
            record = await store.load(self._cls.type_name, self.id)
            if record is None:
                yield None
            else:
                last = record.version
                yield decode_state(self._cls, record)[0]
            async for change in stream:
                if change.id != self.id:
                    continue
                if change.op == "delete":
                    yield None
                    continue
                record = await store.load(self._cls.type_name, self.id)
                # A burst of changes may be read as its latest state: never yield an
                # older state after a newer one, nor the same version twice.
                if record is not None and record.version > last:
                    last = record.version
                    yield decode_state(self._cls, record)[0]

    def __repr__(self) -> str:
        return f"<ActorRef {self._cls.type_name}/{self.id}>"


class ActorSystem(Turns):
    """Hosts actors on a store: activation, turns, persistence, idle deactivation.

    ``actors``: the classes whose reminders this system fires (see ``firing.py``);
    ``owns(type_name, id)``, if given, limits firing to the actors it says this
    system hosts (the Ray silos use it).
    """

    def __init__(
        self,
        store: Store,
        *,
        persistence: Persistence = "write_through",
        flush_interval: float = 1.0,
        idle_timeout: float | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        follow_changes: bool = True,
        actors: typing.Sequence[type[Actor[Any]]] = (),
        owns: Callable[[str, str], bool] | None = None,
    ) -> None:
        if persistence not in POLICIES:
            raise InvalidInput(f"persistence must be one of {POLICIES}, got {persistence!r}")
        if not flush_interval > 0:
            raise InvalidInput(f"flush_interval must be > 0 seconds, got {flush_interval!r}")
        if idle_timeout is not None and not idle_timeout > 0:
            raise InvalidInput(f"idle_timeout must be > 0 seconds or None, got {idle_timeout!r}")
        super().__init__(store, max_retries)
        self.persistence = persistence
        self.flush_interval = flush_interval
        self.idle_timeout = idle_timeout
        self.follow_changes = follow_changes
        self._activations: dict[tuple[str, str], Activation] = {}
        self._classes: dict[str, type[Actor[Any]]] = {}
        self._background: asyncio.Task[None] | None = None
        self._follower: asyncio.Task[None] | None = None
        try:
            self._stream: ChangeStream | None = store.changes() if follow_changes else None
        except ConfigError as exc:
            raise ConfigError(
                f"{exc}; or pass ActorSystem(follow_changes=False), and cached actors then "
                "learn of other processes' writes only when a save conflicts"
            ) from None
        self._closed = False
        self.flush_conflicts = 0
        for cls in actors:
            self._register(cls)
        self.reminders = ReminderFiring(self, owns)
        self.reminders.add(actors)

    def actor(self, cls: type[Actor[Any]], id: str) -> ActorRef:
        """A reference to actor ``id`` of ``cls`` (activated on its first call)."""
        self._register(cls)
        return ActorRef(self, cls, check_id(id))

    def _register(self, cls: type[Actor[Any]]) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Actor)):
            raise InvalidInput(f"{cls!r} is not an Actor subclass")
        known = self._classes.setdefault(cls.type_name, cls)
        if known is not cls:
            raise InvalidInput(
                f"type_name {cls.type_name!r} is used by both {known.__qualname__} and "
                f"{cls.__qualname__}"
            )

    async def activation(self, cls: type[Actor[Any]], id: str) -> Activation:
        """The activation of actor ``id`` of ``cls``, activated if it is not (for runtimes
        such as reminder firing; its ``lock`` serialises turns)."""
        if self._closed:
            raise PgActorsError("the actor system is shut down")
        return self._activations.get((cls.type_name, id)) or await self._activate(cls, id)

    # -- turns ---------------------------------------------------------------------------

    async def invoke(
        self,
        cls: type[Actor[Any]],
        id: str,
        method: str,
        args: typing.Sequence[Any] = (),
        kwargs: typing.Mapping[str, Any] | None = None,
        *,
        call_id: str | None = None,
        maybe_applied: bool = False,
    ) -> Any:
        """Run one turn: ``method(*args, **kwargs)`` on actor ``id`` of ``cls``.

        ``ref.method(...)`` calls this. With a ``call_id``, a write-through call that
        changes the state is recorded with it (``Store.save_call``), so the same call id
        is never applied twice: a repeat returns the recorded result (as the method's
        return annotation, else as JSON) without running again. ``maybe_applied`` says
        the call may have been applied by another instance already (a retry), so it is
        looked up before it runs; the turn always looks it up after a conflict.
        """
        if not (isinstance(cls, type) and issubclass(cls, Actor)):
            raise InvalidInput(f"{cls!r} is not an Actor subclass")
        check_id(id)
        if method.startswith("_") or not callable(getattr(cls, method, None)):
            raise InvalidInput(f"{cls.__qualname__} has no method {method!r}")
        return await self._invoke(cls, id, method, args, kwargs or {}, call_id, maybe_applied)

    async def _invoke(
        self,
        cls: type[Actor[Any]],
        id: str,
        method: str,
        args: typing.Sequence[Any],
        kwargs: typing.Mapping[str, Any],
        call_id: str | None,
        maybe_applied: bool,
    ) -> Any:
        # The checked call (class, id and method are valid).
        if self._closed:
            raise PgActorsError("the actor system is shut down")
        activation = self._activations.get((cls.type_name, id)) or await self._activate(cls, id)
        async with activation.lock:
            activation.last_used = time.monotonic()
            if activation.stale:
                await self._reload(activation)
            if activation.policy != "write_through":
                result = await self._run(activation, method, args, kwargs)
                activation.dirty = True
                if activation.reminder_ops:
                    async with self.store.transaction() as tx:
                        await self.apply_reminders(tx, activation)
                return result
            return await self._turn(activation, method, args, kwargs, call_id, maybe_applied)

    async def _activate(self, cls: type[Actor[Any]], id: str) -> Activation:
        key = (cls.type_name, id)
        activation = self._activations.get(key)
        if activation is not None:
            return activation
        if self.follow_changes and self._follower is None:
            # Subscribe before loading, so no change after the load can be missed.
            assert self._stream is not None
            await self._stream.start()
            if self._follower is None:
                self._follower = asyncio.create_task(self._follow(), name="pgactors-actors-feed")
        activation = self._activations.get(key)
        if activation is not None:
            return activation
        policy = cls.persistence or self.persistence
        activation = Activation(self, cls, id, policy)
        self._activations[key] = activation
        async with activation.lock:
            try:
                await self._reload(activation)
                assert activation.actor is not None
                await activation.actor.on_activate()
            except BaseException:
                self._activations.pop(key, None)
                raise
        self._start_background()
        self.reminders.start()
        return activation

    # -- background: write-behind flushes, idle deactivation, change following -------------

    def _start_background(self) -> None:
        if self._background is None or self._background.done():
            self._background = asyncio.create_task(self._tick(), name="pgactors-actors")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
                if self.idle_timeout is not None:
                    await self._deactivate_idle()
            except Exception:
                # One bad round (the store unreachable, a failing hook) must not end
                # flushing and deactivation for every actor: try again next tick.
                logger.exception("actor background work failed; retrying")

    async def flush(self) -> None:
        """Save every dirty write-behind actor now (concurrently: the store coalesces the
        saves). A flush that loses to another instance's change does not raise: the
        committed state wins and is reloaded, and the loss is counted in
        ``flush_conflicts`` and logged. Other failures leave the actor dirty (flushed
        again next time) and are logged."""
        dirty = [a for a in self._activations.values() if a.dirty and a.policy == "write_behind"]
        results = await asyncio.gather(
            *(self._flush_behind(a) for a in dirty), return_exceptions=True
        )
        for activation, result in zip(dirty, results, strict=True):
            if isinstance(result, Exception):
                logger.warning(
                    "write-behind flush of %s/%s failed, will retry: %s",
                    activation.cls.type_name,
                    activation.id,
                    result,
                )

    async def _flush_behind(self, activation: Activation) -> None:
        async with activation.lock:
            if not activation.dirty:
                return
            try:
                await self.save_activation(activation)
            except VersionConflict:
                self._lost(activation)

    def _lost(self, activation: Activation) -> None:
        """A write-behind flush lost to a concurrent change: that committed state wins."""
        self.flush_conflicts += 1
        activation.dirty = False
        activation.stale = True  # reloaded before its next call
        logger.warning(
            "write-behind flush of %s/%s lost to a concurrent change; its unsaved changes "
            "were dropped and the committed state is reloaded",
            activation.cls.type_name,
            activation.id,
        )

    async def _deactivate_idle(self) -> None:
        assert self.idle_timeout is not None
        cutoff = time.monotonic() - self.idle_timeout
        for key, activation in list(self._activations.items()):
            if activation.last_used < cutoff and not activation.lock.locked():
                try:
                    await self._deactivate(key, activation)
                except Exception as exc:
                    logger.warning("deactivating %s/%s failed, will retry: %s", key[0], key[1], exc)

    async def _deactivate(self, key: tuple[str, str], activation: Activation) -> None:
        """Flush (a lost flush is counted, not raised), call ``on_deactivate``, drop."""
        async with activation.lock:
            if activation.policy == "write_behind" and activation.dirty:
                try:
                    await self.save_activation(activation)
                except VersionConflict:
                    self._lost(activation)
            if activation.actor is not None:
                await activation.actor.on_deactivate()
            self._activations.pop(key, None)

    async def _follow(self) -> None:
        """Mark cached actors stale when another instance changes them."""
        assert self._stream is not None
        async with self._stream as stream:
            async for change in stream:
                activation = self._activations.get((change.type, change.id))
                if activation is None:
                    continue
                if change.op == "delete":
                    if change.version >= activation.version:
                        activation.marked_stale, activation.heard = True, 0
                else:
                    activation.heard = max(activation.heard, change.version)

    @property
    def active(self) -> int:
        """How many actors are in memory."""
        return len(self._activations)

    async def shutdown(self) -> None:
        """Flush and deactivate every actor; stop background work. The store stays open.

        A flush lost to another instance is counted in ``flush_conflicts`` and logged,
        never raised. If some actors could not be flushed for another reason (the store
        unreachable), every other actor is still flushed, and then a ``PgActorsError``
        names how many were not.
        """
        self._closed = True
        await self.reminders.stop()
        if self._background is not None:
            self._background.cancel()
            await asyncio.gather(self._background, return_exceptions=True)
        if self._follower is not None and self._stream is not None:
            # Closing the stream ends the follower's loop; cancelling it mid-subscribe
            # could leave a connection checkout behind.
            await self._stream.close()
            with contextlib.suppress(PgActorsError):
                await self._follower
        failed: list[tuple[tuple[str, str], Exception]] = []
        for key, activation in list(self._activations.items()):
            try:
                await self._deactivate(key, activation)
            except Exception as exc:
                failed.append((key, exc))
                self._activations.pop(key, None)
        if failed:
            (type_name, id), first = failed[0]
            raise PgActorsError(
                f"{len(failed)} actor(s) could not be flushed at shutdown; their unsaved "
                f"changes are lost (first: {type_name}/{id!r}: {first})"
            ) from first

    async def __aenter__(self) -> ActorSystem:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()


__all__ = [
    "PESSIMISTIC_AFTER",
    "Actor",
    "ActorRef",
    "ActorSystem",
    "Persistence",
    "decode_state",
    "encode_state",
]
