"""Running checked queries in Python: what the in-memory backend filters, sorts and
aggregates with. The rules are the SQL's (``pgactors.postgres.compiler``), so both
backends return the same rows in the same order.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from ..record import MISSING, Record
from .types import (
    INDEX_SEGMENT,
    Aggregate,
    All,
    Any_,
    Kind,
    Metric,
    Node,
    Not,
    Path,
    SortKey,
    components,
)

_KIND_RANK: Final = {"null": 0, "string": 1, "number": 2, "boolean": 3, "array": 4, "object": 5}
MISSING_GROUP: Final = "\x00missing"  # no JSON string holds NUL: never a stored value


def json_kind(value: Any) -> str:
    """The JSON kind of a decoded value: null, boolean, number, string, array or object."""
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
