"""The production topology on this machine, used over HTTPS through the nginx gateway.

`python -m devstack up --postgres simple` starts PostgreSQL (primary + streaming replica; the
quick shape, the HA cluster has tests/e2e/test_ha_failover.py), Kafka, two sso
replicas, loyalty and nginx under supervisord; a client that only knows the gateway registers,
logs in, sees the bonus, withdraws, gets an admin deposit and logs out; one sso replica is
SIGKILLed while requests keep coming, and none fails; `restart sso-1` brings it back; `down`
stops every process, supervisord included.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from authloyalty.rpc.sso import sso_pb2, sso_pb2_grpc
from devstack.postgres import scratch_dir
from devstack.supervisor import Supervisor
from tests.e2e.e2e_helpers import PASSWORD, bearer, free_port, run_cli, unique_email
from tests.e2e.full_stack import StackHandle, alive, devstack, report

pytestmark = pytest.mark.e2e

LOGOUT_DEADLINE = 1.0


@pytest.fixture(scope="module")
def stack() -> Iterator[StackHandle]:
    directory = scratch_dir("authloyalty-stack-")
    started = time.monotonic()
    result = devstack("up", "--dir", str(directory), "--sso-replicas", "2",
                    "--loyalty-replicas", "1", "--brokers", "1", "--postgres", "simple",
                    "--https-port", str(free_port()), "--http2-grpc-port", str(free_port()),
                    "--no-prometheus")
    try:
        assert result.returncode == 0, f"stack up failed:\n{result.stdout}\n{result.stderr}"
        state = report(directory)
        assert state["status"] == "running"
        assert all(c["state"] == "RUNNING" for c in state["components"]), state["components"]
        print(f"stack up in {time.monotonic() - started:.1f} s", file=sys.stderr)
        yield StackHandle(directory, state)
    finally:
        if Supervisor(directory).alive():  # a failed test: nothing may be left running
            devstack("down", "--dir", str(directory), timeout=180)
        shutil.rmtree(directory, ignore_errors=True)


def _requests_served(metrics_url: str) -> float:
    """Requests a replica answered for routes only the gateway's clients call."""
    text = httpx.get(metrics_url, timeout=5.0).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "authloyalty_http_requests_total"
                    and sample.labels.get("route") in ("/auth/registration", "/auth/login")):
                total += sample.value
    return total


def test_production_topology_over_https(stack: StackHandle) -> None:
    headers = {"X-Request-Id": "e2e-stack-1"}
    with httpx.Client(base_url=stack.gateway, verify=stack.tls(), timeout=10.0) as client:
        # register through the gateway; the request id comes back
        email = unique_email("stack")
        r = client.post("/auth/registration", json={"email": email, "password": PASSWORD},
                        headers=headers)
        assert r.status_code == 201, r.text
        assert r.headers["x-request-id"] == "e2e-stack-1"
        user_id = r.json()["user_id"]
        r = client.get("/auth/healthz")
        assert r.headers.get("x-request-id"), "the gateway sets a request id when absent"

        # login (several times: round robin must reach both replicas)
        for _ in range(4):
            r = client.post("/auth/login", json={"email": email, "password": PASSWORD})
            assert r.status_code == 200, r.text
        access = r.json()["access_token"]
        auth = bearer(access)

        # the welcome bonus arrives through Kafka; loyalty reads it from the replica
        deadline = time.monotonic() + 10
        while (r := client.get("/loyalty/me", headers=auth)).status_code == 404:
            assert time.monotonic() < deadline, "welcome bonus not visible within 10 s"
            time.sleep(0.1)
        assert r.status_code == 200, r.text
        assert r.json()["balance"] == 100

        r = client.post("/loyalty/me/withdrawals", headers=auth,
                        json={"amount": 30, "comment": "coffee"})
        assert r.status_code == 201, r.text
        assert r.json()["balance"] == 70

        # admin deposit, the admin made with the CLI on an sso replica's config
        admin_email = unique_email("boss")
        created = run_cli("admin", "create", "--config", stack.component("sso-1")["config"],
                          "--email", admin_email, "--password", "admin password 1")
        assert created.returncode == 0, created.stdout + created.stderr
        r = client.post("/auth/login", json={"email": admin_email, "password": "admin password 1"})
        assert r.status_code == 200, r.text
        admin = bearer(r.json()["access_token"])
        r = client.post(f"/loyalty/admin/accounts/{user_id}/deposits", headers=admin,
                        json={"amount": 500, "comment": "gift"})
        assert r.status_code == 201, r.text
        assert r.json()["balance"] == 570

        # both sso replicas served the gateway's clients
        served = {name: _requests_served(f"{stack.component(name)['urls']['http']}/metrics")
                  for name in ("sso-1", "sso-2")}
        assert all(v > 0 for v in served.values()), served

        # gRPC through nginx: TLS port (HTTP/2 + ALPN) and the plaintext HTTP/2 port
        credentials = grpc.ssl_channel_credentials(root_certificates=stack.ca.read_bytes())
        with grpc.secure_channel(f"localhost:{stack.https_port}", credentials) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="auth.Auth"), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            login = sso_pb2_grpc.AuthStub(channel).Login(
                sso_pb2.LoginRequest(email=email, password=PASSWORD), timeout=5)
            assert login.access_token
        with grpc.insecure_channel(stack.component("nginx")["urls"]["grpc_h2c"]) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="auth.Auth"), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

        # SIGKILL one sso replica while requests keep coming: none may fail. GETs run on
        # another thread throughout, so some are in flight on the victim as it dies: nginx
        # resends those (idempotent). POSTs follow the kill once the process is gone: nginx
        # then gets "connection refused" from it and passes them on, which is safe. (A POST
        # caught inside the dying process, or in its kernel accept queue, is never resent: the
        # gateway cannot know whether it ran, so non_idempotent stays off.)
        failures: list[str] = []
        stop = threading.Event()

        def idempotent_load() -> None:
            with httpx.Client(base_url=stack.gateway, verify=stack.tls(),
                              timeout=10.0) as reader:
                while not stop.is_set():
                    for path in ("/.well-known/jwks.json", "/auth/info"):
                        try:
                            resp = reader.get(path, headers=auth)
                        except httpx.HTTPError as exc:
                            failures.append(f"GET {path}: {exc!r}")
                            continue
                        if resp.status_code != 200:
                            failures.append(f"GET {path}: {resp.status_code} {resp.text[:200]}")

        reader = threading.Thread(target=idempotent_load, daemon=True)
        reader.start()
        victim = int(stack.component("sso-1")["pid"])
        try:
            for i in range(24):
                if i == 6:
                    os.kill(victim, signal.SIGKILL)
                    deadline = time.monotonic() + 5
                    while alive(victim) or stack.running("sso-1"):
                        assert time.monotonic() < deadline, "the killed replica is still alive"
                        time.sleep(0.01)
                r = client.post("/auth/login", json={"email": email, "password": PASSWORD})
                if r.status_code != 200:
                    failures.append(f"login #{i}: {r.status_code} {r.text[:200]}")
                r = client.post("/auth/registration",
                                json={"email": unique_email("after-kill"), "password": PASSWORD})
                if r.status_code != 201:
                    failures.append(f"registration #{i}: {r.status_code} {r.text[:200]}")
        finally:
            stop.set()
            reader.join(timeout=15)
        assert not failures, f"{failures}\n{stack.logs()}"
        status = devstack("status", "--dir", str(stack.dir), timeout=30)
        assert status.returncode == 1, status.stdout  # one component is down ...
        assert re.search(r"(?m)^\s*sso-1\s+EXITED\s", status.stdout), status.stdout

        # ... and logout still ends the session at loyalty within a second
        r = client.post("/auth/logout", json={"token": access})
        assert r.status_code == 200, r.text
        logged_out = time.monotonic()
        while (r := client.get("/loyalty/me", headers=auth)).status_code == 200:
            assert time.monotonic() - logged_out < LOGOUT_DEADLINE, (
                f"loyalty still accepts the token 1 s after logout\n{stack.logs()}")
            time.sleep(0.02)
        assert r.status_code == 401, r.text
        print(f"logout refused at loyalty after {time.monotonic() - logged_out:.3f} s",
              file=sys.stderr)

        # one command brings the killed replica back, ready
        restarted = devstack("restart", "sso-1", "--dir", str(stack.dir), timeout=120)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        assert "sso-1 ready" in restarted.stdout, restarted.stdout
        status = devstack("status", "--dir", str(stack.dir), timeout=30)
        assert status.returncode == 0, status.stdout
        r = httpx.get(f"{report(stack.dir)['components'][_index(stack, 'sso-1')]['urls']['http']}"
                      "/auth/healthz", timeout=5.0)
        assert r.status_code == 200, r.text

    # down stops every process `up` started, supervisord too, and nothing is left running
    pids = [int(c["pid"]) for c in report(stack.dir)["components"] if c["pid"]]
    assert len(pids) == len(stack.state["components"])
    result = devstack("down", "--dir", str(stack.dir), timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    still = [p for p in pids if alive(p)]
    assert not still, f"still running after down: {still}\n{stack.logs()}"
    assert not Supervisor(stack.dir).alive()
    state = report(stack.dir)
    assert state["status"] == "stopped"
    assert not any(c["alive"] for c in state["components"])


def _index(stack: StackHandle, name: str) -> int:
    return next(i for i, c in enumerate(stack.state["components"]) if c["name"] == name)
