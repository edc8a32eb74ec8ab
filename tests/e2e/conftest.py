"""End-to-end fixtures: run ``authloyalty up`` as a subprocess and talk HTTP to it."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest

from devstack.postgres import scratch_dir
from devstack.supervisor import Supervisor
from tests.e2e.e2e_helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Api,
    Server,
    bearer,
    free_port,
    no_5xx,
)
from tests.e2e.full_stack import StackHandle, devstack, report


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The suite's shared server, with a bootstrap admin; SIGTERM must stop it in time."""
    srv = Server(tmp_path_factory.mktemp("shared") / "data", admin=(ADMIN_EMAIL, ADMIN_PASSWORD))
    srv.start()
    try:
        yield srv
    finally:
        if srv.process is not None:
            code = srv.stop()
            assert code == 0, f"exit code {code} after SIGTERM:\n{srv.output()}"


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A plain HTTP client; any 5xx answer fails the test at once (client mistakes never 5xx)."""
    with httpx.Client(timeout=30.0, event_hooks={"response": [no_5xx]}) as client:
        yield client


@pytest.fixture
def api(server: Server, http: httpx.Client) -> Api:
    """Helpers bound to the shared server."""
    return Api(server, http)


class AdminLogin:
    """The bootstrap admin's access token, logged in again when it nears its expiry (the suite
    runs longer than an access token lives)."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._token = ""
        self._expires = 0.0

    def token(self) -> str:
        if time.time() > self._expires - 120:
            with httpx.Client(timeout=30.0) as client:
                r = client.post(f"{self._server.sso}/auth/login",
                                json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
            assert r.status_code == 200, r.text
            self._token = r.json()["access_token"]
            self._expires = float(jwt.decode(self._token, options={"verify_signature": False})
                                  ["exp"])
        return self._token


@pytest.fixture(scope="session")
def admin_login(server: Server) -> AdminLogin:
    """One login of the bootstrap admin, renewed before its token expires."""
    return AdminLogin(server)


@pytest.fixture
def admin_token(admin_login: AdminLogin) -> str:
    """An access token of the bootstrap admin, valid for at least two more minutes."""
    return admin_login.token()


@pytest.fixture
def admin(admin_token: str) -> dict[str, str]:
    """Authorization header of the bootstrap admin."""
    return bearer(admin_token)


@pytest.fixture(scope="session")
def full_stack() -> Iterator[StackHandle]:
    """The default topology of ``python -m devstack up`` (tests/e2e/full_stack.py), one for the
    whole run, on free ports in a scratch directory; ``down`` and removed at the end."""
    directory = scratch_dir("authloyalty-fullstack-")
    started = time.monotonic()
    result = devstack("up", "--dir", str(directory), "--no-443",
                      "--https-port", str(free_port()), "--http2-grpc-port", str(free_port()),
                      "--prometheus-port", str(free_port()))
    try:
        assert result.returncode == 0, f"stack up failed:\n{result.stdout}\n{result.stderr}"
        handle = StackHandle(directory, report(directory))
        assert handle.state["status"] == "running"
        assert all(c["state"] == "RUNNING" for c in handle.state["components"]), handle.logs()
        print(f"full stack up in {time.monotonic() - started:.1f} s", file=sys.stderr)
        yield handle
    finally:
        if Supervisor(directory).alive():
            devstack("down", "--dir", str(directory), timeout=300)
        shutil.rmtree(directory, ignore_errors=True)
