"""Blocking twins of the change stream and of listeners."""

from __future__ import annotations

from collections.abc import (
    Iterator,
)
from typing import Self

from ..changes import Change, ChangeStream, FeedListener
from .loop import LoopThread


class SyncChangeStream:
    """The blocking view of a ``ChangeStream``: ``for change in stream`` blocks until the
    next change; ``with`` subscribes first; ``close()`` (from any thread) ends it."""

    def __init__(self, stream: ChangeStream, runner: LoopThread) -> None:
        self._stream = stream
        self._run = runner.run

    def start(self) -> Self:
        """Subscribe now (so that ``since=None`` means now, not at the first read)."""
        self._run(self._stream.start())
        return self

    @property
    def position(self) -> int | None:
        """The position of the last change this stream has passed."""
        return self._stream.position

    def close(self) -> None:
        """Unsubscribe; a pending read ends (iteration stops)."""
        self._run(self._stream.close())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Change]:
        return self

    def __next__(self) -> Change:
        async def step() -> Change | None:
            try:
                return await anext(self._stream)
            except StopAsyncIteration:
                return None

        change = self._run(step())
        if change is None:
            raise StopIteration
        return change


class SyncListener:
    """A listener's blocking twin: ``connect``, ``wait(seconds)`` for payloads, ``close``."""

    def __init__(self, listener: FeedListener, runner: LoopThread) -> None:
        self._listener = listener
        self._runner = runner

    def connect(self) -> None:
        """Start listening."""
        self._runner.run(self._listener.connect())

    def wait(self, seconds: float) -> list[str]:
        """Payloads, as soon as any arrive; empty after ``seconds``."""
        return self._runner.run(self._listener.wait(seconds))

    def close(self) -> None:
        """Stop listening."""
        self._runner.run(self._listener.close())
