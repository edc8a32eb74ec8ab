"""A throwaway PostgreSQL for the bench's small measurements, and an event loop to use it."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Coroutine
from typing import Any

from devstack.postgres import PostgresCluster, scratch_dir


def run_on_postgres(prefix: str,
                    measure: Callable[[PostgresCluster], Coroutine[Any, Any, None]], *,
                    durable: bool = False) -> None:
    """Start a PostgreSQL of its own in a scratch directory named ``prefix…``, run
    ``measure(cluster)`` on uvloop (the services' loop; asyncio's without it), then stop and
    remove it."""
    base = scratch_dir(prefix)
    cluster = PostgresCluster(base, durable=durable).start()
    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(measure(cluster))
        else:
            uvloop.run(measure(cluster))
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
