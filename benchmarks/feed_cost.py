"""What the change feed costs ``store.save``, part by part, in alternating rounds.

Each round is a fresh process and a fresh schema (a log left by earlier rounds would
weigh on later ones): 16 tasks save ~1 KB records (``harness.make_payload``) over
10,000 keys for ``--seconds``, after a 1 s warm-up (``benchmarks.cpu_per_op.measure``),
and report saves per second and the client's and the server's CPU per save. The
variants, run in turn each round:

- ``off``: ``changes=False`` (no trigger, no numbering);
- ``unnumbered``: the trigger writes pending rows, but the store never runs a
  numbering pass (``Sequencer.kick`` is a no-op; the pending rows pile up);
- ``silent``: numbered as usual, but the numbering function sends no notification;
- ``listened``: the default, with a change-feed listener connected (a connection named
  as pgactors' listeners are, LISTENing and reading nothing): the store numbers at most
  every 2 ms instead of 50 ms;
- ``on``: the default, nobody listening.

    python -m benchmarks.feed_cost [--rounds 3] [--seconds 3] [--dsn DSN]

A diagnostic script, never a timed test: ``unnumbered`` and ``silent`` are not
configurations anyone should run.
"""

from __future__ import annotations

import re

from psycopg import sql

from benchmarks import harness
from benchmarks.cpu_per_op import compare_variants, measure

VARIANTS = ("off", "unnumbered", "silent", "listened", "on")
TASKS = 16
_NOTIFY = re.compile(r"PERFORM pg_notify\(.*?\);", re.S)


async def _silence(dsn: str, schema: str) -> None:
    """Re-create the schema's numbering function without its ``pg_notify``."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        name = sql.Identifier(schema, "pgactors_sequence_changes").as_string(conn)
        cur = await conn.execute("SELECT pg_get_functiondef(%s::regproc)", [name])
        row = await cur.fetchone()
        assert row is not None
        body, found = _NOTIFY.subn("NULL;", row[0])
        assert found == 1, "the numbering function no longer notifies as expected"
        await conn.execute(body.encode())


_LISTENERS: list[object] = []  # kept open until the round's process ends


async def _listen(dsn: str, schema: str) -> None:
    """Connect a listener of the schema's store, for the rest of the round."""
    import psycopg

    from pgactors import StoreConfig
    from pgactors.postgres.feed import listener_name

    config = StoreConfig.resolve(dsn, schema=schema)
    conn = await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, application_name=listener_name(config)
    )
    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(config.channel)))
    _LISTENERS.append(conn)


async def _round(dsn: str, variant: str, seconds: str) -> dict[str, float]:
    if variant == "unnumbered":
        from pgactors import changes

        changes.Sequencer.kick = lambda self: None  # type: ignore[method-assign]
    prepare = {"silent": _silence, "listened": _listen}.get(variant)
    return await measure(
        dsn,
        "save",
        TASKS,
        float(seconds),
        changes=variant != "off",
        prepare=prepare,
        payload=harness.make_payload(),
    )


def main() -> None:
    compare_variants(
        __doc__.splitlines()[0],
        "pgactors-feedcost-",
        "benchmarks.feed_cost:_round",
        VARIANTS,
        TASKS,
    )


if __name__ == "__main__":
    main()
