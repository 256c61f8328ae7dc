"""Actors hosted on a Ray cluster: durable in PostgreSQL, with exactly-once calls.

::

    import ray
    from pgactors.ray import RayActorSystem

    ray.init()
    system = await RayActorSystem.start(dsn, silos=4)
    ref = system.actor(Counter, "c1")        # the same Actor classes as ActorSystem
    await ref.add(1)
    await system.shutdown()                  # or detach(): leave the silos running

Silos are named, detached Ray actors, each hosting an ``ActorSystem`` on its own
``Store``. An actor id maps to one silo by a stable hash, so calls from every driver
reach one activation. Ray restarts a dead silo and retries its calls; each call
carries an id that commits with the state it produced, so a retried call that was
applied already is answered with its original result instead of running again.
Needs the ``ray`` extra: ``pip install "pgactors[ray]"``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
import typing
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

try:
    import ray
    from ray.exceptions import RayActorError, RayError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'pgactors.ray needs Ray: pip install "pgactors[ray]" (or pip install ray)'
    ) from exc

from .actors import Actor, ActorSystem, Persistence
from .checks import int_in_range
from .config import StoreConfig
from .errors import ConfigError, InvalidInput, PgActorsError, SiloUnavailable
from .record import check_id
from .store import Store

logger = logging.getLogger("pgactors.ray")

DEFAULT_NAMESPACE = "pgactors"
# Calls are remembered this long after they committed (seconds): a retry arriving later
# would run again. Ray retries a dead silo's calls as soon as it is back.
DEFAULT_CALL_RETENTION = 3600.0
DEFAULT_IDLE_TIMEOUT = 600.0
MAX_SILOS = 1024
_SILO_PREFIX = "pgactors-silo-"


@dataclass(frozen=True)
class SiloStatus:
    """One silo: where it runs, whether it answers, and what it hosts."""

    index: int
    pid: int | None
    node_id: str | None
    alive: bool
    activations: int
    calls: int
    reruns: int


# What a driver sends for one call: type name, id, method, args, kwargs, call id, and the
# incarnation of the silo it last heard from.
_Request = tuple[str, str, str, tuple[Any, ...], dict[str, Any], str, str | None]


@dataclass(frozen=True)
class _Options:
    persistence: Persistence
    idle_timeout: float | None
    call_retention: float
    follow_changes: bool
    # Fired by every silo for the actors it hosts (a restarted silo too, once called).
    reminders: tuple[type[Actor[Any]], ...] = ()


class _Silo:
    """The body of a silo (a Ray actor): an ``ActorSystem`` on its own ``Store``.

    Every reply is ``(kind, incarnation, value)``; ``incarnation`` is new each time Ray
    (re)starts the silo, so a driver can tell which calls may be retries.
    """

    def __init__(self, config: StoreConfig, index: int, count: int, options: _Options) -> None:
        self._config = config
        self._index = index
        self._count = count
        self._options = options
        self._incarnation = uuid.uuid4().hex
        self._classes: dict[str, type[Actor[Any]]] = {}
        self._system: ActorSystem | None = None
        self._starting: asyncio.Lock | None = None
        self._purger: asyncio.Task[None] | None = None
        self._calls = 0

    async def _started(self) -> ActorSystem:
        if self._system is not None:
            return self._system
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._system is None:
                store = await Store.connect(self._config)
                await store.init_schema()  # idempotent; safe from every silo at once
                options = self._options
                index, count = self._index, self._count
                for cls in options.reminders:
                    self._classes[cls.type_name] = cls
                self._system = ActorSystem(
                    store,
                    persistence=options.persistence,
                    idle_timeout=options.idle_timeout,
                    follow_changes=options.follow_changes,
                    actors=options.reminders,
                    owns=lambda type_name, id: silo_index(type_name, id, count) == index,
                )
                self._purger = asyncio.create_task(self._purge_calls(store))
        return self._system

    async def _purge_calls(self, store: Store) -> None:
        retention = self._options.call_retention
        while True:
            await asyncio.sleep(min(60.0, retention / 4))
            try:
                await store.purge_calls(older_than=retention)
            except Exception as exc:
                logger.warning("purging recorded calls failed, will retry: %s", exc)

    async def info(self) -> tuple[int, int, str]:
        """This silo's index, the silo count it was created with, and its incarnation."""
        return self._index, self._count, self._incarnation

    async def register(self, type_name: str, cls: type[Actor[Any]]) -> None:
        """Learn an actor class (sent by a driver the first time this silo needs it)."""
        self._classes[type_name] = cls

    async def fire_reminders(self, classes: list[type[Actor[Any]]]) -> None:
        """Start (now) firing the reminders of ``classes`` for the actors hosted here."""
        for cls in classes:
            self._classes[cls.type_name] = cls
        system = await self._started()
        system.reminders.add(classes)

    async def call(self, request: _Request) -> tuple[str, str, Any]:
        """Run one call; ``seen`` is the incarnation the driver last heard from."""
        # One argument: Ray serialises each argument apart, which costs per argument.
        type_name, id, method, args, kwargs, call_id, seen = request
        cls = self._classes.get(type_name)
        if cls is None:
            return "unknown", self._incarnation, None
        self._calls += 1
        try:
            system = await self._started()
            result = await system.invoke(
                cls,
                id,
                method,
                args,
                kwargs,
                call_id=call_id,
                # Sent to an earlier incarnation (or by a driver that never heard from
                # this one): it may have been applied before that one died.
                maybe_applied=seen != self._incarnation,
            )
        except Exception as exc:  # the caller's own exception travels back as itself
            return "error", self._incarnation, exc
        return "ok", self._incarnation, result

    async def status(self) -> SiloStatus:
        system = self._system
        return SiloStatus(
            self._index,
            os.getpid(),
            ray.get_runtime_context().get_node_id(),
            True,
            0 if system is None else system.active,
            self._calls,
            0 if system is None else system.reruns,
        )

    async def stop(self) -> None:
        """Flush and deactivate every actor, close the store."""
        if self._purger is not None:
            self._purger.cancel()
        system, self._system = self._system, None
        if system is not None:
            try:
                await system.shutdown()
            finally:
                await system.store.close()


_RemoteSilo = ray.remote(_Silo)


def silo_index(type_name: str, id: str, silos: int) -> int:
    """The silo hosting actor ``id`` of ``type_name``: a stable hash, the same everywhere."""
    digest = hashlib.blake2b(f"{type_name}\x00{id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % silos


class _Cluster:
    """What the async and blocking systems share: silo handles, routing, replies."""

    def __init__(self, handles: list[Any], namespace: str) -> None:
        self.handles = handles
        self.namespace = namespace
        self.seen: list[str | None] = [None] * len(handles)
        self.closed = False

    def route(self, cls: type[Actor[Any]], id: str) -> tuple[int, str | None]:
        """The silo of the actor, and the incarnation of it last heard from: a call
        keeps that tag through every resend, so a silo restarted since then checks
        whether an earlier incarnation applied it."""
        if self.closed:
            raise PgActorsError("the Ray actor system is shut down or detached")
        index = silo_index(cls.type_name, id, len(self.handles))
        return index, self.seen[index]

    def submit(
        self,
        index: int,
        seen: str | None,
        cls: type[Actor[Any]],
        id: str,
        method: str,
        args: Any,
        kwargs: Any,
        call_id: str,
    ) -> Any:
        request = (cls.type_name, id, method, tuple(args), dict(kwargs), call_id, seen)
        return self.handles[index].call.remote(request)

    def register(self, index: int, cls: type[Actor[Any]]) -> Any:
        return self.handles[index].register.remote(cls.type_name, cls)

    def outcome(self, index: int, reply: tuple[str, str, Any]) -> tuple[bool, Any]:
        """``(True, result)``, or ``(False, None)`` when the silo must learn the class."""
        kind, incarnation, value = reply
        self.seen[index] = incarnation
        if kind == "unknown":
            return False, None
        if kind == "error":
            raise value
        return True, value


def _unavailable(exc: BaseException, index: int, namespace: str) -> SiloUnavailable:
    return SiloUnavailable(
        f"silo {index} of namespace {namespace!r} cannot be reached through Ray ({exc}); "
        "it was stopped, or its node is gone: check `ray status` and start the system again"
    )


def _begin(
    dsn_or_config: str | StoreConfig | None,
    overrides: dict[str, Any],
    silos: int | None,
    namespace: str,
    options: _Options,
) -> tuple[list[Any], list[Any]]:
    """Check the options, resolve the store, create or find the silos (blocking)."""
    _check_options(silos, namespace, options.call_retention, options.idle_timeout)
    config = _config(dsn_or_config, overrides)
    return _silo_handles(config, silos, namespace, options)


def _reminder_classes(actors: Sequence[type[Actor[Any]]]) -> tuple[type[Actor[Any]], ...]:
    for cls in actors:
        if not (isinstance(cls, type) and issubclass(cls, Actor)):
            raise InvalidInput(f"actors must be Actor subclasses, got {cls!r}")
    return tuple(actors)


def _check_options(
    silos: int | None, namespace: str, call_retention: float, idle_timeout: float | None
) -> None:
    if silos is not None and not int_in_range(silos, 1, MAX_SILOS):
        raise InvalidInput(f"silos must be an int from 1 to {MAX_SILOS} or None, got {silos!r}")
    if not isinstance(namespace, str) or not namespace or not namespace.isprintable():
        raise InvalidInput(f"namespace must be a non-empty printable str, got {namespace!r}")
    for name, value in (("call_retention", call_retention), ("idle_timeout", idle_timeout)):
        if name == "idle_timeout" and value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 < value < float("inf")
        ):
            raise InvalidInput(f"{name} must be a positive number of seconds, got {value!r}")


def _config(dsn_or_config: str | StoreConfig | None, overrides: dict[str, Any]) -> StoreConfig:
    """As ``Store.open``: the DSN or config given, else the environment, else the
    embedded server (started here, reachable by every silo on this machine)."""
    config = StoreConfig.resolve(dsn_or_config, **overrides)
    if not config.has_target:
        from .embedded import EmbeddedServer

        server = EmbeddedServer(None)
        server.start()
        config = config.replace(dsn=server.dsn)
    return config


def _silo_handles(
    config: StoreConfig, silos: int | None, namespace: str, options: _Options
) -> tuple[list[Any], list[Any]]:
    """Create the silos, or get those already running; return handles and ``info`` refs."""
    if silos is None:
        try:
            first = ray.get_actor(f"{_SILO_PREFIX}0", namespace=namespace)
            silos = ray.get(first.info.remote())[1]
        except ValueError:  # none running: one silo per CPU of the cluster
            resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
            silos = max(1, min(MAX_SILOS, int(resources.get("CPU", 1))))
    assert silos is not None
    handles: list[Any] = [
        _RemoteSilo.options(
            name=f"{_SILO_PREFIX}{index}",
            namespace=namespace,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_task_retries=-1,
            max_concurrency=1000,
            num_cpus=0,
        ).remote(config, index, silos, options)
        for index in range(silos)
    ]
    return handles, [h.info.remote() for h in handles]


def _check_count(infos: list[tuple[int, int, str]], silos: int, namespace: str) -> None:
    for index, count, _ in infos:
        if count != silos:
            raise ConfigError(
                f"silo {index} of Ray namespace {namespace!r} runs with {count} silos, not "
                f"{silos}: start with silos={count} (or None to attach), or shut the running "
                "system down first"
            )


class RayActorRef:
    """A proxy: ``await ref.method(*args)`` runs one call of the actor in its silo."""

    def __init__(self, system: RayActorSystem, cls: type[Actor[Any]], id: str) -> None:
        self._system = system
        self._cls = cls
        self.id = id

    def __getattr__(self, name: str) -> Callable[..., typing.Awaitable[Any]]:
        if name.startswith("_") or not callable(getattr(self._cls, name, None)):
            raise AttributeError(f"{self._cls.__qualname__} has no method {name!r}")
        system, cls, id = self._system, self._cls, self.id

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await system._call(cls, id, name, args, kwargs)

        self.__dict__[name] = call
        return call

    def __repr__(self) -> str:
        return f"<RayActorRef {self._cls.type_name}/{self.id}>"


def _check_ref(cls: type[Actor[Any]], id: str) -> str:
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise InvalidInput(f"{cls!r} is not an Actor subclass")
    return check_id(id)


class RayActorSystem:
    """Actors hosted by silos on a Ray cluster; create it with :meth:`start`."""

    def __init__(self, cluster: _Cluster) -> None:
        self._cluster = cluster

    @classmethod
    async def start(
        cls,
        dsn_or_config: str | StoreConfig | None = None,
        /,
        *,
        silos: int | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        persistence: Persistence = "write_through",
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        call_retention: float = DEFAULT_CALL_RETENTION,
        follow_changes: bool = True,
        actors: Sequence[type[Actor[Any]]] = (),
        **overrides: Any,
    ) -> RayActorSystem:
        """Create the silos in ``namespace``, or attach to those already running there.

        Needs ``ray.init()`` first (a local cluster, or ``address=`` an existing one).
        ``silos=None`` attaches to the running silos whatever their number, or creates
        one per CPU of the cluster; a number that differs from the running silos'
        raises ``ConfigError``. The store is the DSN or
        ``StoreConfig`` given, else the environment, else the embedded server. The other
        options configure each silo's ``ActorSystem`` (they apply when the silos are
        created). ``call_retention``: how long (seconds) applied calls are remembered
        for recognising retries. ``actors``: classes whose reminders the silos fire, each
        silo for the actors it hosts.
        """
        reminders = _reminder_classes(actors)
        options = _Options(persistence, idle_timeout, call_retention, follow_changes, reminders)
        handles, infos = await asyncio.to_thread(
            _begin, dsn_or_config, overrides, silos, namespace, options
        )
        try:
            replies = await asyncio.gather(*infos)
        except RayError as exc:
            raise _unavailable(exc, 0, namespace) from None
        _check_count(replies, len(handles), namespace)
        if reminders:  # also when attaching to silos created without them
            await asyncio.gather(*(h.fire_reminders.remote(list(reminders)) for h in handles))
        return cls(_Cluster(handles, namespace))

    def actor(self, cls: type[Actor[Any]], id: str) -> RayActorRef:
        """A reference to actor ``id`` of ``cls`` (activated in its silo on first call)."""
        return RayActorRef(self, cls, _check_ref(cls, id))

    async def _call(
        self, cls: type[Actor[Any]], id: str, method: str, args: Any, kwargs: Any
    ) -> Any:
        cluster = self._cluster
        call_id = uuid.uuid4().hex
        index, seen = cluster.route(cls, id)
        while True:
            ref = cluster.submit(index, seen, cls, id, method, args, kwargs, call_id)
            try:
                done, result = cluster.outcome(index, await ref)
                if done:
                    return result
                await cluster.register(index, cls)
            except RayActorError as exc:
                raise _unavailable(exc, index, cluster.namespace) from None

    async def status(self) -> list[SiloStatus]:
        """Each silo's status; a silo that does not answer is shown ``alive=False``."""
        cluster = self._cluster
        replies = await asyncio.gather(
            *(h.status.remote() for h in cluster.handles), return_exceptions=True
        )
        return [_status(index, reply) for index, reply in enumerate(replies)]

    async def shutdown(self) -> None:
        """Flush every actor and stop the silos (for every driver attached to them)."""
        cluster = self._cluster
        cluster.closed = True
        stopped = await asyncio.gather(
            *(h.stop.remote() for h in cluster.handles), return_exceptions=True
        )
        for reply in stopped:
            if isinstance(reply, BaseException):
                logger.warning("stopping a silo failed: %s", reply)
        await asyncio.to_thread(_kill, cluster)

    def detach(self) -> None:
        """Stop using the silos, leaving them running for other drivers."""
        self._cluster.closed = True

    @property
    def silos(self) -> int:
        """How many silos host the actors."""
        return len(self._cluster.handles)

    def __repr__(self) -> str:
        cluster = self._cluster
        return f"<RayActorSystem {len(cluster.handles)} silos in {cluster.namespace!r}>"


def _kill(cluster: _Cluster, seconds: float = 30.0) -> None:
    """End the silos for good, and wait until Ray has let go of their names (so a new
    ``start`` in the namespace creates new silos, and no call reaches the old ones)."""
    for handle in cluster.handles:
        ray.kill(handle, no_restart=True)
    deadline = time.monotonic() + seconds
    for index in range(len(cluster.handles)):
        while True:
            try:
                ray.get_actor(f"{_SILO_PREFIX}{index}", namespace=cluster.namespace)
            except ValueError:
                break
            if time.monotonic() > deadline:
                logger.warning("silo %d did not stop within %gs", index, seconds)
                return
            time.sleep(0.02)


def _status(index: int, reply: Any) -> SiloStatus:
    if isinstance(reply, SiloStatus):
        return reply
    return SiloStatus(index, None, None, False, 0, 0, 0)


class SyncRayActorRef:
    """A blocking proxy: ``ref.method(*args)`` returns the result."""

    def __init__(self, system: SyncRayActorSystem, cls: type[Actor[Any]], id: str) -> None:
        self._system = system
        self._cls = cls
        self.id = id

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or not callable(getattr(self._cls, name, None)):
            raise AttributeError(f"{self._cls.__qualname__} has no method {name!r}")
        system, cls, id = self._system, self._cls, self.id

        def call(*args: Any, **kwargs: Any) -> Any:
            return system._call(cls, id, name, args, kwargs)

        self.__dict__[name] = call
        return call

    def __repr__(self) -> str:
        return f"<SyncRayActorRef {self._cls.type_name}/{self.id}>"


class SyncRayActorSystem:
    """The blocking twin of :class:`RayActorSystem`, for scripts and notebooks; the
    same silos (both kinds of driver may share them)."""

    def __init__(self, cluster: _Cluster) -> None:
        self._cluster = cluster

    @classmethod
    def start(
        cls,
        dsn_or_config: str | StoreConfig | None = None,
        /,
        *,
        silos: int | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        persistence: Persistence = "write_through",
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        call_retention: float = DEFAULT_CALL_RETENTION,
        follow_changes: bool = True,
        actors: Sequence[type[Actor[Any]]] = (),
        **overrides: Any,
    ) -> SyncRayActorSystem:
        """As :meth:`RayActorSystem.start`, blocking."""
        reminders = _reminder_classes(actors)
        options = _Options(persistence, idle_timeout, call_retention, follow_changes, reminders)
        handles, infos = _begin(dsn_or_config, overrides, silos, namespace, options)
        try:
            replies = ray.get(infos)
        except RayError as exc:
            raise _unavailable(exc, 0, namespace) from None
        _check_count(replies, len(handles), namespace)
        if reminders:
            ray.get([h.fire_reminders.remote(list(reminders)) for h in handles])
        return cls(_Cluster(handles, namespace))

    def actor(self, cls: type[Actor[Any]], id: str) -> SyncRayActorRef:
        """A reference to actor ``id`` of ``cls``; its methods block."""
        return SyncRayActorRef(self, cls, _check_ref(cls, id))

    def _call(self, cls: type[Actor[Any]], id: str, method: str, args: Any, kwargs: Any) -> Any:
        cluster = self._cluster
        call_id = uuid.uuid4().hex
        index, seen = cluster.route(cls, id)
        while True:
            ref = cluster.submit(index, seen, cls, id, method, args, kwargs, call_id)
            try:
                done, result = cluster.outcome(index, ray.get(ref))
                if done:
                    return result
                ray.get(cluster.register(index, cls))
            except RayActorError as exc:
                raise _unavailable(exc, index, cluster.namespace) from None

    def status(self) -> list[SiloStatus]:
        """Each silo's status; a silo that does not answer is shown ``alive=False``."""
        replies: list[Any] = []
        for handle in self._cluster.handles:
            try:
                replies.append(ray.get(handle.status.remote()))
            except RayError as exc:
                replies.append(exc)
        return [_status(index, reply) for index, reply in enumerate(replies)]

    def shutdown(self) -> None:
        """Flush every actor and stop the silos (for every driver attached to them)."""
        cluster = self._cluster
        cluster.closed = True
        for handle in cluster.handles:
            try:
                ray.get(handle.stop.remote())
            except RayError as exc:
                logger.warning("stopping a silo failed: %s", exc)
        _kill(cluster)

    def detach(self) -> None:
        """Stop using the silos, leaving them running for other drivers."""
        self._cluster.closed = True

    @property
    def silos(self) -> int:
        """How many silos host the actors."""
        return len(self._cluster.handles)


__all__ = [
    "DEFAULT_CALL_RETENTION",
    "DEFAULT_NAMESPACE",
    "RayActorRef",
    "RayActorSystem",
    "SiloStatus",
    "SyncRayActorRef",
    "SyncRayActorSystem",
    "silo_index",
]
