"""Queries over stored state: a JSON filter language, checked once, then run two ways.

A filter is a JSON-able dict, so the CLI and other languages can send one::

    {"profile.level": {"$gte": 3}, "$or": [{"name": "ann"}, {"@id": {"$in": ["a", "b"]}}]}

Keys are dotted paths into the data; ``@id``, ``@version``, ``@created_at`` and
``@updated_at`` address the metadata. ``parse_filter`` turns the dict into a tree or
raises :class:`InvalidQuery` before any SQL runs. The PostgreSQL backend compiles the tree
with ``pgactors.postgres.compiler`` (paths and values are always parameters, never SQL
text); the in-memory backend evaluates it with :func:`matches`. Both follow the same rules:

- ``$eq`` (and a bare value): present and JSON-equal (1 equals 1.0; true is not 1);
  ``$ne``: not ``$eq``, so a missing value matches. ``$in`` / ``$nin`` likewise.
- ``$gt $gte $lt $lte``: present and of the operand's kind (number with number, string
  with string, compared by code point); otherwise no match.
- ``$exists``, ``$contains`` (JSONB containment, ``@>``), ``$and``, ``$or``, ``$not``.

Ordering (``order_by=["-score", "@id"]``) is total: ties are broken by ``@id``, missing
values sort last, and values of different kinds sort null < string < number < boolean <
array < object (arrays and objects tie among themselves). Pages continue from an opaque
cursor (keyset pagination), so inserts between pages neither repeat nor skip a match.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Literal

from .errors import InvalidQuery
from .record import MISSING, Record, check_type, is_unicode

META_FIELDS: Final = ("id", "version", "created_at", "updated_at")
MAX_LIMIT: Final = 10_000
INDEX_SEGMENT: Final = re.compile(r"-?[0-9]+")  # a segment that can index an array
_COMPARISONS: Final = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_OPERATORS: Final = (
    "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$contains", "$not",
)  # fmt: skip
_KIND_RANK: Final = {"null": 0, "string": 1, "number": 2, "boolean": 3, "array": 4, "object": 5}


# -- the tree ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Path:
    """A dotted path into the data (``keys``), or a metadata column (``meta``)."""

    text: str
    keys: tuple[str, ...] = ()
    meta: str | None = None


@dataclass(frozen=True, slots=True)
class Cmp:
    """One test of one path: ``op`` is eq, gt, gte, lt, lte, in, exists or contains."""

    path: Path
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class All:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Any_:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Node


Node = Cmp | All | Any_ | Not


def parse_path(text: object, where: str = "path") -> Path:
    """A path string: ``a.b.c`` or ``@id``/``@version``/``@created_at``/``@updated_at``."""
    if not isinstance(text, str) or not text:
        raise InvalidQuery(f"{where}: a path is a non-empty string, got {text!r}")
    if "\x00" in text or not is_unicode(text):
        raise InvalidQuery(f"{where}: path {text!r} contains a NUL or a lone surrogate")
    if text.startswith("@"):
        if text[1:] not in META_FIELDS:
            raise InvalidQuery(
                f"{where}: unknown metadata field {text!r}; allowed: "
                + ", ".join("@" + m for m in META_FIELDS)
            )
        return Path(text, meta=text[1:])
    if text.startswith("$"):
        raise InvalidQuery(f"{where}: unknown operator {text!r}; allowed: {_allowed_ops()}")
    keys = tuple(text.split("."))
    if any(not k for k in keys):
        raise InvalidQuery(f"{where}: path {text!r} has an empty segment (use 'a.b', not 'a..b')")
    return Path(text, keys=keys)


def parse_filter(where: object) -> Node:
    """Check a filter dict and return its tree; raise :class:`InvalidQuery` if malformed."""
    if where is None:
        return All(())
    return _parse_dict(where, "where")


def _allowed_ops() -> str:
    return ", ".join((*_OPERATORS, "$and", "$or"))


def _parse_dict(where: object, at: str) -> Node:
    if not isinstance(where, Mapping):
        raise InvalidQuery(f"{at}: a filter is a dict, got {type(where).__name__}")
    items: list[Node] = []
    for key, value in where.items():
        if not isinstance(key, str):
            raise InvalidQuery(f"{at}: keys are strings, got {key!r}")
        here = f"{at}[{key!r}]"
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise InvalidQuery(f"{here}: expects a non-empty list of filters")
            parts = tuple(_parse_dict(v, f"{here}[{i}]") for i, v in enumerate(value))
            items.append(All(parts) if key == "$and" else Any_(parts))
        elif key == "$not":
            items.append(Not(_parse_dict(value, here)))
        else:
            items.append(_parse_field(parse_path(key, here), value, here))
    return items[0] if len(items) == 1 else All(tuple(items))


def _is_operator_dict(value: object) -> bool:
    return isinstance(value, Mapping) and any(
        isinstance(k, str) and k.startswith("$") for k in value
    )


def _parse_field(path: Path, value: object, at: str) -> Node:
    if not _is_operator_dict(value):
        return Cmp(path, "eq", _operand(path, "$eq", value, at))
    assert isinstance(value, Mapping)
    tests: list[Node] = []
    for op, operand in value.items():
        here = f"{at}[{op!r}]"
        if not isinstance(op, str) or not op.startswith("$"):
            raise InvalidQuery(
                f"{at}: mixes operators and plain keys ({op!r}); use one or the other"
            )
        if op in ("$eq", "$ne"):
            test: Node = Cmp(path, "eq", _operand(path, op, operand, here))
            tests.append(Not(test) if op == "$ne" else test)
        elif op in _COMPARISONS:
            tests.append(Cmp(path, op[1:], _ordered_operand(path, op, operand, here)))
        elif op in ("$in", "$nin"):
            if not isinstance(operand, list | tuple):
                raise InvalidQuery(
                    f"{here}: expects a list of values, got {type(operand).__name__}"
                )
            values = tuple(_operand(path, op, v, f"{here}[{i}]") for i, v in enumerate(operand))
            test = Cmp(path, "in", values)
            tests.append(Not(test) if op == "$nin" else test)
        elif op == "$exists":
            if not isinstance(operand, bool):
                raise InvalidQuery(f"{here}: expects true or false, got {operand!r}")
            test = Cmp(path, "exists", None)
            tests.append(test if operand else Not(test))
        elif op == "$contains":
            if path.meta is not None:
                raise InvalidQuery(f"{here}: $contains applies to data paths, not {path.text}")
            tests.append(Cmp(path, "contains", _json_operand(operand, here)))
        elif op == "$not":
            tests.append(Not(_parse_field(path, operand, here)))
        else:
            raise InvalidQuery(f"{here}: unknown operator {op!r}; allowed: {_allowed_ops()}")
    return tests[0] if len(tests) == 1 else All(tuple(tests))


def _json_operand(value: object, at: str) -> Any:
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidQuery(f"{at}: the operand is not JSON ({exc})") from None
    if "\\u0000" in text:
        raise InvalidQuery(f"{at}: the operand contains a NUL character")
    if not is_unicode(text):
        raise InvalidQuery(f"{at}: the operand contains a lone surrogate (not valid Unicode)")
    return json.loads(text)  # normalised: tuples become lists, keys are checked


def _operand(path: Path, op: str, value: object, at: str) -> Any:
    if path.meta is None:
        return _json_operand(value, at)
    return _meta_operand(path, op, value, at)


def _meta_operand(path: Path, op: str, value: object, at: str) -> Any:
    if path.meta == "id":
        if not isinstance(value, str) or "\x00" in value or not is_unicode(value):
            raise InvalidQuery(
                f"{at}: @id compares with strings (valid Unicode, no NUL), got {value!r}"
            )
        return value
    if path.meta == "version":
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidQuery(f"{at}: @version compares with integers, got {value!r}")
        return value
    return _timestamp(value, at, path.text)


def _timestamp(value: object, at: str, name: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidQuery(
                f"{at}: {name} compares with ISO 8601 timestamps, got {value!r}"
            ) from None
    if not isinstance(value, datetime):
        raise InvalidQuery(f"{at}: {name} compares with ISO 8601 timestamps, got {value!r}")
    if value.tzinfo is None:
        raise InvalidQuery(
            f"{at}: {name} needs a timezone in the timestamp (e.g. '2026-01-01T00:00:00Z'), "
            f"got {value.isoformat()!r}"
        )
    return value


def _ordered_operand(path: Path, op: str, value: object, at: str) -> Any:
    if path.meta is not None:
        return _meta_operand(path, op, value, at)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidQuery(
            f"{at}: {op} compares with a number or a string, got {type(value).__name__} {value!r}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidQuery(f"{at}: {op} needs a finite number, got {value!r}")
    if isinstance(value, str) and ("\x00" in value or not is_unicode(value)):
        raise InvalidQuery(f"{at}: the operand contains a NUL or a lone surrogate")
    return value


# -- ordering ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SortKey:
    path: Path
    desc: bool = False


def parse_order(order_by: object) -> tuple[SortKey, ...]:
    """``["-score", "@id"]`` as sort keys, ending with ``@id`` so the order is total."""
    if order_by is None:
        order_by = []
    if isinstance(order_by, str):
        order_by = [order_by]
    if not isinstance(order_by, list | tuple):
        raise InvalidQuery(f"order_by: a list of paths (e.g. ['-score', '@id']), got {order_by!r}")
    keys: list[SortKey] = []
    for i, item in enumerate(order_by):
        if not isinstance(item, str):
            raise InvalidQuery(f"order_by[{i}]: a path string, got {item!r}")
        desc = item.startswith("-")
        path = parse_path(item[1:] if desc else item, f"order_by[{i}]")
        keys.append(SortKey(path, desc))
        if path.meta == "id":
            return tuple(keys)  # unique: anything after it never matters
    keys.append(SortKey(Path("@id", meta="id")))
    return tuple(keys)


# -- a checked query ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """A validated ``store.query``: what backends run."""

    type: str
    where: Node
    order: tuple[SortKey, ...]
    limit: int
    offset: int = 0
    after: tuple[Any, ...] | None = None
    fingerprint: str = ""


@dataclass
class Page:
    """One page of results; ``next`` continues after it (None on the last page)."""

    items: list[Record]
    next: str | None = None

    def __iter__(self) -> Iterator[Record]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def build_query(
    type: str,
    where: object,
    order_by: object,
    limit: object,
    after: object,
    offset: object,
) -> Query:
    """Validate every argument of ``store.query``; raise :class:`InvalidQuery`."""
    type = check_type(type)
    node = parse_filter(where)
    order = parse_order(order_by)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery(f"limit: an int from 1 to {MAX_LIMIT}, got {limit!r}")
    if offset is None:
        offset = 0
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidQuery(f"offset: an int >= 0, got {offset!r}")
    fingerprint = _fingerprint(type, where, order)
    values = None
    if after is not None:
        if offset:
            raise InvalidQuery("after and offset cannot be combined: use one way of paging")
        values = decode_cursor(after, fingerprint, order)
    return Query(type, node, order, limit, offset, values, fingerprint)


def _fingerprint(type: str, where: object, order: tuple[SortKey, ...]) -> str:
    text = json.dumps(
        [type, where, [("-" if k.desc else "") + k.path.text for k in order]],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- cursors: the sort values of the last row of a page ----------------------------------------


def encode_cursor(fingerprint: str, values: Sequence[Any]) -> str:
    """An opaque cursor holding the sort values of the last row."""
    parts = [_tag(v) for v in values]
    text = json.dumps({"q": fingerprint, "v": parts}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: object, fingerprint: str, order: tuple[SortKey, ...]) -> tuple[Any, ...]:
    """The sort values in ``cursor``; InvalidQuery if malformed or from another query."""
    if not isinstance(cursor, str):
        raise InvalidQuery(f"after: a cursor string from page.next, got {cursor!r}")
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        values = tuple(_untag(v) for v in raw["v"])
        made_for = raw["q"]
    except (ValueError, TypeError, KeyError):
        raise InvalidQuery("after: not a cursor made by page.next") from None
    if made_for != fingerprint or len(values) != len(components(order)):
        raise InvalidQuery(
            "after: this cursor belongs to a query with another type, filter or order_by"
        )
    return values


def _tag(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"n": str(value)}
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    return value


def _untag(value: Any) -> Any:
    if isinstance(value, dict):
        if "n" in value:
            return Decimal(value["n"])
        return datetime.fromisoformat(value["t"])
    if value is None or isinstance(value, bool | int | str):
        return value
    raise ValueError("bad cursor value")


# -- sort components (shared by SQL and Python) ----------------------------------------------

Kind = Literal["missing", "rank", "num", "text", "meta"]


@dataclass(frozen=True, slots=True)
class Component:
    """One column of the total order: a path key spreads over missing/rank/num/text."""

    key: SortKey
    kind: Kind

    @property
    def descending(self) -> bool:
        return self.key.desc and self.kind != "missing"  # missing always sorts last


def components(order: tuple[SortKey, ...]) -> list[Component]:
    result: list[Component] = []
    for key in order:
        if key.path.meta is not None:
            result.append(Component(key, "meta"))
        else:
            kinds: tuple[Kind, ...] = ("missing", "rank", "num", "text")
            result.extend(Component(key, kind) for kind in kinds)
    return result


# -- evaluation in Python (the in-memory backend) --------------------------------------------


def json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def json_equal(a: Any, b: Any) -> bool:
    """JSONB equality: numbers by value, booleans only with booleans, containers deeply."""
    kind = json_kind(a)
    if kind != json_kind(b):
        return False
    if kind == "array":
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if kind == "object":
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def json_contains(a: Any, b: Any, top: bool = True) -> bool:
    """JSONB containment ``a @> b``, including its top-level array-contains-scalar rule."""
    kind_a, kind_b = json_kind(a), json_kind(b)
    if kind_a == "object":
        return kind_b == "object" and all(
            k in a and _nested_contains(a[k], v) for k, v in b.items()
        )
    if kind_a == "array":
        if kind_b == "array":
            return all(any(_element_contains(x, e) for x in a) for e in b)
        if top and kind_b not in ("object", "array"):
            return any(json_kind(x) == kind_b and json_equal(x, b) for x in a)
        return False
    return kind_b == kind_a and json_equal(a, b)


def _nested_contains(a: Any, b: Any) -> bool:
    kind_a, kind_b = json_kind(a), json_kind(b)
    if (kind_a in ("object", "array")) != (kind_b in ("object", "array")):
        return False
    if kind_a in ("object", "array"):
        return kind_a == kind_b and json_contains(a, b, top=False)
    return json_equal(a, b)


def _element_contains(x: Any, e: Any) -> bool:
    if json_kind(e) in ("object", "array"):
        return json_kind(x) == json_kind(e) and json_contains(x, e, top=False)
    return json_equal(x, e)


def lookup(record: Record, path: Path) -> Any:
    """The value at ``path`` in ``record``, or :data:`MISSING`."""
    if path.meta is not None:
        return getattr(record, path.meta)
    value: Any = record.data
    for key in path.keys:
        if isinstance(value, dict):
            if key not in value:
                return MISSING
            value = value[key]
        elif isinstance(value, list) and INDEX_SEGMENT.fullmatch(key):
            index = int(key)
            if not -len(value) <= index < len(value):
                return MISSING
            value = value[index]
        else:
            return MISSING
    return value


def matches(node: Node, record: Record) -> bool:
    """True if ``record`` passes the filter (the same rules as the SQL)."""
    if isinstance(node, All):
        return all(matches(n, record) for n in node.items)
    if isinstance(node, Any_):
        return any(matches(n, record) for n in node.items)
    if isinstance(node, Not):
        return not matches(node.item, record)
    value = lookup(record, node.path)
    if node.op == "exists":
        return value is not MISSING
    if value is MISSING:
        return False
    if node.path.meta is not None:
        return _meta_test(node.op, value, node.value)
    if node.op == "eq":
        return json_equal(value, node.value)
    if node.op == "in":
        return any(json_equal(value, v) for v in node.value)
    if node.op == "contains":
        return json_contains(value, node.value)
    operand = node.value
    if json_kind(value) != json_kind(operand):
        return False
    return _compare(node.op, value, operand)


def _meta_test(op: str, value: Any, operand: Any) -> bool:
    if op == "eq":
        return bool(value == operand)
    if op == "in":
        return any(value == v for v in operand)
    return _compare(op, value, operand)


def _compare(op: str, value: Any, operand: Any) -> bool:
    if op == "gt":
        return bool(value > operand)
    if op == "gte":
        return bool(value >= operand)
    if op == "lt":
        return bool(value < operand)
    return bool(value <= operand)


def sort_values(order: tuple[SortKey, ...], record: Record) -> tuple[Any, ...]:
    """The values of every sort component of ``record`` (what a cursor holds)."""
    values: list[Any] = []
    for component in components(order):
        if component.kind == "meta":
            assert component.key.path.meta is not None
            values.append(getattr(record, component.key.path.meta))
            continue
        value = lookup(record, component.key.path)
        values.append(_component_value(component.kind, value))
    return tuple(values)


def _component_value(kind: Kind, value: Any) -> Any:
    present = value is not MISSING
    value_kind = json_kind(value) if present else None
    if kind == "missing":
        return not present
    if kind == "rank":
        return _KIND_RANK[value_kind] if value_kind else 0
    if kind == "num":
        if value_kind != "number":
            return Decimal(0)
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if value_kind == "string":
        return value
    if value_kind == "boolean":
        return "true" if value else "false"
    return ""


def after_cursor(
    order: tuple[SortKey, ...], values: tuple[Any, ...], cursor: tuple[Any, ...]
) -> bool:
    """True if a row with sort ``values`` comes after the ``cursor`` row."""
    for component, value, last in zip(components(order), values, cursor, strict=True):
        if value == last:
            continue
        return bool(value < last) if component.descending else bool(value > last)
    return False


def sort_records(order: tuple[SortKey, ...], records: list[Record]) -> list[Record]:
    """``records`` in query order."""
    keyed = [(sort_values(order, r), r) for r in records]
    for index, component in reversed(list(enumerate(components(order)))):
        keyed.sort(key=lambda item: item[0][index], reverse=component.descending)
    return [r for _, r in keyed]


# -- aggregates ---------------------------------------------------------------------------------

METRIC_FUNCTIONS: Final = ("count", "sum", "avg", "min", "max")


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    function: str
    path: Path | None = None


@dataclass(frozen=True)
class Aggregate:
    """A validated ``store.aggregate``."""

    type: str
    where: Node
    group_by: tuple[Path, ...]
    metrics: tuple[Metric, ...]
    order: tuple[SortKey, ...] = field(default=())


def build_aggregate(type: str, where: object, group_by: object, metrics: object) -> Aggregate:
    """Validate the arguments of ``store.aggregate``; raise :class:`InvalidQuery`."""
    type = check_type(type)
    node = parse_filter(where)
    if group_by is None:
        group_by = []
    if isinstance(group_by, str):
        group_by = [group_by]
    if not isinstance(group_by, list | tuple):
        raise InvalidQuery(f"group_by: a path or a list of paths, got {group_by!r}")
    paths = tuple(parse_path(p, f"group_by[{i}]") for i, p in enumerate(group_by))
    if metrics is None:
        metrics = {"count": "count"}
    if not isinstance(metrics, Mapping) or not metrics:
        raise InvalidQuery(
            "metrics: a non-empty dict such as {'n': 'count', 'avg_score': ('avg', 'score')}"
        )
    parsed: list[Metric] = []
    for name, spec in metrics.items():
        at = f"metrics[{name!r}]"
        if not isinstance(name, str) or not name:
            raise InvalidQuery(f"{at}: metric names are non-empty strings")
        if name in {p.text for p in paths}:
            raise InvalidQuery(f"{at}: the name is also a group_by path; pick another")
        if spec == "count":
            parsed.append(Metric(name, "count"))
            continue
        if not isinstance(spec, list | tuple) or len(spec) != 2 or spec[0] not in METRIC_FUNCTIONS:
            raise InvalidQuery(
                f"{at}: 'count' or a pair (function, path) with function one of "
                f"{', '.join(METRIC_FUNCTIONS)}, got {spec!r}"
            )
        path = parse_path(spec[1], at)
        if path.meta is not None and path.meta != "version" and spec[0] in ("sum", "avg"):
            raise InvalidQuery(f"{at}: {spec[0]} needs numbers; {path.text} is not a number")
        parsed.append(Metric(name, spec[0], path))
    return Aggregate(type, node, paths, tuple(parsed), tuple(SortKey(p) for p in paths))


def aggregate_records(spec: Aggregate, records: list[Record]) -> list[dict[str, Any]]:
    """``store.aggregate`` over records in memory (the same rules as the SQL)."""
    groups: dict[tuple[Any, ...], list[Record]] = {}
    for record in records:
        group = tuple(json.dumps(_plain(lookup(record, p)), sort_keys=True) for p in spec.group_by)
        groups.setdefault(group, []).append(record)
    rows: list[tuple[Record, dict[str, Any]]] = []
    for members in groups.values():
        first = members[0]
        row: dict[str, Any] = {}
        for path in spec.group_by:
            value = lookup(first, path)
            row[path.text] = None if value is MISSING else value
        for metric in spec.metrics:
            row[metric.name] = _metric(metric, members)
        rows.append((first, row))
    if spec.order:
        position = {id(r): i for i, r in enumerate(sort_records(spec.order, [f for f, _ in rows]))}
        rows.sort(key=lambda item: position[id(item[0])])
    return [row for _, row in rows]


def _plain(value: Any) -> Any:
    if value is MISSING:
        return MISSING_GROUP
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


MISSING_GROUP: Final = "\x00missing"  # no JSON string holds NUL: never a stored value


def _metric(metric: Metric, records: list[Record]) -> Any:
    if metric.path is None:
        return len(records)
    values = [lookup(r, metric.path) for r in records]
    if metric.function == "count":
        return sum(1 for v in values if v is not MISSING)
    if metric.path.meta is not None:
        present = [v for v in values if v is not MISSING]
    else:
        present = [v for v in values if json_kind(v) == "number" and v is not MISSING]
    if not present:
        return None
    reducers: dict[str, Callable[[list[Any]], Any]] = {
        "sum": lambda v: number(_decimal_sum(v)),
        "avg": lambda v: float(_decimal_sum(v) / len(v)),
        "min": min,
        "max": max,
    }
    return reducers[metric.function](present)


def _decimal_sum(values: list[Any]) -> Decimal:
    total = Decimal(0)
    for value in values:
        total += Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    return total


def number(value: Decimal) -> int | float:
    """A PostgreSQL numeric as Python: an int when it is whole, else a float."""
    return int(value) if value == value.to_integral_value() else float(value)


__all__ = [
    "MAX_LIMIT",
    "META_FIELDS",
    "Aggregate",
    "Page",
    "Query",
    "aggregate_records",
    "build_aggregate",
    "build_query",
    "matches",
    "parse_filter",
    "parse_order",
]
