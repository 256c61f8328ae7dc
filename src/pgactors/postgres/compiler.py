"""Checked queries (``pgactors.query``) compiled to SQL for PostgreSQL.

Everything is composed with ``psycopg.sql``: the fixed text of this module is ``sql.SQL``,
and every path and value the caller sent is a bound parameter (``%(qN)s``), never SQL
text. The statement builders take the head of the statement (the named queries
``query_columns``, ``query_from``, ``export_records``...) and return a :class:`Statement`.

The rules match the in-memory evaluation of ``pgactors.query``, so both backends
return the same rows in the same order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

from psycopg import sql

from ..query import (
    INDEX_SEGMENT,
    Aggregate,
    All,
    Any_,
    Cmp,
    Component,
    Metric,
    Node,
    Not,
    Path,
    Query,
    SortKey,
    components,
)

_META_SQL: Final = {
    "id": (sql.SQL("s.id"), "text"),
    "version": (sql.SQL("s.version"), "bigint"),
    "created_at": (sql.SQL("s.created_at"), "timestamptz"),
    "updated_at": (sql.SQL("s.updated_at"), "timestamptz"),
}
_OPERATORS: Final = {
    "gt": sql.SQL(">"),
    "gte": sql.SQL(">="),
    "lt": sql.SQL("<"),
    "lte": sql.SQL("<="),
}
_RANK_SQL: Final = sql.SQL(
    "CASE jsonb_typeof({x}) WHEN 'null' THEN 0 WHEN 'string' THEN 1 WHEN 'number' THEN 2 "
    "WHEN 'boolean' THEN 3 WHEN 'array' THEN 4 WHEN 'object' THEN 5 ELSE 0 END"
)
_NUM_SQL: Final = sql.SQL("CASE WHEN jsonb_typeof({x}) = 'number' THEN ({x})::numeric END")
_TEXT_SQL: Final = sql.SQL(
    "(CASE jsonb_typeof({x}) WHEN 'string' THEN {x} #>> ARRAY[]::text[] "
    "WHEN 'boolean' THEN ({x})::text ELSE '' END) COLLATE \"C\""
)
_TRUE: Final = sql.SQL("TRUE")
_FALSE: Final = sql.SQL("FALSE")


@dataclass(frozen=True)
class Statement:
    """A composed statement and the values of its parameters, ready for ``execute``."""

    query: sql.Composed
    params: dict[str, Any] = field(default_factory=dict)


class SqlParams:
    """Collects parameter values and hands out their placeholders.

    ``indexed``: the paths of the queried type that have a b-tree index; equality on
    them is compiled for that index rather than for the GIN containment index.
    """

    def __init__(self, indexed: frozenset[str] = frozenset(), **values: Any) -> None:
        self.values: dict[str, Any] = dict(values)
        self.indexed = indexed
        self._paths: dict[tuple[str, ...], sql.Composable] = {}

    def add(self, value: Any, cast: str) -> sql.Composable:
        """A new parameter holding ``value``, cast to ``cast`` (a fixed type name)."""
        name = f"q{len(self.values)}"
        self.values[name] = value
        return sql.SQL("{}::{}").format(sql.Placeholder(name), sql.SQL(cast))

    def path(self, keys: tuple[str, ...]) -> sql.Composable:
        """``(s.data #> <path>)``, one parameter per distinct path."""
        expression = self._paths.get(keys)
        if expression is None:
            placeholder = self.add(list(keys), "text[]")
            expression = self._paths[keys] = sql.SQL("(s.data #> {})").format(placeholder)
        return expression


# -- filters ----------------------------------------------------------------------------


def filter_sql(node: Node, params: SqlParams) -> sql.Composable:
    """The filter as a SQL boolean over the state table aliased ``s``."""
    if isinstance(node, All):
        if not node.items:
            return _TRUE
        return _joined(" AND ", [filter_sql(n, params) for n in node.items])
    if isinstance(node, Any_):
        return _joined(" OR ", [filter_sql(n, params) for n in node.items])
    if isinstance(node, Not):
        # SQL's NULL would make NOT unknown; a test that cannot match is simply false.
        return sql.SQL("(NOT COALESCE({}, FALSE))").format(filter_sql(node.item, params))
    if node.path.meta is not None:
        return _meta_sql(node, params)
    x = params.path(node.path.keys)
    if node.op == "exists":
        return sql.SQL("({} IS NOT NULL)").format(x)
    if node.op == "eq":
        return _eq_sql(node, x, params)
    if node.op == "in":
        if not node.value:
            return _FALSE
        values = params.add([_dumps(v) for v in node.value], "jsonb[]")
        return sql.SQL("({} = ANY({}))").format(x, values)
    if node.op == "contains":
        return _contains_sql(node, x, params)
    operator = _OPERATORS[node.op]
    if isinstance(node.value, str):
        return sql.SQL(
            "(jsonb_typeof({x}) = 'string' AND ({x} #>> ARRAY[]::text[]) COLLATE \"C\" {op} {v})"
        ).format(x=x, op=operator, v=params.add(node.value, "text"))
    # jsonb orders numbers by value, so an expression index on the path serves this.
    operand = params.add(_dumps(node.value), "jsonb")
    return sql.SQL("({x} {op} {v} AND jsonb_typeof({x}) = 'number')").format(
        x=x, op=operator, v=operand
    )


def _joined(separator: str, parts: list[sql.Composable]) -> sql.Composed:
    """``(a <separator> b ...)``."""
    return sql.SQL("({})").format(sql.SQL(separator).join(parts))


def _by_keys(node: Cmp) -> bool:
    """True when every segment is an object key, so containment can stand for the path."""
    return not any(INDEX_SEGMENT.fullmatch(k) for k in node.path.keys)


def _nested(keys: tuple[str, ...], value: Any) -> Any:
    for key in reversed(keys):
        value = {key: value}
    return value


def _eq_sql(node: Cmp, x: sql.Composable, params: SqlParams) -> sql.Composable:
    equal = sql.SQL("({} = {})").format(x, params.add(_dumps(node.value), "jsonb"))
    if node.path.text in params.indexed or not _by_keys(node):
        return equal  # the path's own b-tree index serves it (in id order)
    # Containment, which the GIN index on data serves: for a scalar it is the same test;
    # for an array or object it is looser, so the exact equality follows.
    document = params.add(_dumps(_nested(node.path.keys, node.value)), "jsonb")
    contained = sql.SQL("(s.data @> {})").format(document)
    if isinstance(node.value, dict | list):
        return sql.SQL("({} AND {})").format(contained, equal)
    return contained


def _contains_sql(node: Cmp, x: sql.Composable, params: SqlParams) -> sql.Composable:
    contains = sql.SQL("({} @> {})").format(x, params.add(_dumps(node.value), "jsonb"))
    if not _by_keys(node):
        return contains
    # Below the top, containment does not let an array contain a bare scalar, so a
    # scalar operand is: equal to the value, or an element of an array there.
    candidates = [node.value] if isinstance(node.value, dict | list) else [node.value, [node.value]]
    tests: list[sql.Composable] = [
        sql.SQL("s.data @> {}").format(params.add(_dumps(_nested(node.path.keys, c)), "jsonb"))
        for c in candidates
    ]
    return _joined(" OR ", tests)


def _meta_sql(node: Cmp, params: SqlParams) -> sql.Composable:
    assert node.path.meta is not None
    column, cast = _META_SQL[node.path.meta]
    if node.op == "exists":
        return _TRUE
    if node.op == "eq":
        return sql.SQL("({} = {})").format(column, params.add(node.value, cast))
    if node.op == "in":
        if not node.value:
            return _FALSE
        return sql.SQL("({} = ANY({}))").format(column, params.add(list(node.value), cast + "[]"))
    operator = _OPERATORS[node.op]
    return sql.SQL("({} {} {})").format(column, operator, params.add(node.value, cast))


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# -- ordering and keyset paging -------------------------------------------------------------


def component_sql(component: Component, params: SqlParams) -> tuple[sql.Composable, str]:
    """The SQL expression of a sort component and the cast of its cursor parameter."""
    path = component.key.path
    if path.meta is not None:
        return _META_SQL[path.meta]
    x = params.path(path.keys)
    if component.kind == "missing":
        return sql.SQL("({} IS NULL)").format(x), "boolean"
    if component.kind == "rank":
        return _RANK_SQL.format(x=x), "integer"
    if component.kind == "num":
        return sql.SQL("COALESCE({}, 0)").format(_NUM_SQL.format(x=x)), "numeric"
    return _TEXT_SQL.format(x=x), "text"


def order_sql(
    order: tuple[SortKey, ...], params: SqlParams
) -> tuple[list[sql.Composable], sql.Composable]:
    """The sort component expressions (to select) and the ORDER BY list."""
    exprs: list[sql.Composable] = []
    terms: list[sql.Composable] = []
    for component in components(order):
        expr, _ = component_sql(component, params)
        exprs.append(expr)
        terms.append(sql.SQL("{} DESC").format(expr) if component.descending else expr)
    return exprs, sql.SQL(", ").join(terms)


def keyset_sql(
    order: tuple[SortKey, ...], cursor: tuple[Any, ...], params: SqlParams
) -> sql.Composable:
    """Rows strictly after the cursor's row in query order."""
    parts = []
    for component, value in zip(components(order), cursor, strict=True):
        expr, cast = component_sql(component, params)
        parts.append((expr, params.add(value, cast), component.descending))
    alternatives: list[sql.Composable] = []
    for i, (expr, placeholder, descending) in enumerate(parts):
        tests: list[sql.Composable] = [sql.SQL("{} = {}").format(e, p) for e, p, _ in parts[:i]]
        after = sql.SQL("<" if descending else ">")
        tests.append(sql.SQL("{} {} {}").format(expr, after, placeholder))
        alternatives.append(_joined(" AND ", tests))
    return _joined(" OR ", alternatives)


# -- aggregates -----------------------------------------------------------------------------


def aggregate_sql(
    spec: Aggregate, params: SqlParams
) -> tuple[sql.Composable, sql.Composable | None, sql.Composable | None]:
    """The SELECT list, GROUP BY list and ORDER BY list (None without group_by)."""
    select: list[sql.Composable] = []
    for path in spec.group_by:
        select.append(_META_SQL[path.meta][0] if path.meta else params.path(path.keys))
    for metric in spec.metrics:
        select.append(_metric_sql(metric, params))
    if not spec.group_by:
        return sql.SQL(", ").join(select), None, None
    group = sql.SQL(", ").join(sql.SQL(str(i + 1)) for i in range(len(spec.group_by)))
    _, order = order_sql(spec.order, params)
    return sql.SQL(", ").join(select), group, order


def _metric_sql(metric: Metric, params: SqlParams) -> sql.Composable:
    if metric.path is None:
        return sql.SQL("count(*)")
    function = sql.SQL(metric.function)  # one of query.METRIC_FUNCTIONS
    if metric.path.meta is not None:
        return sql.SQL("{}({})").format(function, _META_SQL[metric.path.meta][0])
    x = params.path(metric.path.keys)
    if metric.function == "count":
        return sql.SQL("count({})").format(x)
    return sql.SQL("{}({})").format(function, _NUM_SQL.format(x=x))


# -- whole statements -------------------------------------------------------------------


def query_statement(
    q: Query, indexed: frozenset[str], columns: sql.Composable, source: sql.Composable
) -> Statement:
    """``store.query``: ``columns`` (then the sort values) ``source`` and the filter.

    ``source`` is the ``FROM ... WHERE`` head the filter is ANDed to; ``indexed`` are the
    paths of ``q.type`` with a b-tree index. One row more than the limit is asked for,
    so the caller knows whether another page follows.
    """
    params = SqlParams(indexed, type=q.type, limit=q.limit + 1, offset=q.offset)
    where = filter_sql(q.where, params)
    if q.after is not None:
        where = sql.SQL("{} AND {}").format(where, keyset_sql(q.order, q.after, params))
    exprs, order = order_sql(q.order, params)
    text = sql.SQL("{} {} {} AND {} ORDER BY {} LIMIT {} OFFSET {}").format(
        columns,
        sql.Composed([sql.SQL(", ") + e for e in exprs]),
        source,
        where,
        order,
        sql.Placeholder("limit"),
        sql.Placeholder("offset"),
    )
    return Statement(text, params.values)


def explain_statement(statement: Statement) -> Statement:
    """``EXPLAIN`` of ``statement``, with the same parameters."""
    return Statement(sql.SQL("EXPLAIN {}").format(statement.query), statement.params)


def count_statement(
    type: str, where: Node, indexed: frozenset[str], source: sql.Composable
) -> Statement:
    """``store.count``: the matches of ``where`` among the records in ``source``."""
    params = SqlParams(indexed, type=type)
    text = sql.SQL("SELECT count(*) {} AND {}").format(source, filter_sql(where, params))
    return Statement(text, params.values)


def aggregate_statement(
    spec: Aggregate, indexed: frozenset[str], source: sql.Composable
) -> Statement:
    """``store.aggregate``: one row per group, the group_by values then the metrics."""
    params = SqlParams(indexed, type=spec.type)
    select, group, order = aggregate_sql(spec, params)
    text = sql.SQL("SELECT {} {} AND {}").format(select, source, filter_sql(spec.where, params))
    if group is not None and order is not None:
        text = sql.SQL("{} GROUP BY {} ORDER BY {}").format(text, group, order)
    return Statement(text, params.values)


def export_statement(head: sql.Composable, types: str | None, where: Node | None) -> Statement:
    """An export cursor's query: ``head`` (ending in its WHERE) filtered, in (type, id) order.

    ``types`` is the JSON array of the exported types (None: every type).
    """
    params = SqlParams(types=types)
    if where is not None:
        head = sql.SQL("{} AND {}").format(head, filter_sql(where, params))
    return Statement(sql.SQL("{} ORDER BY type, id").format(head), params.values)


def index_expression(path: Path) -> sql.Composable:
    """The indexed expression for ``path``: what the compiled filters and orders use.

    The path is inlined as a constant (an index cannot hold a parameter); a query's
    ``(s.data #> %(qN)s::text[])`` matches it once the planner sees the value.
    """
    if path.meta is not None:
        return sql.Identifier(path.meta)
    return sql.SQL("(data #> {}::text[])").format(sql.Literal(list(path.keys)))


__all__ = [
    "SqlParams",
    "Statement",
    "aggregate_sql",
    "aggregate_statement",
    "component_sql",
    "count_statement",
    "explain_statement",
    "export_statement",
    "filter_sql",
    "index_expression",
    "keyset_sql",
    "order_sql",
    "query_statement",
]
