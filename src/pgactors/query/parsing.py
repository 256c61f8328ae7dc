"""Checking what callers send: filters, paths, ``order_by``, query and aggregate arguments.

Everything is validated here, once, and raises :class:`InvalidQuery` with the place of
the fault (``where['a']['$gt']: ...``) before any backend runs the query.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from ..checks import int_in_range
from ..errors import InvalidQuery
from ..record import check_type, is_unicode
from .cursors import decode_cursor
from .types import (
    ALL_DATA,
    MAX_LIMIT,
    META_FIELDS,
    METRIC_FUNCTIONS,
    Aggregate,
    All,
    Any_,
    Cmp,
    Metric,
    Node,
    Not,
    Path,
    Query,
    SortKey,
)

_COMPARISONS: Final = ("$gt", "$gte", "$lt", "$lte")
_OPERATORS: Final = (
    "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$contains", "$not",
)  # fmt: skip


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


def index_path(text: object) -> Path:
    """What ``create_index`` indexes: a path, or ``ALL_DATA`` ("*": every path, for
    containment)."""
    if text == ALL_DATA:
        return Path(ALL_DATA)
    return parse_path(text)


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


# -- ordering and whole queries ------------------------------------------------------------


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
    if not int_in_range(limit, 1, MAX_LIMIT):
        raise InvalidQuery(f"limit: an int from 1 to {MAX_LIMIT}, got {limit!r}")
    if offset is None:
        offset = 0
    if not int_in_range(offset, 0):
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
