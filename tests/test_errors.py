"""The caller's own exceptions come out as themselves; retryable failures have a type."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from pgactors import RetryableError, Store, StoreUnavailable


class Mine(OSError):
    """The caller's own error: an OSError, which the store must not take for its own."""


async def test_an_error_inside_a_transaction_comes_out_as_itself(store: Store) -> None:
    with pytest.raises(Mine) as raised:
        async with store.transaction() as tx:
            await tx.save("T", "x", {"n": 1})
            raise Mine("disk full on the caller's side")
    assert type(raised.value) is Mine and str(raised.value) == "disk full on the caller's side"
    assert await store.load("T", "x") is None  # rolled back

    ours = StoreUnavailable("raised by the caller")
    with pytest.raises(StoreUnavailable) as again:
        async with store.transaction():
            raise ours
    assert again.value is ours  # not wrapped a second time


async def test_an_error_from_the_lines_of_an_import_comes_out_as_itself(store: Store) -> None:
    def lines() -> Iterator[str]:
        yield '{"type": "T", "id": "a", "data": {"n": 1}}'
        raise Mine("the file went away")

    with pytest.raises(Mine, match="the file went away") as raised:
        await store.import_jsonl(lines())
    assert type(raised.value) is Mine
    assert await store.load("T", "a") is None  # one transaction: nothing imported


async def test_a_deadlock_is_a_retryable_error(pg_store: Store, pg_dsn: str) -> None:
    other = await Store.connect(pg_dsn, schema=pg_store.config.schema)
    await pg_store.save_many("T", {"a": 1, "b": 2})
    first_locked, second_locked = asyncio.Event(), asyncio.Event()

    async def one(
        store: Store, mine: str, theirs: str, locked: asyncio.Event, wait: asyncio.Event
    ) -> None:
        async with store.transaction() as tx:
            await tx.load("T", mine, lock=True)
            locked.set()
            await wait.wait()
            await tx.load("T", theirs, lock=True)

    async with other:
        outcomes = await asyncio.gather(
            one(pg_store, "a", "b", first_locked, second_locked),
            one(other, "b", "a", second_locked, first_locked),
            return_exceptions=True,
        )
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failed) == 1, outcomes  # PostgreSQL picked one victim
    assert isinstance(failed[0], RetryableError), failed
    assert "rolled back" in str(failed[0])
