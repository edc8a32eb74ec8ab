"""Black-box probes: ``authloyalty up`` as a subprocess, on SQLite and on PostgreSQL, spoken to
only over HTTP and gRPC, the way an attacker (or a careless client) reaches it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from uuid import uuid4

import grpc
import httpx
import pytest

from devstack.postgres import PostgresCluster
from tests.e2e.e2e_helpers import ADMIN_EMAIL, ADMIN_PASSWORD, Api, Server, bearer, no_5xx

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One ``authloyalty up`` per backend for the whole directory, with an admin."""
    args: list[str] = []
    database = None
    pg: PostgresCluster | None = None
    if request.param == "postgres":
        pg = request.getfixturevalue("pg_cluster")
        database = f"sec_{uuid4().hex[:12]}"
        args = ["--database-url", pg.create_database(database)]
    # The probes (the fuzzer above all) fail thousands of logins from this one client: the
    # per-client throttle is tested elsewhere and must not lock the other probes out.
    throttle = {"AUTHLOYALTY_SSO__LOGIN_THROTTLE__MAX_FAILURES_PER_CLIENT": "1000000"}
    srv = Server(tmp_path_factory.mktemp(f"security-{request.param}") / "data",
                 admin=(ADMIN_EMAIL, ADMIN_PASSWORD), args=args, env=throttle)
    srv.start()
    try:
        yield srv
    finally:
        if srv.process is not None:
            code = srv.stop()
            assert code == 0, f"exit code {code} after SIGTERM:\n{srv.output()}"
        if pg is not None and database is not None:
            pg.drop_database(database)


@pytest.fixture
def api(target: Server) -> Iterator[Api]:
    """HTTP helpers bound to the backend's server; any 5xx fails the test at once."""
    with httpx.Client(timeout=30.0, event_hooks={"response": [no_5xx]}) as client:
        yield Api(target, client)


@pytest.fixture
def admin_auth(api: Api) -> dict[str, str]:
    """The bootstrap admin's Authorization header."""
    return bearer(api.login(ADMIN_EMAIL, ADMIN_PASSWORD).access)


@pytest.fixture
async def channel(target: Server) -> AsyncIterator[grpc.aio.Channel]:
    """A gRPC channel to the backend's sso."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{target.grpc_port}") as chan:
        yield chan
