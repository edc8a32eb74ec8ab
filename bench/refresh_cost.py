"""What a refresh's transaction costs: one statement against the three it replaced.

    python bench/refresh_cost.py [--n 2000] [--rounds 5]

Starts a throwaway durable PostgreSQL (fsync, synchronous commit), migrates sso's schema, makes
one user with one session, and runs refresh transactions one after another on sso's own unit
of work, alternating rounds of ``n`` between the two ways:

* **one statement**: ``sessions.rotate_for_user`` and the commit (``AuthService.refresh`` now);
* **three statements**: read the session, ``sessions.rotate``, read the user, and the commit
  (before; still the way taken when the first changes nothing, to tell why).

Prints, per way, the medians over the rounds of: the wall time per transaction (at one at a
time, mostly round trips and the commit's fsync), this process's CPU time per transaction
(asyncpg, SQLAlchemy's compiled statements, the unit of work) and PostgreSQL's (the postmaster
and its children, from ``/proc``). No HTTP, no tokens: only what the statements cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # devstack/ (not installed)

from benchlib.cpu import CpuWindow, postgres_group
from benchlib.scratchpg import run_on_postgres

from authloyalty.bootstrap import sso_database
from authloyalty.platform.database import open_database
from authloyalty.platform.engines import create_engine
from authloyalty.platform.migrations import upgrade
from authloyalty.settings import load_settings
from authloyalty.sso.domain import Session, User
from authloyalty.sso.uow import SqlSsoUnitOfWork
from devstack.postgres import PostgresCluster


async def measure(cluster: PostgresCluster, n: int, rounds: int) -> None:
    settings = load_settings(None, data_dir=cluster.base_dir,
                             database_url=cluster.url())
    target = sso_database(settings)
    engine = create_engine(target)
    await upgrade("sso", engine, target)
    database = open_database(target, engine)
    now = datetime.now(UTC)
    user = User(id=uuid4(), email="refresh@example.com", password_hash="$argon2id$x",
                created_at=now)
    current = uuid4()
    session = Session(id=uuid4(), user_id=user.id, created_at=now, refresh_token_id=current)
    async with SqlSsoUnitOfWork(database) as uow:
        await uow.users.add(user)
        await uow.sessions.add(session)
        await uow.commit()

    async def one_statement() -> None:
        nonlocal current
        successor = uuid4()
        async with SqlSsoUnitOfWork(database) as uow:
            admin = await uow.sessions.rotate_for_user(session.id, user.id, current, successor,
                                                       datetime.now(UTC))
            assert admin is False
            await uow.commit()
        current = successor

    async def three_statements() -> None:
        nonlocal current
        successor = uuid4()
        async with SqlSsoUnitOfWork(database) as uow:
            found = await uow.sessions.get(session.id)
            assert found is not None
            assert found.active
            assert await uow.sessions.rotate(session.id, current, successor, datetime.now(UTC))
            owner = await uow.users.get(user.id)
            assert owner is not None
            assert owner.deleted_at is None
            await uow.commit()
        current = successor

    postmaster = cluster.data_dir / "postmaster.pid"
    pg = postgres_group(lambda: int(postmaster.read_text().split()[0]))
    ways: dict[str, tuple[Callable[[], Awaitable[None]], list[tuple[float, float, float]]]] = {
        "one statement": (one_statement, []), "three statements": (three_statements, [])}
    for way, _ in ways.values():
        for _ in range(50):  # warm: connections, prepared statements, caches
            await way()
    for round_ in range(rounds):
        order = list(ways.items()) if round_ % 2 == 0 else list(reversed(ways.items()))
        for _name, (way, results) in order:
            window = CpuWindow([pg]).start()
            started_cpu, started = time.process_time(), time.perf_counter()
            for _ in range(n):
                await way()
            wall, cpu = time.perf_counter() - started, time.process_time() - started_cpu
            window.stop()
            pg_cpu = window.seconds()["postgres"]
            results.append((wall / n * 1e6, cpu / n * 1e6, pg_cpu / n * 1e6))
    print(f"{n} refresh transactions per round, {rounds} rounds, alternating; medians:")
    print(f"{'':>17} {'wall µs':>9} {'client CPU µs':>14} {'PostgreSQL CPU µs':>18}")
    for name, (_, results) in ways.items():
        wall, cpu, pg_cpu = (statistics.median(r[i] for r in results) for i in range(3))
        print(f"{name:>17} {wall:9.0f} {cpu:14.0f} {pg_cpu:18.0f}", flush=True)
    await database.dispose()
    await engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    run_on_postgres("authloyalty-refreshcost-pg-",
                    lambda cluster: measure(cluster, args.n, args.rounds), durable=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
