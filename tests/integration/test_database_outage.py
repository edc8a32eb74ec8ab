"""PostgreSQL goes away and comes back: clients get 503 with Retry-After, never a 500, and the
services recover on their own without losing or half-writing anything."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from authloyalty.bootstrap import build_embedded, loyalty_app, sso_app
from authloyalty.platform.database import DatabaseUnavailable, PgDatabase
from authloyalty.platform.engines import DatabaseTarget
from authloyalty.sso.service import Registration
from devstack.common import free_port
from devstack.postgres import PostgresCluster, scratch_dir
from tests.conftest import FAST_ARGON2, settings_for


@pytest.fixture
def own_cluster() -> Iterator[PostgresCluster]:
    """A cluster of this test's own, since the test stops it."""
    base = scratch_dir("authloyalty-test-outage-")
    cluster = PostgresCluster(base).start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


async def test_nothing_listening_is_unavailable_not_a_crash() -> None:
    database = PgDatabase(DatabaseTarget(
        url=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/postgres"))
    try:
        with pytest.raises(DatabaseUnavailable):
            await database.connect()
        with pytest.raises(DatabaseUnavailable):
            await database.ping()
    finally:
        await database.dispose()


async def test_requests_get_503_during_an_outage_and_succeed_after_it(
        tmp_path: Path, own_cluster: PostgresCluster) -> None:
    url = own_cluster.create_database("outage")
    settings = settings_for(tmp_path, url, sso={"argon2": FAST_ARGON2.model_dump()})
    system = build_embedded(settings)
    try:
        await system.migrate()
        issued = await system.sso.service.register(Registration("o@example.com", "long enough"))
        await system.sso.relay.run_once()
        auth = {"Authorization": f"Bearer {issued.tokens.access_token}"}
        loyalty = httpx.AsyncClient(transport=httpx.ASGITransport(app=loyalty_app(system.loyalty)),
                                    base_url="http://loyalty")
        sso = httpx.AsyncClient(transport=httpx.ASGITransport(app=sso_app(system.sso)),
                                base_url="http://sso")
        async with loyalty, sso:
            assert (await loyalty.get("/loyalty/me", headers=auth)).json()["balance"] == 100
            own_cluster.stop()

            for reply in (
                await loyalty.get("/loyalty/me", headers=auth),
                await loyalty.post("/loyalty/me/withdrawals", headers=auth,
                                   json={"amount": 10, "comment": "during the outage"}),
                await sso.post("/auth/login", json={"email": "o@example.com",
                                                    "password": "long enough"}),
                await loyalty.get("/loyalty/ready"),
            ):
                assert reply.status_code == 503, reply.text
                assert reply.json()["code"] == "database_unavailable"
            assert (await loyalty.get("/loyalty/me", headers=auth)).headers["Retry-After"] == "1"

            own_cluster.start()
            # Connections the pool held across the restart are replaced as they fail.
            for _ in range(50):
                reply = await loyalty.get("/loyalty/me", headers=auth)
                if reply.status_code == 200:
                    break
                assert reply.status_code == 503, reply.text
                await asyncio.sleep(0.1)
            assert reply.status_code == 200
            # Nothing of the refused withdrawal was written.
            assert reply.json()["balance"] == 100
            moved = await loyalty.post("/loyalty/me/withdrawals", headers=auth,
                                       json={"amount": 10, "comment": "after the outage"})
            assert moved.status_code == 201, moved.text
            assert moved.json()["balance"] == 90
    finally:
        await system.stop()


async def test_a_statement_that_hangs_is_cancelled_with_503_and_its_connection_replaced(
        pg_url: str) -> None:
    database = PgDatabase(DatabaseTarget(url=pg_url), fetch_timeout=0.5)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(DatabaseUnavailable):
            await database.fetch(text("SELECT pg_sleep(30)"))
        assert asyncio.get_running_loop().time() - started < 5
        rows = await database.fetch(text("SELECT 1 AS one"))
        assert rows[0]["one"] == 1
    finally:
        await database.dispose()
