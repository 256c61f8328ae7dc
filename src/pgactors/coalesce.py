"""Coalescing: concurrent calls waiting at the same moment share one round trip.

Like a database's group commit. A call that finds a free slot goes at once, alone
(a lone caller pays one round trip and no added delay). Calls that arrive while every
slot is busy queue up, and the next free slot takes all of them, up to ``max_batch``,
as one batch. Each caller gets its own result or its own exception; one item's
failure (a version conflict) is returned to that caller only.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Req = TypeVar("Req")
Res = TypeVar("Res")

Executor = Callable[[list[Req]], Awaitable[Sequence[Res | BaseException]]]


@dataclass(slots=True)
class _Waiting(Generic[Req, Res]):
    key: Hashable
    request: Req
    future: asyncio.Future[Res] = field(repr=False)


class Coalescer(Generic[Req, Res]):
    """Runs ``execute(batch)`` with at most ``max_inflight`` batches at a time.

    ``execute`` gets a list of requests with distinct keys and returns, in the same
    order, a result or an exception for each. If it raises, every caller of that
    batch gets the exception.
    """

    def __init__(
        self,
        execute: Executor[Req, Res],
        *,
        max_inflight: int,
        max_batch: int,
        execute_one: Callable[[Req], Awaitable[Res]] | None = None,
    ) -> None:
        self._execute = execute
        self._execute_one = execute_one
        self._max_inflight = max_inflight
        self._max_batch = max_batch
        self._queue: deque[_Waiting[Req, Res]] = deque()
        self._inflight = 0
        self._launch_pending = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.items = 0

    async def submit(self, key: Hashable, request: Req) -> Res:
        """Queue one request and wait for its own result."""
        if (
            self._execute_one is not None
            and not self._queue
            and not self._launch_pending
            and self._inflight < self._max_inflight
        ):
            return await self._run_alone(request)
        future: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(key, request, future))
        if not self._launch_pending:
            self._launch()
        return await future

    async def _run_alone(self, request: Req) -> Res:
        # Nobody to share with: the caller runs its own single-item statement, with
        # no task to hand over to and no batch to build.
        assert self._execute_one is not None
        self._inflight += 1
        try:
            return await self._execute_one(request)
        finally:
            self._inflight -= 1
            if not self._launch_pending:
                self._launch()

    def _launch(self) -> None:
        while self._queue and self._inflight < self._max_inflight:
            batch = self._take()
            self._inflight += 1
            task = asyncio.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Waiting[Req, Res]]:
        batch: list[_Waiting[Req, Res]] = []
        keys: set[Hashable] = set()
        deferred: list[_Waiting[Req, Res]] = []
        while self._queue and len(batch) < self._max_batch:
            waiting = self._queue.popleft()
            if waiting.future.done():  # the caller was cancelled while queued
                continue
            if waiting.key in keys:  # one statement may touch a row only once
                deferred.append(waiting)
            else:
                keys.add(waiting.key)
                batch.append(waiting)
        self._queue.extendleft(reversed(deferred))
        return batch

    async def _run(self, batch: list[_Waiting[Req, Res]]) -> None:
        try:
            if batch:
                self.batches += 1
                self.items += len(batch)
                outcomes = await self._execute([w.request for w in batch])
                for waiting, outcome in zip(batch, outcomes, strict=True):
                    if waiting.future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        waiting.future.set_exception(outcome)
                    else:
                        waiting.future.set_result(outcome)
        except BaseException as exc:
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._inflight -= 1
            # Launch on the next loop turn, after the callers just answered have run:
            # those that call again join the next batch instead of each going alone.
            if not self._launch_pending:
                self._launch_pending = True
                asyncio.get_running_loop().call_soon(self._deferred_launch)

    def _deferred_launch(self) -> None:
        self._launch_pending = False
        self._launch()
