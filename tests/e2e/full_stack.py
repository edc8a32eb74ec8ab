"""Driving ``python -m devstack`` from tests: the command, its ``status --json`` report, and a
handle on a running stack (components, gateway, TLS trust, logs).

The suite shares one full stack (the default topology of ``up``) between every module that asks
for the ``full_stack`` fixture (tests/e2e/conftest.py): starting it costs a minute, so a test that
breaks a component (kills the PostgreSQL leader, stops the brokers, the registry) brings it back
and waits until :meth:`StackHandle.wait_healthy` before it ends.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from devstack.supervisor import Supervisor
from tests.e2e.e2e_helpers import ROOT

UP_TIMEOUT = 300.0


def devstack(*args: str, timeout: float = UP_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``python -m devstack ARGS`` from the repository root."""
    env = {k: v for k, v in os.environ.items() if k != "CONFIG_PATH"}
    return subprocess.run([sys.executable, "-m", "devstack", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env, check=False)


def report(directory: Path) -> dict[str, Any]:
    """``status --json``: the plan with each component's supervisord state and pid."""
    result = devstack("status", "--dir", str(directory), "--json", timeout=60)
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


@dataclass
class StackHandle:
    """A running stack as its state file describes it."""

    dir: Path
    state: dict[str, Any]

    def refresh(self) -> StackHandle:
        """Read ``status --json`` again (pids change when components restart)."""
        self.state = report(self.dir)
        return self

    def component(self, name: str) -> dict[str, Any]:
        """One component's entry of the report."""
        return next(c for c in self.state["components"] if c["name"] == name)

    def names(self) -> list[str]:
        """Every component, in start order."""
        return [c["name"] for c in self.state["components"]]

    @property
    def gateway(self) -> str:
        return str(self.component("nginx")["urls"]["https"][0])

    @property
    def https_port(self) -> int:
        return int(self.component("nginx")["ports"]["https"][0])

    @property
    def ca(self) -> Path:
        return Path(self.component("nginx")["ca"])

    def tls(self) -> ssl.SSLContext:
        """Trusts the stack's throwaway CA only."""
        return ssl.create_default_context(cafile=str(self.ca))

    def client(self, timeout: float = 10.0) -> httpx.Client:
        """An HTTPS client of the gateway."""
        return httpx.Client(base_url=self.gateway, verify=self.tls(), timeout=timeout)

    def running(self, name: str) -> bool:
        """Whether supervisord reports the component running."""
        return bool(Supervisor(self.dir).all_info()[name]["statename"] == "RUNNING")

    def wait_healthy(self, timeout: float = 120.0) -> None:
        """Wait until every component runs and the gateway answers both health checks."""
        deadline = time.monotonic() + timeout
        problem = ""
        while time.monotonic() < deadline:
            info = Supervisor(self.dir).all_info()
            down = [n for n, i in info.items() if i["statename"] != "RUNNING"]
            if down:
                problem = f"not running: {down}"
            else:
                try:
                    with self.client(timeout=3.0) as http:
                        codes = [http.get(p).status_code
                                 for p in ("/auth/healthz", "/loyalty/healthz")]
                    if codes == [200, 200]:
                        self.refresh()
                        return
                    problem = f"gateway health {codes}"
                except httpx.HTTPError as exc:
                    problem = repr(exc)
            time.sleep(0.5)
        raise AssertionError(f"stack not healthy after {timeout} s: {problem}\n{self.logs()}")

    def logs(self, lines: int = 25) -> str:
        """The end of every component's log (for failure messages)."""
        parts = []
        for path in sorted((self.dir / "logs").glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)
