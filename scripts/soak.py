"""Soak pgactors under faults with the history checker (tests/history).

Starts a fresh embedded server and its synchronous standby in a temporary directory, runs
concurrent clients (reads, compare-and-set and blind writes on a few registers) and a
change-feed consumer, both through the failover DSN, for ``--duration`` seconds while
injecting faults in turn (backend termination, SIGKILL and restart, SIGSTOP of the
server, SIGSTOP of the store's backends, failover: SIGKILL of the primary, promotion of
the standby and a new standby), then checks the history and prints a table. Exit status
1 if any anomaly was found.

    python scripts/soak.py --duration 180
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from history.faults import Cluster, default_faults
from history.runner import RunConfig, RunResult, run_history


async def soak(args: argparse.Namespace, data_dir: Path) -> RunResult:
    cluster = Cluster.replicated(data_dir / "a", data_dir / "b")
    try:
        config = RunConfig(
            duration=args.duration,
            clients=args.clients,
            keys=args.keys,
            faults=default_faults(pause=args.pause, down=args.down),
            interval=args.interval,
            seed=args.seed,
        )
        return await run_history(cluster, config)
    finally:
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds (default 120)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--keys", type=int, default=6, help="registers (default 6)")
    parser.add_argument(
        "--interval", type=float, default=2.0, help="seconds between faults (default 2)"
    )
    parser.add_argument(
        "--pause", type=float, default=1.5, help="seconds a SIGSTOP lasts (default 1.5)"
    )
    parser.add_argument(
        "--down", type=float, default=0.5, help="seconds down after a SIGKILL (default 0.5)"
    )
    parser.add_argument("--seed", type=int, default=None, help="for the clients' choices")
    parser.add_argument("--verbose", action="store_true", help="show the store's warnings")
    args = parser.parse_args()
    if not args.verbose:  # reconnection warnings, hundreds of them under faults
        logging.disable(logging.WARNING)
    data_dir = Path(tempfile.mkdtemp(prefix="pgactors-soak-"))
    try:
        result = asyncio.run(soak(args, data_dir))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print(result.table())
    for anomaly in result.anomalies[:50]:
        print(f"ANOMALY {anomaly}")
    if len(result.anomalies) > 50:
        print(f"... and {len(result.anomalies) - 50} more")
    return 1 if result.anomalies else 0


if __name__ == "__main__":
    sys.exit(main())
