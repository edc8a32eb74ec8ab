"""The throwaway PostgreSQL clusters of devstack."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from devstack.postgres import PostgresCluster, scratch_dir

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[2]


def _port_closed(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def base_dirs() -> Iterator[tuple[Path, Path]]:
    # Not pytest's tmp_path: /tmp/pytest-of-root is 0700, so the postgres OS user (which the
    # helper drops to when running as root) could not reach it.
    primary, replica = scratch_dir("pg-primary-"), scratch_dir("pg-replica-")
    yield primary, replica
    for path in (primary, replica):
        # Safety net if a test failed before stopping its clusters.
        if (path / "devstack-postgres.json").exists():
            PostgresCluster.existing(path).stop()
        shutil.rmtree(path, ignore_errors=True)


async def test_cluster_database_and_replica(base_dirs: tuple[Path, Path]) -> None:
    primary_dir, replica_dir = base_dirs
    primary = PostgresCluster(primary_dir)
    t0 = time.monotonic()
    await asyncio.to_thread(primary.start)
    print(f"primary start() took {time.monotonic() - t0:.2f}s")
    try:
        url = await asyncio.to_thread(primary.create_database, 'app "db"')
        assert url == f"postgresql://postgres@127.0.0.1:{primary.port}/app%20%22db%22"
        with pytest.raises(RuntimeError, match="already exists"):
            await asyncio.to_thread(primary.create_database, 'app "db"')

        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT current_database()") == 'app "db"'
            await conn.execute("CREATE TABLE t (id int PRIMARY KEY, note text)")
        finally:
            await conn.close()

        replica = await asyncio.to_thread(primary.start_replica, replica_dir)
        try:
            assert replica.port != primary.port
            assert (await asyncio.to_thread(replica.psql, "SELECT pg_is_in_recovery()")) == "t\n"

            conn = await asyncpg.connect(url)
            try:
                await conn.execute("INSERT INTO t VALUES (1, 'from primary')")
            finally:
                await conn.close()

            rconn = await asyncpg.connect(replica.url('app "db"', driver=None))
            try:
                note = None
                deadline = time.monotonic() + 10
                while note is None and time.monotonic() < deadline:
                    note = await rconn.fetchval("SELECT note FROM t WHERE id = 1")
                    if note is None:
                        await asyncio.sleep(0.05)
                assert note == "from primary"
            finally:
                await rconn.close()
        finally:
            await asyncio.to_thread(replica.stop)
        assert _port_closed(replica.port)

        await asyncio.to_thread(primary.drop_database, 'app "db"')
        assert "app" not in await asyncio.to_thread(
            primary.psql, "SELECT datname FROM pg_database"
        )
    finally:
        await asyncio.to_thread(primary.stop)
    assert _port_closed(primary.port)
    # stop() on a stopped cluster is a no-op.
    await asyncio.to_thread(primary.stop)


def test_cli_start_url_stop(base_dirs: tuple[Path, Path]) -> None:
    base, _ = base_dirs

    def cli(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "devstack", "postgres", *args, "--dir", str(base)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=90,
            check=True,
        )
        return proc.stdout

    started = cli("start").strip()
    assert started.startswith("postgresql://postgres@127.0.0.1:")
    assert started.endswith("/postgres")
    assert cli("url", "--database", "other").strip() == started.rsplit("/", 1)[0] + "/other"
    port = PostgresCluster.existing(base).port
    assert not _port_closed(port)
    cli("stop")
    assert _port_closed(port)
