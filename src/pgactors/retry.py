"""How pgactors retries after losing a compare-and-set race: how often, and how long to
wait first. One rule for ``Store.update`` and actor turns."""

from __future__ import annotations

import asyncio
import random
from typing import Final

DEFAULT_MAX_RETRIES: Final = 100
# Optimistic tries of ``Store.update`` before it takes the row lock (load FOR UPDATE in a
# transaction): unlocked tries are cheaper, but under contention a writer may lose every
# round; the lock holder cannot lose.
LOCK_AFTER: Final = 3
_BASE_SECONDS: Final = 0.0005
_CAP_SECONDS: Final = 0.05


async def back_off(attempt: int) -> None:
    """Sleep before retry ``attempt + 1``: doubling from 0.5 ms up to 50 ms, jittered
    over the upper half, so contending writers spread out and each round has a winner."""
    delay = min(_BASE_SECONDS * 2**attempt, _CAP_SECONDS)
    await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311
