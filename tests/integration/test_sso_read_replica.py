"""sso with a read replica (``sso.database.read_url``): user profiles are read there, every
read a lag would make wrong is read from the leader, and a replica that lacks a row or is down
costs nothing but a read on the leader."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import pytest

from authloyalty.bootstrap import EmbeddedSystem, build_embedded, sso_app
from authloyalty.platform.errors import InvalidToken
from devstack.common import DevstackError, free_port
from devstack.postgres import PostgresCluster, scratch_dir
from tests.conftest import FAST_ARGON2, settings_for

PASSWORD = "long enough"
LAG = "2s"


@pytest.fixture
def lagging_replica(pg_cluster: PostgresCluster) -> Iterator[PostgresCluster]:
    """A streaming replica that applies changes 2 s late, so a read it serves is visible."""
    base = scratch_dir("authloyalty-test-sso-replica-")
    standby = pg_cluster.start_replica(base)
    standby.psql(f"ALTER SYSTEM SET recovery_min_apply_delay = '{LAG}'")
    standby.psql("SELECT pg_reload_conf()")
    try:
        yield standby
    finally:
        standby.stop()
        shutil.rmtree(base, ignore_errors=True)


@asynccontextmanager
async def sso_with_read_url(tmp_path: Path, url: str,
                            read_url: str) -> AsyncIterator[tuple[EmbeddedSystem,
                                                                  httpx.AsyncClient]]:
    """The system on ``url`` with sso's reads routed to ``read_url``; an HTTP client of sso."""
    settings = settings_for(tmp_path, url, sso={"argon2": FAST_ARGON2.model_dump(),
                                                 "database": {"read_url": read_url}})
    system = build_embedded(settings)
    try:
        await system.migrate()
        transport = httpx.ASGITransport(app=sso_app(system.sso))
        async with httpx.AsyncClient(transport=transport, base_url="http://sso") as client:
            yield system, client
    finally:
        await system.stop()


async def until_replayed(replica: PostgresCluster, database: str, query: str) -> None:
    for _ in range(150):
        try:
            if replica.psql(query, database).strip() not in ("", "0", "f"):
                return
        except DevstackError:  # not even the table yet
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"the replica never answered {query!r}")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_profiles_come_from_the_replica_and_leader_only_reads_are_current(
        tmp_path: Path, pg_cluster: PostgresCluster,
        lagging_replica: PostgresCluster) -> None:
    name = f"t_{uuid4().hex[:12]}"
    url = pg_cluster.create_database(name)
    try:
        async with sso_with_read_url(tmp_path, url,
                                     lagging_replica.url(name, driver=None)) as (system, sso):
            service = system.sso.service
            await until_replayed(lagging_replica, name, "SELECT to_regclass('sso.users') "
                                 "IS NOT NULL")
            email = f"{uuid4().hex[:10]}@example.com"
            registered = await sso.post("/auth/registration",
                                        json={"email": email, "password": PASSWORD})
            assert registered.status_code == 201
            user_id = UUID(registered.json()["user_id"])
            access = registered.json()["access_token"]

            # Right after registration, before the replica has the user:
            login = await sso.post("/auth/login", json={"email": email, "password": PASSWORD})
            assert login.status_code == 200, login.text  # credentials: the leader
            info = await sso.get("/auth/info", headers=bearer(access))
            assert info.status_code == 200, info.text  # the replica lacks it: the leader
            assert info.json()["email"] == email
            assert (await service.profile(user_id)).email == email
            refreshed = await sso.post("/auth/refresh",
                                       json={"token": login.json()["refresh_token"]})
            assert refreshed.status_code == 200  # the session just opened: the leader

            await until_replayed(lagging_replica, name,
                                 f"SELECT count(*) FROM sso.users WHERE id = '{user_id}'")
            # A promotion, committed on the leader: the replica shows it 2 s later. Reads of
            # rights see it at once; profile reads show the replica's (older) row, which is
            # how we know they were served there.
            await service.ensure_admin(email, PASSWORD)
            assert (await service.get_user(user_id)).is_admin  # IsAdmin: the leader
            assert not (await service.profile(user_id)).is_admin  # GetUser: the replica
            shown = await sso.get("/auth/info", headers=bearer(access))
            assert shown.json()["is_admin"] is False  # /auth/info's profile: the replica
            assert (await service.user_info(access, current=True)).is_admin  # rights: leader

            # A logout counts at once, whatever the replica knows.
            assert (await sso.post("/auth/logout", json={"token": access})).status_code == 200
            with pytest.raises(InvalidToken):
                await service.authenticate(access)
            assert (await sso.get("/auth/info", headers=bearer(access))).status_code == 401

            for _ in range(100):  # the replica catches up with the promotion
                if (await service.profile(user_id)).is_admin:
                    break
                await asyncio.sleep(0.1)
            assert (await service.profile(user_id)).is_admin
    finally:
        pg_cluster.drop_database(name)


async def test_a_replica_that_is_down_leaves_profile_reads_to_the_leader(
        tmp_path: Path, pg_url: str) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    async with sso_with_read_url(tmp_path, pg_url, nowhere) as (system, sso):
        registered = await sso.post("/auth/registration", json={
            "email": "down@example.com", "password": PASSWORD})
        assert registered.status_code == 201
        info = await sso.get("/auth/info", headers=bearer(registered.json()["access_token"]))
        assert info.status_code == 200, info.text
        assert info.json()["email"] == "down@example.com"
        user_id = UUID(registered.json()["user_id"])
        assert (await system.sso.service.profile(user_id)).id == user_id
