"""Version history: what an UPDATE of a type without history costs the server while
another type keeps history, measured without the client and the commit in the way.

One ``DO`` block updates ``updates`` records of the bench type in one transaction; its
wall time over ``updates`` is the server's time per UPDATE. The block runs with no
history anywhere, with another type keeping history (the trigger exists and its
``WHEN`` fails for these rows) and with the bench type keeping history, in turn, for
``rounds`` rounds; each round starts with another side (each block leaves dead row
versions the next one would prune), and a VACUUM of the state table precedes each
block. Part of ``python -m benchmarks`` (``--history-rounds``).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from psycopg import sql

from benchmarks.harness import RECORD_TYPE
from benchmarks.suite import Bench, history_enabled

SIDES = ("", "other", "own")
_BLOCK = """
DO $$
BEGIN
    FOR i IN 1..{updates} LOOP
        UPDATE {table} SET version = version + 1, updated_at = now()
        WHERE type = {type} AND id = 'k' || (1 + i % {records});
    END LOOP;
END
$$
"""


async def server_rounds(bench: Bench, rounds: int, updates: int = 20_000) -> dict[str, Any]:
    """Microseconds per UPDATE on each side, every round and the medians."""
    block = sql.SQL(_BLOCK).format(
        updates=sql.Literal(updates),
        table=sql.Identifier(bench.schema, "pgactors_state"),
        type=sql.Literal(RECORD_TYPE),
        records=sql.Literal(bench.records),
    )
    vacuum = sql.SQL("VACUUM {}").format(sql.Identifier(bench.schema, "pgactors_state"))
    runs: dict[str, list[float]] = {side or "none": [] for side in SIDES}
    for round in range(rounds):
        for side in SIDES[round % 3 :] + SIDES[: round % 3]:
            await bench.admin.execute(vacuum)
            async with history_enabled(bench, side):
                started = time.perf_counter()
                await bench.admin.execute(block)
                runs[side or "none"].append((time.perf_counter() - started) * 1e6 / updates)
    medians = {side: statistics.median(values) for side, values in runs.items() if values}
    return {"updates_per_block": updates, "us_per_update": runs, "medians": medians}


def server_table(result: dict[str, Any]) -> str:
    """The server-side figures as markdown."""
    medians = result["medians"]
    none = medians["none"]
    lines = [
        "| server time per UPDATE (median) | µs | ratio to no history |",
        "|---|---:|---:|",
    ]
    for side, label in (
        ("none", "no history"),
        ("other", "another type keeps history"),
        ("own", "its own type keeps history"),
    ):
        lines.append(f"| {label} | {medians[side]:.1f} | {medians[side] / none:.2f}x |")
    return "\n".join(lines)
