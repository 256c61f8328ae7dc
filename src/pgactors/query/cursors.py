"""Keyset paging cursors: the sort values of the last row of a page, opaque to callers.

A cursor also carries the fingerprint of its query, so one made for another type,
filter or ordering is refused rather than silently misread.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from ..errors import InvalidQuery
from .types import SortKey, components


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
