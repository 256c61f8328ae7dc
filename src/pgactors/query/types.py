"""The checked forms of queries: the filter tree, sort keys, queries, aggregates, pages.

Parsing (:mod:`.parsing`) builds them; the backends run them: in memory with
:mod:`.evaluate`, on PostgreSQL with ``pgactors.postgres.compiler``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ..record import Record

META_FIELDS: Final = ("id", "version", "created_at", "updated_at")
# create_index's "path" for an index on every path of a type's data (containment).
ALL_DATA: Final = "*"
MAX_LIMIT: Final = 10_000
METRIC_FUNCTIONS: Final = ("count", "sum", "avg", "min", "max")
INDEX_SEGMENT: Final = re.compile(r"-?[0-9]+")
"""A path segment that can index an array (``items.0``, ``items.-1``)."""


# -- the filter tree ----------------------------------------------------------------------


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
    """Every item matches (no items: always true)."""

    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Any_:
    """At least one item matches."""

    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """The item does not match."""

    item: Node


Node = Cmp | All | Any_ | Not


# -- ordering -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SortKey:
    """One ``order_by`` entry: a path, ascending unless ``desc``."""

    path: Path
    desc: bool = False


Kind = Literal["missing", "rank", "num", "text", "meta"]


@dataclass(frozen=True, slots=True)
class Component:
    """One column of the total order: a path key spreads over missing/rank/num/text."""

    key: SortKey
    kind: Kind

    @property
    def descending(self) -> bool:
        """True if this column sorts descending (missing values always sort last)."""
        return self.key.desc and self.kind != "missing"


def components(order: tuple[SortKey, ...]) -> list[Component]:
    """The columns of the total order (shared by SQL and Python, and held by cursors)."""
    result: list[Component] = []
    for key in order:
        if key.path.meta is not None:
            result.append(Component(key, "meta"))
        else:
            kinds: tuple[Kind, ...] = ("missing", "rank", "num", "text")
            result.extend(Component(key, kind) for kind in kinds)
    return result


# -- checked queries --------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class Metric:
    """One aggregate column: ``function`` of ``path`` (``count`` of rows if no path)."""

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
