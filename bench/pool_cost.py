"""What a pooled connection costs per statement: asyncpg's pool against the lane.

    python bench/pool_cost.py [--n 20000]

Starts a throwaway PostgreSQL and runs ``SELECT 1`` n times, one after another, on a
connection taken from and given back to (a) asyncpg's pool as ``PgDatabase.session`` uses it
(no per-acquire timeout, the no-op reset) and (b) the lane behind ``PgDatabase.fetch``; then
the same statement on a connection held throughout, which is the floor. Prints the process's
CPU time per statement for each (median of 5 passes). Coalesced statements take one
connection per batch, so the difference is paid once per batch, not per request.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # devstack/
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib/

from benchlib.scratchpg import run_on_postgres

from authloyalty.platform.database import _init_connection, _Lane, _reset


async def cpu_per_call(call: Callable[[], Awaitable[object]], n: int) -> float:
    runs = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(n):
            await call()
        runs.append((time.process_time() - started) / n * 1e6)
    return statistics.median(runs)


async def measure(dsn: str, n: int) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4, init=_init_connection,
                                     reset=_reset)
    lane = _Lane(lambda: asyncpg.connect(dsn), 4)
    held = await asyncpg.connect(dsn)

    async def via_pool() -> None:
        conn = await pool.acquire()
        try:
            await conn.fetch("SELECT 1")
        finally:
            await pool.release(conn)

    async def via_lane() -> None:
        conn = await lane.acquire()
        try:
            await conn.fetch("SELECT 1")
        finally:
            lane.release(conn)

    async def on_held() -> None:
        await held.fetch("SELECT 1")

    for name, call in (("asyncpg pool", via_pool), ("lane", via_lane), ("held", on_held)):
        await call()
        print(f"{name:>12}: {await cpu_per_call(call, n):6.1f} µs CPU per statement",
              flush=True)
    await held.close()
    await lane.close()
    await pool.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000)
    args = parser.parse_args()
    run_on_postgres("authloyalty-poolcost-pg-",
                    lambda cluster: measure(cluster.url(driver=None), args.n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
