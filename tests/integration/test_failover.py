"""PostgreSQL fails over under the services, which keep running: every request the failover
touches is answered 503 ``database_unavailable`` with Retry-After (never a 500, never a wrong
answer), the connections it broke are never used again, and the requests after it succeed
without a restart. Covers asyncpg's pool (units of work) and its lanes (coalesced
statements), backends killed under load, a server killed and restarted, a write URL that leads
to a read-only node, and a standby promoted behind a multi-host URL."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import grpc
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from authloyalty.bootstrap import EmbeddedSystem, build_embedded, loyalty_app, sso_app
from authloyalty.platform.database import (
    DatabaseUnavailable,
    IntegrityViolation,
    InvalidValue,
    SqlAlchemyDatabase,
)
from authloyalty.platform.engines import normalise_url
from authloyalty.platform.grpc import stop_server
from authloyalty.rpc.sso import sso_pb2, sso_pb2_grpc
from authloyalty.sso.grpc import build_grpc_server
from authloyalty.sso.service import Registration
from devstack.common import DevstackError, free_port
from devstack.postgres import PostgresCluster, scratch_dir
from tests.conftest import FAST_ARGON2, settings_for

PASSWORD = "long enough"


@dataclass
class Clients:
    """The embedded system on PostgreSQL with HTTP clients of both services, a registered
    user with a large balance, and its access token."""

    system: EmbeddedSystem
    sso: httpx.AsyncClient
    loyalty: httpx.AsyncClient
    email: str
    auth: dict[str, str]

    async def balance(self) -> httpx.Response:
        return await self.loyalty.get("/loyalty/me", headers=self.auth)

    async def withdraw(self, key: str | None = None) -> httpx.Response:
        headers = {**self.auth, **({"Idempotency-Key": key} if key else {})}
        return await self.loyalty.post("/loyalty/me/withdrawals", headers=headers,
                                       json={"amount": 1, "comment": "failover"})

    async def login(self) -> httpx.Response:
        return await self.sso.post("/auth/login", json={"email": self.email,
                                                        "password": PASSWORD})

    async def info(self) -> httpx.Response:
        return await self.sso.get("/auth/info", headers=self.auth)

    async def register(self) -> httpx.Response:
        return await self.sso.post("/auth/registration", json={
            "email": f"{uuid4().hex[:12]}@example.com", "password": PASSWORD})


@asynccontextmanager
async def serving(url: str, tmp_path: Path, *, migrate: bool = True,
                  **loyalty: object) -> AsyncIterator[Clients]:
    """Both services on ``url`` (migrated unless told), a user registered through them."""
    settings = settings_for(tmp_path, url, sso={"argon2": FAST_ARGON2.model_dump()},
                            loyalty={"welcome_bonus": 1_000_000, **loyalty})
    system = build_embedded(settings)
    try:
        if migrate:
            await system.migrate()
        sso = httpx.AsyncClient(transport=httpx.ASGITransport(app=sso_app(system.sso)),
                                base_url="http://sso")
        pts = httpx.AsyncClient(transport=httpx.ASGITransport(app=loyalty_app(system.loyalty)),
                                base_url="http://loyalty")
        async with sso, pts:
            email = f"{uuid4().hex[:12]}@example.com"
            auth: dict[str, str] = {}
            if migrate:
                issued = await system.sso.service.register(Registration(email, PASSWORD))
                await system.sso.relay.run_once()
                auth = {"Authorization": f"Bearer {issued.tokens.access_token}"}
            yield Clients(system, sso, pts, email, auth)
    finally:
        await system.stop()


def unavailable(reply: httpx.Response) -> bool:
    """A 503 a client can act on: the code, and when to retry."""
    return (reply.status_code == 503 and reply.json()["code"] == "database_unavailable"
            and reply.headers.get("Retry-After") == "1")


def terminate_backends(cluster: PostgresCluster, database: str) -> int:
    """Kill every backend connected to ``database`` (waiting until each is gone)."""
    out = cluster.psql("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) "
                       "FROM pg_stat_activity WHERE datname = :'db' "
                       "AND pid <> pg_backend_pid();", variables={"db": database})
    return int(out.strip())


def stop_immediately(cluster: PostgresCluster) -> None:
    """``pg_ctl stop -m immediate``: the server dies without a goodbye, as on a crash."""
    cluster._run([cluster.bin("pg_ctl"), "stop", "-D", cluster.data_dir, "-m", "immediate",
                  "-w", "-t", "60"])


async def replayed(standby: PostgresCluster, database: str, query: str) -> None:
    """Wait until ``query`` finds a row on ``standby`` (the primary's commit replayed)."""
    for _ in range(100):
        try:
            if standby.psql(query, database).strip() not in ("", "0"):
                return
        except DevstackError:  # the table itself not replayed yet
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{query!r} found nothing on the standby")


@pytest.fixture
def own_cluster() -> Iterator[PostgresCluster]:
    """A cluster of this test's own, since the test stops it; durable (fsync, synchronous
    commit), so that a crash loses nothing that was committed."""
    base = scratch_dir("authloyalty-test-failover-")
    cluster = PostgresCluster(base, durable=True).start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


async def settle() -> None:
    """Let the event loop see the sockets the server closed, as it does before any request
    that arrives over the network after them."""
    await asyncio.sleep(0.05)


async def test_backends_killed_under_load_fail_only_their_requests_and_nothing_twice(
        tmp_path: Path, pg_cluster: PostgresCluster) -> None:
    name = f"t_{uuid4().hex[:12]}"
    url = pg_cluster.create_database(name)
    try:
        async with serving(url, tmp_path) as c:
            start = (await c.balance()).json()["balance"]
            keys = (f"k-{n}" for n in itertools.count())
            answered: list[httpx.Response] = []
            refused_keys: list[str] = []
            stop = asyncio.Event()

            async def client() -> None:
                while not stop.is_set():
                    key = next(keys)
                    replies = [await c.balance(), await c.withdraw(key), await c.info(),
                               await c.withdraw()]
                    answered.extend(replies)
                    if replies[1].status_code != 201:
                        refused_keys.append(key)

            clients = [asyncio.create_task(client()) for _ in range(6)]
            killed = 0
            for _ in range(4):
                await asyncio.sleep(0.3)
                killed += await asyncio.to_thread(terminate_backends, pg_cluster, name)
            stop.set()
            await asyncio.gather(*clients)

            assert killed > 0
            statuses = {r.status_code for r in answered}
            assert statuses <= {200, 201, 503}, statuses
            assert all(unavailable(r) for r in answered if r.status_code == 503)
            await settle()
            # The next requests succeed: the killed connections were replaced, no restart.
            for reply in (await c.balance(), await c.withdraw(), await c.info(),
                          await c.login(), await c.withdraw(next(keys))):
                assert reply.status_code in (200, 201), reply.text
            # A refused keyed withdrawal may have committed before its answer was lost;
            # retried with its key, each one counts exactly once.
            for key in refused_keys:
                assert (await c.withdraw(key)).status_code == 201
            unkeyed_done = sum(1 for r in answered[3::4] if r.status_code == 201) + 1
            keyed = int(next(keys).removeprefix("k-"))  # keys handed out so far
            final = (await c.balance()).json()["balance"]
            # Every keyed withdrawal once; unkeyed ones answered 201 once each, and at most
            # those the failover answered 503 on top (their outcome was unknown).
            unkeyed_unknown = sum(1 for r in answered[3::4] if r.status_code == 503)
            taken = start - final
            assert keyed + unkeyed_done <= taken <= keyed + unkeyed_done + unkeyed_unknown
    finally:
        pg_cluster.drop_database(name)


async def test_a_lost_commit_is_unavailable_and_its_connection_never_used_again(
        pg_cluster: PostgresCluster, tmp_path: Path) -> None:
    name = f"t_{uuid4().hex[:12]}"
    url = pg_cluster.create_database(name)
    try:
        async with serving(url, tmp_path) as c:
            database = c.system.loyalty.database
            connection = await database.connect()
            try:
                await connection.execute(text("CREATE TABLE lost (n int)"))
                await asyncio.to_thread(terminate_backends, pg_cluster, name)
                with pytest.raises(DatabaseUnavailable):
                    await connection.commit()
            finally:
                await connection.close()
            await settle()
            assert (await c.withdraw()).status_code == 201
            assert (await c.balance()).status_code == 200
            rows = await database.fetch(text(
                "SELECT count(*) AS n FROM pg_tables WHERE tablename = 'lost'"))
            assert rows[0]["n"] == 0  # this one never committed: the server died first
    finally:
        pg_cluster.drop_database(name)


async def grpc_login(port: int, email: str) -> grpc.StatusCode:
    """The status of sso's gRPC ``Login`` for ``email``."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            await sso_pb2_grpc.AuthStub(channel).Login(  # type: ignore[no-untyped-call]
                sso_pb2.LoginRequest(email=email, password=PASSWORD), timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_a_server_killed_and_restarted_answers_503_then_200_without_a_restart(
        tmp_path: Path, own_cluster: PostgresCluster) -> None:
    url = own_cluster.create_database("crash")
    async with serving(url, tmp_path) as c:
        server, port = build_grpc_server(c.system.sso.service, "127.0.0.1", 0)
        await server.start()
        relay = asyncio.create_task(c.system.sso.relay.run_forever())
        try:
            assert (await c.withdraw()).status_code == 201
            stop_immediately(own_cluster)
            for reply in (await c.balance(), await c.withdraw(), await c.withdraw("while-down"),
                          await c.login(), await c.info(), await c.register(),
                          await c.loyalty.get("/loyalty/ready"), await c.sso.get("/auth/ready")):
                assert unavailable(reply), reply.text
            assert await grpc_login(port, c.email) == grpc.StatusCode.UNAVAILABLE
            await asyncio.sleep(1)  # the relay fails a pass or two meanwhile
            own_cluster.start()  # crash recovery, then it accepts connections again
            for reply in (await c.balance(), await c.withdraw(), await c.withdraw("while-down"),
                          await c.login(), await c.info()):
                assert reply.status_code in (200, 201), reply.text
            assert await grpc_login(port, c.email) == grpc.StatusCode.OK
            # The relay goes on by itself: a registration now gets its welcome bonus.
            newcomer = await c.register()
            assert newcomer.status_code == 201
            auth = {"Authorization": f"Bearer {newcomer.json()['access_token']}"}
            for _ in range(100):
                bonus = await c.loyalty.get("/loyalty/me", headers=auth)
                if bonus.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert bonus.json()["balance"] == 1_000_000
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
            await stop_server(server, grace=0)


async def test_a_write_url_leading_to_a_read_only_node_is_503_and_recovers(
        tmp_path: Path, pg_cluster: PostgresCluster) -> None:
    name = f"t_{uuid4().hex[:12]}"
    url = pg_cluster.create_database(name)
    try:
        async with serving(url, tmp_path) as c:
            assert (await c.withdraw()).status_code == 201  # connections pooled, writable
            # What a node that stopped being the leader answers to writes (25006).
            pg_cluster.psql(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
            await asyncio.to_thread(terminate_backends, pg_cluster, name)
            await settle()
            # Reads too: the write URL must lead to the leader, which a read-only node is not
            # (the leader-only reads, a session check after a logout, would be stale there).
            for reply in (await c.withdraw(), await c.withdraw("ro"), await c.login(),
                          await c.register(), await c.balance(), await c.info()):
                assert unavailable(reply), reply.text
            # Writable again: no connection opened read-only is handed out any more.
            pg_cluster.psql(f'ALTER DATABASE "{name}" SET default_transaction_read_only = off')
            for reply in (await c.withdraw(), await c.withdraw("ro"), await c.login(),
                          await c.register(), await c.balance(), await c.info()):
                assert reply.status_code in (200, 201), reply.text
    finally:
        pg_cluster.drop_database(name)


async def test_a_hot_standby_as_write_url_is_503_for_writes_not_500(
        tmp_path: Path, pg_cluster: PostgresCluster) -> None:
    name = f"t_{uuid4().hex[:12]}"
    url = pg_cluster.create_database(name)
    async with serving(url, tmp_path) as primary:
        email, auth = primary.email, primary.auth
    base = scratch_dir("authloyalty-test-standby-")
    standby = pg_cluster.start_replica(base)
    try:
        await replayed(standby, name, "SELECT count(*) FROM sso.users")
        async with serving(standby.url(name, driver=None), tmp_path, migrate=False) as c:
            c.email, c.auth = email, auth
            # Not 500 for writes; and no read either, since the write URL's reads are the ones
            # that must see the leader's latest commit.
            for reply in (await c.withdraw(), await c.withdraw("standby"), await c.login(),
                          await c.register(), await c.info(), await c.balance()):
                assert unavailable(reply), reply.text
    finally:
        standby.stop()
        shutil.rmtree(base, ignore_errors=True)
        pg_cluster.drop_database(name)


async def test_a_promoted_standby_takes_over_behind_a_multi_host_url(
        tmp_path: Path, own_cluster: PostgresCluster) -> None:
    own_cluster.create_database("ha")
    base = scratch_dir("authloyalty-test-promote-")
    standby = own_cluster.start_replica(base)
    try:
        url = (f"postgresql://postgres@{own_cluster.host}:{own_cluster.port},"
               f"{standby.host}:{standby.port}/ha?target_session_attrs=read-write")
        async with serving(url, tmp_path) as c:
            assert (await c.withdraw("before")).status_code == 201
            await replayed(standby, "ha", "SELECT count(*) FROM loyalty.idempotency_keys")
            before = (await c.balance()).json()["balance"]
            stop_immediately(own_cluster)  # the leader dies
            for reply in (await c.withdraw(), await c.login(), await c.balance()):
                assert unavailable(reply), reply.text  # no node is read-write yet
            standby._run([standby.bin("pg_ctl"), "promote", "-D", standby.data_dir, "-w"])
            # The same process, the same URL: now the promoted node serves.
            assert (await c.balance()).json()["balance"] == before
            again = await c.withdraw("before")
            assert again.status_code == 201
            assert again.json()["balance"] == before  # the stored answer, not a second one
            assert (await c.withdraw()).json()["balance"] == before - 1
            assert (await c.login()).status_code == 200
            assert (await c.register()).status_code == 201
            assert (await c.info()).status_code == 200
    finally:
        standby.stop()
        shutil.rmtree(base, ignore_errors=True)


async def test_the_sqlalchemy_driver_maps_and_discards_alike(pg_cluster: PostgresCluster) -> None:
    name = f"t_{uuid4().hex[:12]}"
    url = pg_cluster.create_database(name)
    # An engine with a pool of its own (the services' SQLAlchemy engines on PostgreSQL serve
    # migrations without one), so that a connection handed out again would show.
    database = SqlAlchemyDatabase(create_async_engine(normalise_url(url), pool_size=2))
    insert = text("INSERT INTO t (n) VALUES (1)")
    try:
        async with database.transaction() as connection:
            await connection.execute(text("CREATE TABLE t (n int PRIMARY KEY)"))
        with pytest.raises(InvalidValue):
            await database.fetch(text("SELECT 'x'::int"))
        async with database.transaction() as connection:
            await connection.execute(insert)
        with pytest.raises(IntegrityViolation):
            async with database.transaction() as connection:
                await connection.execute(insert)

        pg_cluster.psql(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        await asyncio.to_thread(terminate_backends, pg_cluster, name)
        await settle()
        for _ in range(2):  # the killed pooled connection, then a fresh read-only one
            with pytest.raises(DatabaseUnavailable):
                async with database.transaction() as connection:
                    await connection.execute(text("DELETE FROM t"))
        pg_cluster.psql(f'ALTER DATABASE "{name}" SET default_transaction_read_only = off')
        async with database.transaction() as connection:  # not the read-only one again
            assert await connection.execute(text("DELETE FROM t")) == 1
    finally:
        await database.dispose()
        pg_cluster.drop_database(name)


HAPROXY_CFG = """global
    maxconn 200
defaults
    mode tcp
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 1s
listen write
    bind 127.0.0.1:{port}
    option pgsql-check user postgres
    default-server inter 200ms fall 1 rise 1 on-marked-down shutdown-sessions
    server leader 127.0.0.1:{leader} check
    server standby 127.0.0.1:{standby} check backup
"""


@contextlib.contextmanager
def haproxy(base: Path, leader: int, standby: int) -> Iterator[int]:
    """HAProxy's write port: the leader while it answers, then the standby (a proxy whose
    checks cannot tell a leader from a standby: the services must tell); every session to a
    server marked down is cut, as the production proxy does."""
    port = free_port()
    config = base / "haproxy.cfg"
    config.write_text(HAPROXY_CFG.format(port=port, leader=leader, standby=standby))
    process = subprocess.Popen([shutil.which("haproxy") or "/usr/sbin/haproxy", "-f",
                                str(config), "-db"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)


async def test_through_haproxy_a_killed_leader_is_503_until_the_standby_is_promoted(
        tmp_path: Path, own_cluster: PostgresCluster) -> None:
    own_cluster.create_database("viaproxy")
    base = scratch_dir("authloyalty-test-haproxy-")
    standby = own_cluster.start_replica(base)
    try:
        with haproxy(tmp_path, own_cluster.port, standby.port) as port:
            url = f"postgresql://postgres@127.0.0.1:{port}/viaproxy"
            async with serving(url, tmp_path) as c:
                assert (await c.withdraw("before")).status_code == 201
                await replayed(standby, "viaproxy",
                               "SELECT count(*) FROM loyalty.idempotency_keys")
                before = (await c.balance()).json()["balance"]
                stop_immediately(own_cluster)
                await asyncio.sleep(0.5)  # the proxy marks the leader down, routes to standby
                # Connections now open on the standby: refused (it is not read-write), so no
                # leader-only read is answered from it and no write is attempted.
                for reply in (await c.balance(), await c.withdraw(), await c.login(),
                              await c.info(), await c.register()):
                    assert unavailable(reply), reply.text
                standby._run([standby.bin("pg_ctl"), "promote", "-D", standby.data_dir, "-w"])
                assert (await c.balance()).json()["balance"] == before
                replay = await c.withdraw("before")
                assert replay.status_code == 201
                assert replay.json()["balance"] == before
                assert (await c.withdraw()).json()["balance"] == before - 1
                for reply in (await c.login(), await c.info(), await c.register()):
                    assert reply.status_code in (200, 201), reply.text
    finally:
        standby.stop()
        shutil.rmtree(base, ignore_errors=True)
