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
and runs again, so actor methods must be deterministic functions of state and
arguments (no side effects they cannot repeat). Cached actors follow the change feed
and reload before their next call when another instance changed them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

from .changes import ChangeStream
from .codecs import BinaryCodec, ProtobufCodec, UnknownManifest
from .errors import InvalidInput, PgActorsError, VersionConflict
from .objects import (
    STATE_VERSION_KEY,
    StateError,
    Upcaster,
    check_versioning,
    state_from_json,
    state_keys,
    state_to_json,
    upcast,
)
from .record import JSON, Record, check_id, check_type
from .store import Store

logger = logging.getLogger("pgactors.actors")

S = TypeVar("S")
Persistence = Literal["write_through", "write_behind", "manual"]
POLICIES: tuple[str, ...] = typing.get_args(Persistence)
DEFAULT_MAX_RETRIES = 50


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
        if "codec" not in cls.__dict__ and _is_protobuf_class(cls.state_type):
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

    def __init__(self, id: str, state: S, activation: _Activation) -> None:
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
        await self._activation.system._flush(self._activation, locked=True)


@dataclass(eq=False)
class _Activation:
    system: ActorSystem
    cls: type[Actor[Any]]
    id: str
    policy: Persistence
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    actor: Actor[Any] | None = None
    version: int = 0
    saved: str | bytes | None = None
    unknown: dict[str, Any] = field(default_factory=dict)
    dirty: bool = False
    stale: bool = False
    last_used: float = field(default_factory=time.monotonic)


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
            return await system._call(cls, id, name, args, kwargs)

        self.__dict__[name] = call  # found directly from now on
        return call

    async def watch(self) -> AsyncIterator[Any]:
        """The committed state after each change, whichever instance made it."""
        store = self._system.store
        last = 0
        async with store.changes(self._cls.type_name) as stream:
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


class ActorSystem:
    """Hosts actors on a store: activation, turns, persistence, idle deactivation."""

    def __init__(
        self,
        store: Store,
        *,
        persistence: Persistence = "write_through",
        flush_interval: float = 1.0,
        idle_timeout: float | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        follow_changes: bool = True,
    ) -> None:
        if persistence not in POLICIES:
            raise InvalidInput(f"persistence must be one of {POLICIES}, got {persistence!r}")
        if not flush_interval > 0:
            raise InvalidInput(f"flush_interval must be > 0 seconds, got {flush_interval!r}")
        if idle_timeout is not None and not idle_timeout > 0:
            raise InvalidInput(f"idle_timeout must be > 0 seconds or None, got {idle_timeout!r}")
        self.store = store
        self.persistence = persistence
        self.flush_interval = flush_interval
        self.idle_timeout = idle_timeout
        self.max_retries = max_retries
        self.follow_changes = follow_changes
        self._activations: dict[tuple[str, str], _Activation] = {}
        self._classes: dict[str, type[Actor[Any]]] = {}
        self._background: asyncio.Task[None] | None = None
        self._follower: asyncio.Task[None] | None = None
        self._stream: ChangeStream = store.changes()
        self._closed = False
        self.reruns = 0
        self.flush_conflicts = 0

    def actor(self, cls: type[Actor[Any]], id: str) -> ActorRef:
        """A reference to actor ``id`` of ``cls`` (activated on its first call)."""
        if not (isinstance(cls, type) and issubclass(cls, Actor)):
            raise InvalidInput(f"{cls!r} is not an Actor subclass")
        known = self._classes.setdefault(cls.type_name, cls)
        if known is not cls:
            raise InvalidInput(
                f"type_name {cls.type_name!r} is used by both {known.__qualname__} and "
                f"{cls.__qualname__}"
            )
        return ActorRef(self, cls, check_id(id))

    # -- turns ---------------------------------------------------------------------------

    async def _call(
        self, cls: type[Actor[Any]], id: str, name: str, args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        if self._closed:
            raise PgActorsError("the actor system is shut down")
        activation = self._activations.get((cls.type_name, id)) or await self._activate(cls, id)
        async with activation.lock:
            activation.last_used = time.monotonic()
            if activation.stale:
                await self._reload(activation)
            for attempt in range(self.max_retries + 1):
                actor = activation.actor
                assert actor is not None
                result = await getattr(actor, name)(*args, **kwargs)
                if activation.policy != "write_through":
                    activation.dirty = True
                    return result
                try:
                    await self._flush(activation, locked=True)
                    return result
                except VersionConflict:
                    if attempt == self.max_retries:
                        raise
                    self.reruns += 1
                    await self._reload(activation)
                    await asyncio.sleep(random.uniform(0, min(0.001 * 2**attempt, 0.05)))  # noqa: S311
            raise AssertionError("unreachable")

    async def _activate(self, cls: type[Actor[Any]], id: str) -> _Activation:
        key = (cls.type_name, id)
        activation = self._activations.get(key)
        if activation is not None:
            return activation
        if self.follow_changes and self._follower is None:
            # Subscribe before loading, so no change after the load can be missed.
            await self._stream.start()
            if self._follower is None:
                self._follower = asyncio.create_task(self._follow(), name="pgactors-actors-feed")
        activation = self._activations.get(key)
        if activation is not None:
            return activation
        policy = cls.persistence or self.persistence
        activation = _Activation(self, cls, id, policy)
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
        return activation

    async def _reload(self, activation: _Activation) -> None:
        record = await self.store.load(activation.cls.type_name, activation.id)
        cls = activation.cls
        if record is None:
            shell = cls(activation.id, None, activation)
            state = shell.initial_state()
            activation.version, activation.saved, activation.unknown = 0, None, {}
        else:
            state, activation.unknown = decode_state(cls, record)
            activation.version = record.version
            activation.saved = self._fingerprint(cls, state, activation.unknown)
        if activation.actor is None:
            activation.actor = cls(activation.id, state, activation)
        else:
            activation.actor.state = state
        activation.dirty = False
        activation.stale = False

    async def _flush(self, activation: _Activation, *, locked: bool) -> None:
        """Save the state if it changed (compare-and-set on the version it was loaded at)."""
        if not locked:
            async with activation.lock:
                await self._flush(activation, locked=True)
                return
        actor = activation.actor
        if actor is None:
            return
        cls = activation.cls
        # Encoded before the first await: the saved state is this turn's, never torn.
        if cls.codec is not None:
            payload, manifest = cls.codec.encode(actor.state)
            if payload == activation.saved:
                activation.dirty = False
                return
            record = await self.store.save_binary(
                cls.type_name, activation.id, payload, manifest, expected_version=activation.version
            )
            activation.version, activation.saved, activation.dirty = record.version, payload, False
            return
        text = self.store._encode(encode_state(cls, actor.state, activation.unknown))
        if text == activation.saved:
            activation.dirty = False
            return
        record = await self.store._save_encoded(
            cls.type_name, activation.id, text, activation.version
        )
        activation.version, activation.saved, activation.dirty = record.version, text, False

    def _fingerprint(
        self, cls: type[Actor[Any]], state: Any, unknown: dict[str, Any]
    ) -> str | bytes:
        """What a flush would store: equal means nothing to save."""
        if cls.codec is not None:
            return cls.codec.encode(state)[0]
        return self.store._encode(encode_state(cls, state, unknown))

    # -- background: write-behind flushes, idle deactivation, change following -------------

    def _start_background(self) -> None:
        if self._background is None or self._background.done():
            self._background = asyncio.create_task(self._tick(), name="pgactors-actors")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            await self.flush()
            if self.idle_timeout is not None:
                await self._deactivate_idle()

    async def flush(self) -> None:
        """Save every dirty actor now (concurrently: the store coalesces the saves)."""
        dirty = [a for a in self._activations.values() if a.dirty and a.policy == "write_behind"]
        results = await asyncio.gather(
            *(self._flush(a, locked=False) for a in dirty), return_exceptions=True
        )
        for activation, result in zip(dirty, results, strict=True):
            if isinstance(result, VersionConflict):
                # Another instance changed it: its committed state wins, ours is reloaded.
                self.flush_conflicts += 1
                activation.stale = True
                logger.warning(
                    "write-behind flush of %s/%s lost to a concurrent change",
                    activation.cls.type_name,
                    activation.id,
                )
            elif isinstance(result, BaseException):
                logger.warning("write-behind flush failed: %s", result)

    async def _deactivate_idle(self) -> None:
        assert self.idle_timeout is not None
        cutoff = time.monotonic() - self.idle_timeout
        for key, activation in list(self._activations.items()):
            if activation.last_used < cutoff and not activation.lock.locked():
                await self._deactivate(key, activation)

    async def _deactivate(self, key: tuple[str, str], activation: _Activation) -> None:
        async with activation.lock:
            if activation.policy == "write_behind":
                await self._flush(activation, locked=True)
            if activation.actor is not None:
                await activation.actor.on_deactivate()
            self._activations.pop(key, None)

    async def _follow(self) -> None:
        """Mark cached actors stale when another instance changes them."""
        async with self._stream as stream:
            async for change in stream:
                activation = self._activations.get((change.type, change.id))
                if activation is not None and change.version > activation.version:
                    activation.stale = True

    @property
    def active(self) -> int:
        """How many actors are in memory."""
        return len(self._activations)

    async def shutdown(self) -> None:
        """Flush and deactivate every actor; stop background work. The store stays open."""
        self._closed = True
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError, PgActorsError):
                await self._background
        if self._follower is not None:
            # Closing the stream ends the follower's loop; cancelling it mid-subscribe
            # could leave a connection checkout behind.
            await self._stream.close()
            with contextlib.suppress(PgActorsError):
                await self._follower
        for key, activation in list(self._activations.items()):
            await self._deactivate(key, activation)

    async def __aenter__(self) -> ActorSystem:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()


def decode_state(cls: type[Actor[Any]], record: Record) -> tuple[Any, dict[str, Any]]:
    """The state stored in ``record`` and the top-level keys its type does not know."""
    where = f"stored {cls.type_name}/{record.id!r}"
    if cls.codec is not None:
        if record.payload is None or record.manifest is None:
            raise UnknownManifest(None, [], f"{where} (a JSON state, not a binary one)")
        return cls.codec.decode(record.payload, record.manifest, where), {}
    if record.payload is not None:
        raise StateError(
            f"{where} is a binary state ({record.manifest!r}): give {cls.__qualname__} "
            "a codec to decode it"
        )
    data = record.data
    if isinstance(data, dict):
        data = upcast(cls, dict(data), where)
        known = state_keys(cls.state_type)
        if known is not None:
            unknown = {k: v for k, v in data.items() if k not in known}
            data = {k: v for k, v in data.items() if k in known}
            return state_from_json(cls.state_type, data, where), unknown
    elif cls.state_version > 1:
        raise StateError(f"{where} is not a JSON object, so it has no state version")
    return state_from_json(cls.state_type, data, where), {}


def encode_state(cls: type[Actor[Any]], state: Any, unknown: dict[str, Any]) -> JSON:
    """The JSON stored for ``state``: its fields, kept unknown keys and the state version."""
    data: JSON = state_to_json(state, f"{cls.type_name}.state")
    if isinstance(data, dict):
        if unknown:
            data = {**unknown, **data}
        if cls.state_version > 1:
            data = {**data, STATE_VERSION_KEY: cls.state_version}
    elif cls.state_version > 1:
        raise InvalidInput(
            f"{cls.__qualname__} has state_version {cls.state_version}, so its state must "
            f"be stored as a JSON object, not a {type(data).__name__}"
        )
    return data


def _is_protobuf_class(hint: Any) -> bool:
    return isinstance(hint, type) and isinstance(
        getattr(getattr(hint, "DESCRIPTOR", None), "full_name", None), str
    )


__all__ = ["Actor", "ActorRef", "ActorSystem", "Persistence", "decode_state", "encode_state"]
