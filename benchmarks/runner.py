"""Measure one Python workload in a fresh process, so each run reports its own peak RSS.

The parent builds a :class:`Task` and :func:`run_isolated` starts a ``spawn``
subprocess for it. The child imports only what its system needs (pgactors, the psycopg
peer or SQLAlchemy), opens its own pool of ``pool_size`` connections, warms up, measures,
and sends back the :class:`~benchmarks.harness.Result` with its peak RSS. Every
system thus starts from the same bare interpreter, pays for its own imports and pool, and
runs alone on its event loop while the parent waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from benchmarks import harness
from benchmarks.harness import Op, Params, Result


@dataclass(frozen=True)
class Task:
    """Everything one measuring subprocess needs (picklable)."""

    name: str
    system: str  # "pgactors", "psycopg" or "sqlalchemy"
    kind: str
    label: str
    factory: str  # a key of the system module's FACTORIES
    dsn: str
    schema: str
    records: int
    concurrency: int
    pool_size: int
    duration: float
    warmup: float
    seed: int = 0
    batch: int = harness.BATCH_SIZE
    records_per_op: int = 1
    coalesce: bool = True
    changes: bool = False
    statements: Mapping[str, str] = field(default_factory=dict)


async def _measure(task: Task) -> Result:
    params = Params(task.records, harness.make_payload(), task.batch)
    async with contextlib.AsyncExitStack() as stack:
        op: Op
        if task.system == "pgactors":
            from benchmarks import workloads

            store = await workloads.open_store(
                task.dsn,
                task.schema,
                task.pool_size,
                coalesce=task.coalesce,
                changes=task.changes,
            )
            stack.push_async_callback(store.close)
            op = workloads.FACTORIES[task.factory](store, params)
        elif task.system == "psycopg":
            from benchmarks import peers

            pool = await peers.open_pool(task.dsn, task.pool_size)
            stack.push_async_callback(pool.close)
            op = peers.FACTORIES[task.factory](peers.Peer(pool, task.statements), params)
        elif task.system == "sqlalchemy":
            from benchmarks import orm

            engine = await orm.open_orm(task.dsn, task.schema, task.pool_size)
            stack.push_async_callback(engine.engine.dispose)
            op = orm.FACTORIES[task.factory](engine, params)
        else:
            raise ValueError(f"unknown system {task.system!r}")
        result = await harness.measure(
            op,
            system=task.system,
            kind=task.kind,
            label=task.label,
            name=task.name,
            concurrency=task.concurrency,
            duration=task.duration,
            warmup=task.warmup,
            seed=task.seed,
            records_per_op=task.records_per_op,
        )
    return dataclasses.replace(result, peak_rss_mib=round(harness.peak_rss_mib(), 1))


def _child(task: Task, conn: Connection) -> None:
    """Subprocess entry point: send ``("ok", Result)`` or ``("error", traceback)``."""
    try:
        outcome: tuple[str, Any] = ("ok", asyncio.run(_measure(task)))
    except BaseException:
        # A formatted traceback always pickles; driver exceptions may not.
        outcome = ("error", traceback.format_exc())
    conn.send(outcome)
    conn.close()


class ChildFailed(RuntimeError):
    """The measuring subprocess raised, died, or did not finish in time."""


def _wait(proc: multiprocessing.process.BaseProcess, conn: Connection, timeout: float) -> Any:
    try:
        if not conn.poll(timeout):
            raise ChildFailed(f"no result within {timeout:.0f} s")
        status, value = conn.recv()
    except EOFError:
        proc.join(5)
        raise ChildFailed(f"the subprocess died (exit code {proc.exitcode})") from None
    finally:
        conn.close()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if status != "ok":
        raise ChildFailed(str(value))
    return value


async def run_isolated(task: Task) -> Result:
    """Run ``task`` in a fresh ``spawn`` subprocess and return its result."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    proc = context.Process(target=_child, args=(task, sender), name=f"bench-{task.name}")
    proc.start()
    sender.close()
    timeout = task.warmup + task.duration + 180
    try:
        result = await asyncio.to_thread(_wait, proc, receiver, timeout)
    except ChildFailed as exc:
        raise ChildFailed(f"{task.name} at concurrency {task.concurrency}: {exc}") from None
    assert isinstance(result, Result)
    return result
