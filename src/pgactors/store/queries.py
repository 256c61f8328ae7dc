"""``Store``'s query methods: filtered pages, counts, aggregates, indexes."""

from __future__ import annotations

from collections.abc import (
    AsyncIterator,
    Mapping,
    Sequence,
)
from typing import Any

from ..metrics import timed
from ..query import (
    Page,
    build_aggregate,
    build_query,
    encode_cursor,
    index_path,
    parse_filter,
)
from ..record import (
    Record,
    check_type,
)
from .base import StoreBase


class QueryMethods(StoreBase):
    """Queries over the records' JSON (see ``pgactors.query``)."""

    # -- queries ------------------------------------------------------------------------------

    @timed("query")
    async def query(
        self,
        type: str,
        where: Mapping[str, Any] | None = None,
        *,
        order_by: Sequence[str] | str | None = None,
        limit: int = 100,
        after: str | None = None,
        offset: int | None = None,
    ) -> Page:
        """One page of the records of ``type`` matching ``where`` (see ``pgactors.query``).

        ``order_by``: paths, ``-`` for descending (``["-score", "@id"]``); ties are broken
        by ``@id`` and missing values sort last. ``after=page.next`` continues with the
        next page (keyset pagination); ``offset`` skips rows instead. Raises
        ``InvalidQuery`` for a malformed filter before any SQL runs.
        """
        q = build_query(type, where, order_by, limit, after, offset)
        rows = await self._backend.queries.query(q)
        items = [record for record, _ in rows[: q.limit]]
        next_cursor = None
        if len(rows) > q.limit:
            next_cursor = encode_cursor(q.fingerprint, rows[q.limit - 1][1])
        return Page(items, next_cursor)

    async def query_all(
        self,
        type: str,
        where: Mapping[str, Any] | None = None,
        *,
        order_by: Sequence[str] | str | None = None,
        page_size: int = 1000,
    ) -> AsyncIterator[Record]:
        """Every matching record, fetched a page at a time (memory stays bounded)."""
        after: str | None = None
        while True:
            page = await self.query(type, where, order_by=order_by, limit=page_size, after=after)
            for record in page.items:
                yield record
            if page.next is None:
                return
            after = page.next

    async def explain(
        self,
        type: str,
        where: Mapping[str, Any] | None = None,
        *,
        order_by: Sequence[str] | str | None = None,
        limit: int = 100,
    ) -> str:
        """How the query would run: PostgreSQL's EXPLAIN plan (to check index use)."""
        return await self._backend.queries.explain(
            build_query(type, where, order_by, limit, None, None)
        )

    async def create_index(self, type: str, path: str) -> str:
        """Index a hot path (``"profile.level"``, or ``"@updated_at"``) of ``type``:
        equality, ``$in``, ranges and ordering on it can then use a b-tree. ``"*"`` indexes
        every path of the type's data instead (GIN, containment): equality on any path
        can use it. Each index makes that type's saves dearer (a save that changes an
        indexed value is never a HOT update). Built without blocking writes where the
        server can. Returns the index name."""
        return await self._backend.queries.create_index(check_type(type), index_path(path))

    async def drop_index(self, type: str, path: str) -> bool:
        """Drop the index made by ``create_index``; False if there was none."""
        return await self._backend.queries.drop_index(check_type(type), index_path(path).text)

    async def indexes(self) -> list[tuple[str, str, str]]:
        """Every index made by ``create_index``, as ``(type, path, index name)``."""
        return await self._backend.queries.indexes()

    @timed("count")
    async def count(self, type: str, where: Mapping[str, Any] | None = None) -> int:
        """How many records of ``type`` match ``where``."""
        return await self._backend.queries.count(check_type(type), parse_filter(where))

    @timed("aggregate")
    async def aggregate(
        self,
        type: str,
        where: Mapping[str, Any] | None = None,
        *,
        group_by: Sequence[str] | str | None = None,
        metrics: Mapping[str, str | tuple[str, str]] | None = None,
    ) -> list[dict[str, Any]]:
        """Statistics per group, e.g. ``metrics={"n": "count", "best": ("max", "score")}``.

        Functions: ``count`` (rows), ``(count, path)`` (rows where path exists),
        ``sum``/``avg``/``min``/``max`` over the numbers at a path (None if there are
        none). One dict per group, keyed by the group_by paths and the metric names,
        in group order (missing values, shown as None, last).
        """
        spec = build_aggregate(type, where, group_by, metrics)
        return await self._backend.queries.aggregate(spec)
