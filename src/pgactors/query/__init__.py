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

The modules: :mod:`.types` (the checked forms), :mod:`.parsing` (checking what callers
send), :mod:`.cursors` (paging cursors), :mod:`.evaluate` (running a query in Python).
"""

from .cursors import decode_cursor, encode_cursor
from .evaluate import (
    MISSING_GROUP,
    after_cursor,
    aggregate_records,
    json_contains,
    json_equal,
    json_kind,
    lookup,
    matches,
    number,
    sort_records,
    sort_values,
)
from .parsing import (
    build_aggregate,
    build_query,
    index_path,
    parse_filter,
    parse_order,
    parse_path,
)
from .types import (
    ALL_DATA,
    INDEX_SEGMENT,
    MAX_LIMIT,
    META_FIELDS,
    METRIC_FUNCTIONS,
    Aggregate,
    All,
    Any_,
    Cmp,
    Component,
    Kind,
    Metric,
    Node,
    Not,
    Page,
    Path,
    Query,
    SortKey,
    components,
)

__all__ = [
    "ALL_DATA",
    "INDEX_SEGMENT",
    "MAX_LIMIT",
    "META_FIELDS",
    "METRIC_FUNCTIONS",
    "MISSING_GROUP",
    "Aggregate",
    "All",
    "Any_",
    "Cmp",
    "Component",
    "Kind",
    "Metric",
    "Node",
    "Not",
    "Page",
    "Path",
    "Query",
    "SortKey",
    "after_cursor",
    "aggregate_records",
    "build_aggregate",
    "build_query",
    "components",
    "decode_cursor",
    "encode_cursor",
    "index_path",
    "json_contains",
    "json_equal",
    "json_kind",
    "lookup",
    "matches",
    "number",
    "parse_filter",
    "parse_order",
    "parse_path",
    "sort_records",
    "sort_values",
]
