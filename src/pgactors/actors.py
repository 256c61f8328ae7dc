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
import json
import logging
import random
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

from .changes import ChangeStream
from .codecs import BinaryCodec, ProtobufCodec, UnknownManifest
from .errors import CallAlreadyApplied, InvalidInput, PgActorsError, VersionConflict
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
from .record import JSON, AppliedCall, Encoded, Record, check_id, check_type
from .store import Store

logger = logging.getLogger("pgactors.actors")

S = TypeVar("S")
Persistence = Literal["write_through", "write_behind", "manual"]
POLICIES: tuple[str, ...] = typing.get_args(Persistence)
DEFAULT_MAX_RETRIES = 50
# After this many conflicts in one call, the call takes a row lock for its turn: a
# process that keeps losing the compare-and-set race then cannot starve.
PESSIMISTIC_AFTER = 3


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
        await self._activation.system._flush(self._activation)


class _UserError(Exception):
    """Carries an exception raised by an actor method out of the turn's error handling,
    so it is re-raised as itself and never taken for a storage failure."""

    def __init__(self, original: Exception) -> None:
        super().__init__(original)
        self.original = original


@dataclass(eq=False)
class _Activation:
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
            return await system.invoke(cls, id, name, args, kwargs)

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
        self.locked_turns = 0
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
        if self._closed:
            raise PgActorsError("the actor system is shut down")
        if method.startswith("_") or not callable(getattr(cls, method, None)):
            raise InvalidInput(f"{cls.__qualname__} has no method {method!r}")
        kwargs = kwargs or {}
        activation = self._activations.get((cls.type_name, id)) or await self._activate(cls, id)
        async with activation.lock:
            activation.last_used = time.monotonic()
            if activation.stale:
                await self._reload(activation)
            if activation.policy != "write_through":
                result = await self._run(activation, method, args, kwargs)
                activation.dirty = True
                return result
            return await self._turn(activation, method, args, kwargs, call_id, maybe_applied)

    async def _turn(
        self,
        activation: _Activation,
        method: str,
        args: typing.Sequence[Any],
        kwargs: typing.Mapping[str, Any],
        call_id: str | None,
        maybe_applied: bool,
    ) -> Any:
        """A write-through turn: run, then save with compare-and-set; on a conflict back
        off, reload and run again, and after ``PESSIMISTIC_AFTER`` conflicts hold a row
        lock for the turn."""
        type_name, id = activation.cls.type_name, activation.id
        for attempt in range(self.max_retries + 1):
            if call_id is not None and maybe_applied:
                applied = await self.store.applied_call(type_name, id, call_id)
                if applied is not None:
                    return self._recorded_result(activation, method, applied)
            try:
                if attempt >= PESSIMISTIC_AFTER:
                    return await self._locked_turn(activation, method, args, kwargs, call_id)
                result = await self._run(activation, method, args, kwargs)
                await self._save(activation, method, result, call_id)
                return result
            except _UserError as error:
                raise error.original from error.original.__cause__
            except CallAlreadyApplied as applied_call:
                # This run repeated an applied call: drop its effect, answer as before.
                activation.stale = True
                return self._recorded_result(activation, method, applied_call.call)
            except VersionConflict:
                if attempt == self.max_retries:
                    activation.stale = True
                    raise
            except BaseException:
                # The state in memory may be ahead of what committed (the save failed).
                activation.stale = True
                raise
            self.reruns += 1
            maybe_applied = True  # the winner may have been this very call
            # Back off first, then reload: the rerun starts from the newest state.
            delay = min(0.001 * 2**attempt, 0.05)
            await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311
            await self._reload(activation)
        raise AssertionError("unreachable")

    async def _locked_turn(
        self,
        activation: _Activation,
        method: str,
        args: typing.Sequence[Any],
        kwargs: typing.Mapping[str, Any],
        call_id: str | None,
    ) -> Any:
        """Run the turn in a transaction holding the record's row lock: writers of it
        (other instances) wait, so this save cannot lose. Only creating a record can
        still conflict (a missing row cannot be locked)."""
        cls, id = activation.cls, activation.id
        self.locked_turns += 1
        async with self.store.transaction() as tx:
            record = await tx.load(cls.type_name, id, lock=True)
            self._install(activation, record)
            if call_id is not None:
                applied = await tx.applied_call(cls.type_name, id, call_id)
                if applied is not None:
                    return self._recorded_result(activation, method, applied)
            result = await self._run(activation, method, args, kwargs)
            encoded = self._encode(activation)
            if encoded == activation.saved:
                return result
            if call_id is None:
                record = await tx.save(
                    cls.type_name, id, encoded, expected_version=activation.version
                )
            else:
                record = await tx.save_call(
                    cls.type_name,
                    id,
                    encoded,
                    expected_version=activation.version,
                    call_id=call_id,
                    result=self._encode_result(activation, method, result),
                )
        activation.version, activation.saved = record.version, encoded
        return result

    async def _run(
        self,
        activation: _Activation,
        method: str,
        args: typing.Sequence[Any],
        kwargs: typing.Mapping[str, Any],
    ) -> Any:
        """Call the method. A write-through call that raises changes nothing: the state
        goes back to what was saved."""
        actor = activation.actor
        assert actor is not None
        try:
            return await getattr(actor, method)(*args, **kwargs)
        except Exception as exc:
            if activation.policy != "write_through":
                raise
            self._restore(activation)
            raise _UserError(exc) from exc
        except BaseException:
            if activation.policy == "write_through":
                self._restore(activation)
            raise

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
        self._install(activation, await self.store.load(activation.cls.type_name, activation.id))

    def _install(self, activation: _Activation, record: Record | None) -> None:
        """Make ``record`` (None: never saved) the activation's state."""
        cls = activation.cls
        if record is None:
            shell = cls(activation.id, None, activation)
            state = shell.initial_state()
            activation.version, activation.saved, activation.unknown = 0, None, {}
        else:
            state, activation.unknown = decode_state(cls, record)
            activation.version = record.version
            activation.saved = self._encode_state(cls, state, activation.unknown)
        if activation.actor is None:
            activation.actor = cls(activation.id, state, activation)
        else:
            activation.actor.state = state
        activation.dirty = False
        activation.stale = False

    def _restore(self, activation: _Activation) -> None:
        """Put back the last saved state (no round trip: it is the encoded one kept)."""
        actor, saved, cls = activation.actor, activation.saved, activation.cls
        assert actor is not None
        if saved is None:
            actor.state = actor.initial_state()
        elif saved.text is None:
            assert cls.codec is not None and saved.payload is not None and saved.manifest
            actor.state = cls.codec.decode(saved.payload, saved.manifest, cls.type_name)
        else:
            record_data = json.loads(saved.text)
            state, activation.unknown = decode_json_state(cls, activation.id, record_data)
            actor.state = state

    async def _flush(self, activation: _Activation) -> None:
        """Save the state if it changed (compare-and-set on the version it was loaded at);
        the caller holds the activation's lock."""
        if activation.actor is not None:
            await self._save(activation, None, None, None)

    async def _save(
        self, activation: _Activation, method: str | None, result: Any, call_id: str | None
    ) -> None:
        # Encoded before the first await: the saved state is this turn's, never torn.
        encoded = self._encode(activation)
        if encoded == activation.saved:
            activation.dirty = False
            return
        type_name, id = activation.cls.type_name, activation.id
        if call_id is None or method is None:
            record = await self.store.save(
                type_name, id, encoded, expected_version=activation.version
            )
        else:
            record = await self.store.save_call(
                type_name,
                id,
                encoded,
                expected_version=activation.version,
                call_id=call_id,
                result=self._encode_result(activation, method, result),
            )
        activation.version, activation.saved, activation.dirty = record.version, encoded, False

    def _encode(self, activation: _Activation) -> Encoded:
        assert activation.actor is not None
        return self._encode_state(activation.cls, activation.actor.state, activation.unknown)

    def _encode_state(self, cls: type[Actor[Any]], state: Any, unknown: dict[str, Any]) -> Encoded:
        """What a save would store: equal means nothing to save."""
        if cls.codec is not None:
            return self.store.encode_binary(*cls.codec.encode(state))
        return self.store.encode(encode_state(cls, state, unknown))

    def _encode_result(self, activation: _Activation, method: str, result: Any) -> Encoded:
        where = f"{activation.cls.__qualname__}.{method}() result"
        try:
            return self.store.encode(state_to_json(result, where))
        except InvalidInput as exc:
            self._restore(activation)
            raise InvalidInput(
                f"{where} is recorded for exactly-once calls, so it must be JSON (or a "
                f"dataclass, pydantic model or msgspec Struct): {exc}"
            ) from None

    def _recorded_result(self, activation: _Activation, method: str, call: AppliedCall) -> Any:
        """A recorded result, as the method's return annotation says (else plain JSON)."""
        hint = _return_hint(activation.cls, method)
        if hint is None:
            return call.result
        where = f"recorded result of {activation.cls.__qualname__}.{method}()"
        return state_from_json(hint, call.result, where)

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

    async def _flush_behind(self, activation: _Activation) -> None:
        async with activation.lock:
            if not activation.dirty:
                return
            try:
                await self._flush(activation)
            except VersionConflict:
                self._lost(activation)

    def _lost(self, activation: _Activation) -> None:
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

    async def _deactivate(self, key: tuple[str, str], activation: _Activation) -> None:
        """Flush (a lost flush is counted, not raised), call ``on_deactivate``, drop."""
        async with activation.lock:
            if activation.policy == "write_behind" and activation.dirty:
                try:
                    await self._flush(activation)
                except VersionConflict:
                    self._lost(activation)
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
        """Flush and deactivate every actor; stop background work. The store stays open.

        A flush lost to another instance is counted in ``flush_conflicts`` and logged,
        never raised. If some actors could not be flushed for another reason (the store
        unreachable), every other actor is still flushed, and then a ``PgActorsError``
        names how many were not.
        """
        self._closed = True
        if self._background is not None:
            self._background.cancel()
            await asyncio.gather(self._background, return_exceptions=True)
        if self._follower is not None:
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
    return decode_json_state(cls, record.id, record.data)


def decode_json_state(cls: type[Actor[Any]], id: str, data: Any) -> tuple[Any, dict[str, Any]]:
    """The state of a stored JSON ``data`` and the top-level keys its type does not know."""
    where = f"stored {cls.type_name}/{id!r}"
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


def _return_hint(cls: type[Actor[Any]], method: str) -> Any:
    """The return annotation of ``cls.method`` (None when absent or Any)."""
    try:
        hint = typing.get_type_hints(getattr(cls, method)).get("return")
    except Exception:  # an annotation that cannot be resolved: hand back plain JSON
        return None
    return None if hint is Any or hint is type(None) else hint


def _is_protobuf_class(hint: Any) -> bool:
    return isinstance(hint, type) and isinstance(
        getattr(getattr(hint, "DESCRIPTOR", None), "full_name", None), str
    )


__all__ = ["Actor", "ActorRef", "ActorSystem", "Persistence", "decode_state", "encode_state"]
