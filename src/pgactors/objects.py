"""Persistent objects: dataclasses (or pydantic models) stored as JSON by ``(type_name, id)``.

::

    @dataclass
    class UserProfile(PersistentObject):
        username: str = ""
        score: int = 0

    p = UserProfile(id="user-123", username="alice", score=100)
    await save_object(store, p)            # creates; a stale copy's save raises VersionConflict
    p = await load_object(store, UserProfile, "user-123")

The stored JSON is exactly ``to_data()`` (the fields except ``id``), so SQL such as
``data->>'username'`` works. Two things may be added to it:

- ``"_v"``: the reserved key holding the class's ``state_version`` when that is above 1.
  A missing ``"_v"`` means version 1. Loading older state runs ``upcasters`` (version n
  to n+1) in order; state newer than the class raises :class:`StateError`.
- keys the class does not know (written by a newer deployment): they are kept from the
  loaded state and written back by ``save_object`` (the class's own fields win).

The stored version travels with the object privately (not a field, not in ``==`` or
``repr``); ``save_object`` is a compare-and-set on it, so saving a stale copy raises
``VersionConflict``. Copies (``copy.copy``) carry the version they were made with.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import types
import typing
import weakref
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from typing import Any, ClassVar, Final, Self, TypeVar, Union

from .checks import int_in_range
from .errors import InvalidInput, PgActorsError
from .record import Record, check_type
from .store import Store

STATE_VERSION_KEY: Final = "_v"
"""The reserved JSON key holding the state version (only written when above 1)."""

Upcaster = Callable[[dict[str, Any]], dict[str, Any] | None]
"""Upgrades a state dict from version n to n+1; returns the new dict, or None after
changing its argument in place."""

_BOOKKEEPING_ATTR: Final = "_pgactors"


class StateError(PgActorsError):
    """Stored state cannot be turned into an object of this class (e.g. it is newer)."""


class Bookkeeping:
    """Stored version and unknown keys, attached to an object; immutable, replaced on change.

    Equal to every other instance, so it never affects the owner's ``==``.
    """

    __slots__ = ("unknown", "version")

    def __init__(self, version: int = 0, unknown: Mapping[str, Any] | None = None) -> None:
        self.version = version
        self.unknown: Mapping[str, Any] = types.MappingProxyType(dict(unknown or {}))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bookkeeping)

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"<pgactors version={self.version}>"

    def __deepcopy__(self, memo: dict[int, Any]) -> Bookkeeping:
        return Bookkeeping(self.version, copy.deepcopy(dict(self.unknown), memo))


_NO_BOOKKEEPING: Final = Bookkeeping()


def check_versioning(cls: type) -> None:
    """Refuse a class whose ``state_version`` or ``upcasters`` are malformed."""
    version = getattr(cls, "state_version", 1)
    if not int_in_range(version, 1):
        raise InvalidInput(f"{cls.__qualname__}.state_version must be an int >= 1, got {version!r}")
    upcasters = getattr(cls, "upcasters", {})
    if not isinstance(upcasters, Mapping) or not all(
        isinstance(k, int) and callable(f) for k, f in upcasters.items()
    ):
        raise InvalidInput(
            f"{cls.__qualname__}.upcasters must map int versions to functions, got {upcasters!r}"
        )


class Persistent:
    """What ``save_object`` and ``load_object`` need; shared by both base classes."""

    id: str
    type_name: ClassVar[str]
    state_version: ClassVar[int] = 1
    upcasters: ClassVar[Mapping[int, Upcaster]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type_name" not in cls.__dict__:
            cls.type_name = cls.__name__
        try:
            check_type(cls.type_name)
        except InvalidInput as exc:
            raise InvalidInput(
                f"{cls.__qualname__}.type_name: {exc} (set type_name = '...' on the class)"
            ) from None
        check_versioning(cls)

    def to_data(self) -> dict[str, Any]:
        """The state to store, as a JSON dict (overridable)."""
        raise NotImplementedError

    @classmethod
    def from_data(cls, id: str, data: dict[str, Any]) -> Self:
        """Build an object from its id and stored state (overridable)."""
        raise NotImplementedError

    @classmethod
    def known_keys(cls) -> frozenset[str]:
        """Keys of ``to_data()``; other stored keys are kept and written back unchanged.

        Override it together with ``to_data`` when that writes other keys than the fields.
        """
        raise NotImplementedError

    def snapshot(self) -> dict[str, Any]:
        """A private deep copy of ``to_data()``: later mutations of the object do not reach it."""
        data = self.to_data()
        if not isinstance(data, dict):
            raise InvalidInput(
                f"{type(self).__qualname__}.to_data() must return a dict, got {type(data).__name__}"
            )
        if STATE_VERSION_KEY in data:
            raise InvalidInput(
                f"{type(self).__qualname__}.to_data() contains the reserved key "
                f"{STATE_VERSION_KEY!r} (the state version)"
            )
        return copy.deepcopy(data)

    def _pgactors_bookkeeping(self) -> Bookkeeping:
        value = getattr(self, _BOOKKEEPING_ATTR, _NO_BOOKKEEPING)
        return value if isinstance(value, Bookkeeping) else _NO_BOOKKEEPING

    def _pgactors_attach(self, bookkeeping: Bookkeeping) -> None:
        # object.__setattr__ also works on frozen dataclasses.
        object.__setattr__(self, _BOOKKEEPING_ATTR, bookkeeping)

    @property
    def stored_version(self) -> int:
        """The version this object was loaded or last saved as; 0 if never stored."""
        return self._pgactors_bookkeeping().version


# -- dataclasses ---------------------------------------------------------------------------


_RESERVED_FIELDS: Final = frozenset({"type_name", "state_version", "upcasters", STATE_VERSION_KEY})


@dataclasses.dataclass
class PersistentObject(Persistent):
    """Base for dataclasses stored by ``(type_name, id)``; ``id`` is a keyword-only field.

    Class attributes: ``type_name`` (default: the class name), ``state_version`` and
    ``upcasters`` (see the module documentation).
    """

    id: str = dataclasses.field(kw_only=True)

    def to_data(self) -> dict[str, Any]:
        """The fields except ``id``; nested dataclasses become dicts, tuples lists.

        Values that are not JSON (datetimes, sets, ...) raise ``InvalidInput`` naming
        the field; override ``to_data``/``from_data`` to store them in another form.
        """
        name = type(self).__qualname__
        return {
            f.name: _to_json(getattr(self, f.name), f"{name}.{f.name}")
            for f in _state_fields(type(self))
        }

    @classmethod
    def from_data(cls, id: str, data: dict[str, Any]) -> Self:
        """Build from the stored dict; missing fields take their defaults."""
        hints = _type_hints(cls)
        kwargs: dict[str, Any] = {}
        missing = []
        for f in _state_fields(cls):
            if f.name in data:
                value = _from_json(hints.get(f.name, Any), data[f.name])
                if f.init:
                    kwargs[f.name] = value
                continue
            if (
                f.init
                and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
            ):
                missing.append(f.name)
        if missing:
            raise InvalidInput(
                f"stored {cls.type_name}/{id!r} lacks the field(s) {', '.join(missing)}, "
                f"which {cls.__qualname__} requires (give them defaults, or add an upcaster)"
            )
        obj = cls(id=id, **kwargs)
        for f in _state_fields(cls):
            if not f.init and f.name in data:
                object.__setattr__(obj, f.name, _from_json(hints.get(f.name, Any), data[f.name]))
        return obj

    @classmethod
    def known_keys(cls) -> frozenset[str]:
        """The field names except ``id``."""
        return frozenset(f.name for f in _state_fields(cls))


def _state_fields(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    fields = tuple(f for f in dataclasses.fields(cls) if f.name != "id")
    reserved = _RESERVED_FIELDS.intersection(f.name for f in fields)
    if reserved:
        raise InvalidInput(
            f"{cls.__qualname__} has dataclass field(s) {sorted(reserved)} whose names are "
            "reserved (annotate type_name/state_version/upcasters as ClassVar)"
        )
    return fields


# Resolved annotations by class: resolving them costs more than decoding a small state.
_HINTS: weakref.WeakKeyDictionary[type, dict[str, Any]] = weakref.WeakKeyDictionary()


def _type_hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        try:
            hints = _HINTS[cls] = typing.get_type_hints(cls)
        except Exception:  # unresolvable forward references (not kept: they may resolve later)
            return {}
    return hints


def _to_json(value: Any, where: str) -> Any:
    try:
        return _plain(value)
    except _NotJSON:
        return _located(value, where)


class _NotJSON(Exception):
    pass


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _plain(value: Any) -> Any:
    # The fast path: no error locations to build; on anything odd, _located redoes it.
    # Converters are looked up by exact class, so each value costs one dict lookup.
    convert = _CONVERTERS.get(value.__class__)
    if convert is None:
        convert = _converter(value)
    return convert(value)


def _same(value: Any) -> Any:
    return value


# Values of these classes are their own JSON: containers keep them without a call.
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plain_dict(value: dict[Any, Any]) -> dict[str, Any]:
    if not all(isinstance(k, str) for k in value):
        raise _NotJSON
    return {k: v if v.__class__ in _SCALARS else _plain(v) for k, v in value.items()}


def _plain_list(value: list[Any] | tuple[Any, ...]) -> list[Any]:
    return [v if v.__class__ in _SCALARS else _plain(v) for v in value]


def _plain_struct(value: Any) -> Any:
    return _msgspec().to_builtins(value)


def _not_json(value: Any) -> Any:
    raise _NotJSON


def _plain_fields(cls: type) -> Callable[[Any], dict[str, Any]]:
    names = _field_names(cls)

    def convert(value: Any) -> dict[str, Any]:
        plain = {}
        for name in names:
            v = getattr(value, name)
            plain[name] = v if v.__class__ in _SCALARS else _plain(v)
        return plain

    return convert


_CONVERTERS: dict[type, Callable[[Any], Any]] = {
    str: _same,
    int: _same,
    float: _same,
    bool: _same,
    type(None): _same,
    dict: _plain_dict,
    list: _plain_list,
    tuple: _plain_list,
}


def _converter(value: Any) -> Callable[[Any], Any]:
    """How ``_plain`` converts instances of ``value``'s class (cached per class)."""
    cls = value.__class__
    convert: Callable[[Any], Any]
    if issubclass(cls, str | int | float):
        convert = _same
    elif issubclass(cls, dict):
        convert = _plain_dict
    elif issubclass(cls, list | tuple):
        convert = _plain_list
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        convert = _plain_fields(cls)
    elif _is_struct(value):
        convert = _plain_struct
    else:
        return _not_json  # not cached: msgspec may be imported later
    _CONVERTERS[cls] = convert
    return convert


def _located(value: Any, where: str) -> Any:
    """``_plain`` that names where a non-JSON value sits."""
    if value is None or isinstance(value, str | int | float):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            name: _located(getattr(value, name), f"{where}.{name}")
            for name in _field_names(type(value))
        }
    if _is_struct(value):
        return _msgspec().to_builtins(value)
    if isinstance(value, list | tuple):
        return [_located(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        result = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidInput(f"{where} has a dict key {k!r}: JSON object keys must be str")
            result[k] = _located(v, f"{where}[{k!r}]")
        return result
    hint = (
        " (store it as an ISO string, e.g. with isoformat())"
        if isinstance(value, datetime | date | time | timedelta)
        else ""
    )
    raise InvalidInput(
        f"{where} is a {type(value).__name__}, which is not JSON{hint}: allowed are "
        "str, int, float, bool, None, list, tuple, dict (str keys), dataclasses and "
        "msgspec Structs; override to_data/from_data for other types"
    )


def _fits(hint: Any, value: Any) -> bool:
    if (isinstance(hint, type) and dataclasses.is_dataclass(hint)) or _is_struct_type(hint):
        return isinstance(value, dict)
    origin = typing.get_origin(hint)
    return (origin is dict and isinstance(value, dict)) or (
        origin in (list, tuple) and isinstance(value, list)
    )


def _from_json(hint: Any, value: Any) -> Any:
    """Rebuild nested dataclasses and tuples that ``_to_json`` flattened, guided by ``hint``."""
    origin = typing.get_origin(hint)
    if _is_struct_type(hint):
        return _msgspec().convert(value, type=hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
        hints = _type_hints(hint)
        fields = {f.name: f for f in dataclasses.fields(hint)}
        kwargs = {
            k: _from_json(hints.get(k, Any), v)
            for k, v in value.items()
            if k in fields and fields[k].init
        }
        return hint(**kwargs)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(hint):
            if _fits(arg, value):
                return _from_json(arg, value)
        return value
    if origin is list and isinstance(value, list):
        (item,) = typing.get_args(hint) or (Any,)
        return [_from_json(item, v) for v in value]
    if (origin is tuple or hint is tuple) and isinstance(value, list):
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_json(args[0], v) for v in value)
        if args and len(args) == len(value):
            return tuple(_from_json(a, v) for a, v in zip(args, value, strict=True))
        return tuple(value)
    if origin is dict and isinstance(value, dict):
        args = typing.get_args(hint)
        item = args[1] if len(args) == 2 else Any
        return {k: _from_json(item, v) for k, v in value.items()}
    return value


# -- storing -------------------------------------------------------------------------------

P = TypeVar("P", bound=Persistent)


def _stored_data(obj: Persistent) -> dict[str, Any]:
    cls = type(obj)
    data = obj.snapshot()
    unknown = obj._pgactors_bookkeeping().unknown
    if unknown:
        data = {**copy.deepcopy(dict(unknown)), **data}
    if cls.state_version > 1:
        data[STATE_VERSION_KEY] = cls.state_version
    return data


async def save_object(store: Store, obj: Persistent) -> Record:
    """Store ``obj`` as a compare-and-set on the version it carries (0: create only).

    The state is snapshotted synchronously, before the first ``await``: asyncio does
    not switch tasks between awaits, so a task mutating the object cannot tear the
    saved state. A stale object (another save happened since it was loaded) raises
    ``VersionConflict``, as do two overlapping saves of the same object.
    """
    data = _stored_data(obj)
    bookkeeping = obj._pgactors_bookkeeping()
    record = await store.save(
        type(obj).type_name, obj.id, data, expected_version=bookkeeping.version
    )
    obj._pgactors_attach(Bookkeeping(record.version, bookkeeping.unknown))
    return record


async def load_object(store: Store, cls: type[P], id: str) -> P | None:
    """Load the object, upgrading older state with ``cls.upcasters``; None if absent."""
    record = await store.load(cls.type_name, id)
    if record is None:
        return None
    if not isinstance(record.data, dict):
        raise StateError(
            f"stored {cls.type_name}/{id!r} is a {type(record.data).__name__}, not a JSON "
            f"object, so it is not a {cls.__qualname__}"
        )
    data = _upcast(cls, id, copy.deepcopy(record.data))
    known = cls.known_keys()
    try:
        obj = cls.from_data(id, data)
    except PgActorsError:
        raise
    except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise StateError(
            f"stored {cls.type_name}/{id!r} does not fit {cls.__qualname__}: {exc}"
        ) from exc
    unknown = {k: v for k, v in data.items() if k not in known}
    obj._pgactors_attach(Bookkeeping(record.version, unknown))
    return obj


async def delete_object(store: Store, obj: Persistent) -> bool:
    """Delete ``obj`` if still at the version it carries; False if it did not exist.

    A changed stored version raises ``VersionConflict``. Afterwards the object counts
    as new, so saving it creates it again.
    """
    bookkeeping = obj._pgactors_bookkeeping()
    deleted = await store.delete(type(obj).type_name, obj.id, expected_version=bookkeeping.version)
    obj._pgactors_attach(Bookkeeping(0, bookkeeping.unknown))
    return deleted


def _upcast(cls: type[Persistent], id: str, data: dict[str, Any]) -> dict[str, Any]:
    return upcast(cls, data, f"stored {cls.type_name}/{id!r}")


def upcast(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    """Pop ``"_v"`` from ``data`` and run ``cls.upcasters`` up to ``cls.state_version``.

    Raises :class:`StateError` for a state newer than the class or a missing upcaster.
    """
    stored = data.pop(STATE_VERSION_KEY, 1)
    target: int = getattr(cls, "state_version", 1)
    upcasters: Mapping[int, Upcaster] = getattr(cls, "upcasters", {})
    if not int_in_range(stored, 1):
        raise StateError(f"{where} has an invalid state version {STATE_VERSION_KEY}={stored!r}")
    if stored > target:
        raise StateError(
            f"{where} has state version {stored}, newer than {cls.__qualname__}.state_version "
            f"= {target}: state newer than the class: deploy the newer code"
        )
    for version in range(stored, target):
        upcaster = upcasters.get(version)
        if upcaster is None:
            raise StateError(
                f"{where} has state version {version} but {cls.__qualname__} has no upcaster "
                f"from version {version} to {version + 1}: add upcasters[{version}]"
            )
        result = upcaster(data)
        data = data if result is None else result
        if not isinstance(data, dict):
            raise StateError(
                f"{cls.__qualname__}.upcasters[{version}] returned a {type(data).__name__}, "
                "not a dict"
            )
    return data


__all__ = [
    "STATE_VERSION_KEY",
    "PersistentObject",
    "StateError",
    "Upcaster",
    "check_versioning",
    "delete_object",
    "load_object",
    "save_object",
    "state_from_json",
    "state_keys",
    "state_to_json",
    "upcast",
]


def state_to_json(state: Any, where: str = "state") -> Any:
    """JSON for a state: a dataclass, pydantic model, msgspec Struct, dict or JSON value."""
    dump = getattr(state, "model_dump", None)
    if callable(dump) and not isinstance(state, type):
        return dump(mode="json")
    return _to_json(state, where)


def state_from_json(hint: Any, data: Any, where: str = "state") -> Any:
    """Rebuild a state of type ``hint`` from its JSON (the inverse of :func:`state_to_json`).

    Raises :class:`StateError` when the JSON does not fit the type.
    """
    try:
        validate = getattr(hint, "model_validate", None)
        if callable(validate):
            return validate(data)
        return _from_json(hint, data)
    except PgActorsError:
        raise
    except (TypeError, ValueError) as exc:  # pydantic's and msgspec's errors are ValueErrors
        raise StateError(f"{where} does not fit {_name(hint)}: {exc}") from exc


def state_keys(hint: Any) -> frozenset[str] | None:
    """The top-level keys a state type writes; None when it keeps any key (a dict)."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return frozenset(f.name for f in dataclasses.fields(hint))
    if _is_struct_type(hint):
        return frozenset(_struct_names(hint))
    fields = getattr(hint, "model_fields", None)
    if isinstance(fields, Mapping):
        return frozenset(fields)
    return None


def _name(hint: Any) -> str:
    return getattr(hint, "__qualname__", repr(hint))


# -- msgspec (optional): Structs convert through msgspec itself ----------------------------


def _msgspec() -> Any:
    # Only a Struct can exist if msgspec was imported, so never import it ourselves.
    return sys.modules.get("msgspec")


def _is_struct(value: Any) -> bool:
    msgspec = _msgspec()
    return msgspec is not None and isinstance(value, msgspec.Struct)


def _is_struct_type(hint: Any) -> bool:
    msgspec = _msgspec()
    return msgspec is not None and isinstance(hint, type) and issubclass(hint, msgspec.Struct)


def _struct_names(hint: type) -> list[str]:
    # The names as encoded (a Struct may rename fields).
    info = _msgspec().structs.fields(hint)
    return [f.encode_name for f in info]
