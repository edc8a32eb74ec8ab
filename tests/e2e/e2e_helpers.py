"""Helpers of the end-to-end suite: the server process and a thin HTTP API wrapper."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

from devstack.common import clean_env, free_port, free_ports  # noqa: F401 - free_port: for the other e2e modules

ROOT = Path(__file__).resolve().parents[2]


def _executable() -> str:
    for candidate in (ROOT / ".venv" / "bin" / "authloyalty",
                      Path(sys.executable).parent / "authloyalty"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("authloyalty")
    assert found, "the authloyalty command is not installed"
    return found


AUTHLOYALTY = _executable()
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
BONUS_DEADLINE = 15.0  # generous: a loaded CI machine is slow, the product is not

ADMIN_EMAIL = "root-admin@example.com"
ADMIN_PASSWORD = "admin-password-123"
PASSWORD = "correct horse battery"


def server_env(**extra: str) -> dict[str, str]:
    """The environment of a server or CLI run: ours, minus config that could leak in."""
    return clean_env(**{"AUTHLOYALTY_SSO__LOGIN_THROTTLE__MAX_FAILURES_PER_CLIENT": "1000",
                        **extra})


@dataclass
class Server:
    """One ``authloyalty up`` process on its own ports and data dir."""

    data_dir: Path
    admin: tuple[str, str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)  # more options of `authloyalty up`
    sso_port: int = 0
    loyalty_port: int = 0
    grpc_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)
    _log_file: Any = None
    starts: int = 0

    def __post_init__(self) -> None:
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def sso(self) -> str:
        return f"http://127.0.0.1:{self.sso_port}"

    @property
    def loyalty(self) -> str:
        return f"http://127.0.0.1:{self.loyalty_port}"

    def output(self) -> str:
        """Everything the process wrote so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        """Start on fresh free ports and wait until both health checks answer."""
        assert self.process is None, "already running"
        # Chosen together: three single picks can return one just-released port twice.
        self.sso_port, self.loyalty_port, self.grpc_port = free_ports(3)
        command = [AUTHLOYALTY, "up", "--data-dir", str(self.data_dir),
                   "--sso-port", str(self.sso_port), "--loyalty-port", str(self.loyalty_port),
                   "--grpc-port", str(self.grpc_port), *self.args]
        if self.admin is not None:
            command += ["--admin-email", self.admin[0], "--admin-password", self.admin[1]]
        self._log_file = self.log_path.open("ab")
        self._log_file.write(f"\n===== start #{self.starts + 1}: {command}\n".encode())
        self._log_file.flush()
        self.process = subprocess.Popen(command, stdout=self._log_file,
                                        stderr=subprocess.STDOUT, env=server_env(**self.env))
        self.starts += 1
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = self.process.poll()
                if code is not None:
                    self._close_log()
                    self.process = None
                    pytest.fail(f"authloyalty up exited with {code} before it was ready:\n"
                                f"{self.output()}")
                if _healthy(client, f"{self.sso}/auth/healthz") and _healthy(
                        client, f"{self.loyalty}/loyalty/healthz"):
                    return
                if time.monotonic() > deadline:
                    self.kill()
                    pytest.fail(f"authloyalty up not ready after {START_TIMEOUT} s:\n"
                                f"{self.output()}")
                time.sleep(0.1)

    def stop(self) -> int:
        """SIGTERM and wait; return the exit code (fails the test if it hangs)."""
        assert self.process is not None, "not running"
        process = self.process
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"authloyalty up did not exit within {STOP_TIMEOUT} s of SIGTERM:\n"
                        f"{self.output()}")
        self.process = None
        self._close_log()
        return code

    def kill(self) -> None:
        """Last resort (only our own child)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)
            self.process = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def _healthy(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx.TransportError:
        return False



def no_5xx(response: httpx.Response) -> None:
    response.read()
    assert response.status_code < 500, (
        f"{response.request.method} {response.request.url} -> {response.status_code}: "
        f"{response.text[:500]}")


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex}@example.com"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Account:
    """A registered user as the tests see it."""

    email: str
    password: str
    user_id: str
    access: str
    refresh: str

    @property
    def auth(self) -> dict[str, str]:
        return bearer(self.access)


class Endpoints(Protocol):
    """Where sso and loyalty answer: a :class:`Server`, or the separate-process stack."""

    @property
    def sso(self) -> str: ...

    @property
    def loyalty(self) -> str: ...


@dataclass
class Api:
    """Small helpers over the HTTP API of one server."""

    srv: Endpoints
    http: httpx.Client

    def sso(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.http.request(method, f"{self.srv.sso}{path}", **kw)

    def loy(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.http.request(method, f"{self.srv.loyalty}{path}", **kw)

    def register(self, email: str | None = None, password: str = PASSWORD,
                 **extra: Any) -> Account:
        email = email or unique_email()
        r = self.sso("POST", "/auth/registration",
                     json={"email": email, "password": password, **extra})
        assert r.status_code == 201, r.text
        body = r.json()
        return Account(email, password, body["user_id"], body["access_token"],
                       body["refresh_token"])

    def login(self, email: str, password: str) -> Account:
        r = self.sso("POST", "/auth/login", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
        body = r.json()
        return Account(email, password, body["user_id"], body["access_token"],
                       body["refresh_token"])

    def wait_account(self, token: str, deadline: float = BONUS_DEADLINE) -> dict[str, Any]:
        """Poll GET /loyalty/me until the welcome event has opened the account."""
        end = time.monotonic() + deadline
        while True:
            r = self.loy("GET", "/loyalty/me", headers=bearer(token))
            if r.status_code == 200:
                body: dict[str, Any] = r.json()
                return body
            assert r.status_code == 404, r.text
            assert r.json()["code"] == "account_not_found"
            if time.monotonic() > end:
                pytest.fail(f"account not opened within {deadline} s")
            time.sleep(0.05)

    def user(self, **extra: Any) -> Account:
        """A registered user whose account (with the bonus) is open."""
        account = self.register(**extra)
        self.wait_account(account.access)
        return account

    def balance(self, account: Account) -> int:
        return self.balance_of(account.auth)

    def balance_of(self, headers: dict[str, str]) -> int:
        r = self.loy("GET", "/loyalty/me", headers=headers)
        assert r.status_code == 200, r.text
        value: int = r.json()["balance"]
        return value



def poll(check: Callable[[], bool], deadline: float) -> bool:
    """True as soon as ``check()`` holds, False if it never did before ``deadline`` s."""
    end = time.monotonic() + deadline
    while True:
        if check():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.05)


def error_code(response: httpx.Response) -> str:
    """The ``code`` of an error envelope (asserting the envelope's shape)."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["status"] == "Error", body
    assert isinstance(body["error"], str), body
    assert body["error"], body
    code: str = body["code"]
    return code


def run_cli(*args: str, timeout: float = 60.0, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``authloyalty ARGS`` as a user would, capturing its output."""
    return subprocess.run([AUTHLOYALTY, *args], capture_output=True, text=True,
                          timeout=timeout, env=server_env(**env), check=False)


def history(api: Api, headers: dict[str, str], path: str = "/loyalty/me/transactions",
            limit: int = 100) -> list[dict[str, Any]]:
    """Every history item, following ``next_cursor`` to the end."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        r = api.loy("GET", path, headers=headers, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    pytest.fail("history pagination does not end")


@contextmanager
def admin_server(data_dir: Path, http: httpx.Client, name: str,
                 env: dict[str, str] | None = None) -> Iterator[tuple[Api, Account]]:
    """A server of its own whose bootstrap admin (the only admin) is logged in; stopped, and
    required to exit cleanly, at the end."""
    email, password = unique_email(name), f"{name}-password"
    srv = Server(data_dir, admin=(email, password), env=env or {})
    srv.start()
    try:
        api = Api(srv, http)
        yield api, api.login(email, password)
    finally:
        assert srv.stop() == 0, srv.output()
