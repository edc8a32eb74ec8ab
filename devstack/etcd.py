"""etcd: the distributed configuration store Patroni's members elect their leader in.

One node on loopback is enough for the local stack (the store is not what is being made highly
available there: PostgreSQL is). Its data survives ``down``/``up``; the ports are kept with it.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from devstack.common import HOST
from devstack.components import Component

NAME = "etcd"


class Etcd:
    """A single-node etcd in ``base_dir`` (its data directory is ``base_dir/data``)."""

    def __init__(self, base_dir: Path, client_port: int, peer_port: int) -> None:
        self.base_dir = base_dir
        self.client_port = client_port
        self.peer_port = peer_port

    @property
    def client_url(self) -> str:
        """Where clients (Patroni, etcdctl) talk to it."""
        return f"http://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        """Where cluster peers would talk to it."""
        return f"http://{HOST}:{self.peer_port}"

    def command(self, binary: str) -> list[str]:
        """``etcd`` in the foreground with every listener on loopback."""
        return [binary, "--name", NAME, "--data-dir", str(self.base_dir / "data"),
                "--listen-client-urls", self.client_url,
                "--advertise-client-urls", self.client_url,
                "--listen-peer-urls", self.peer_url,
                "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", f"{NAME}={self.peer_url}",
                "--log-level", "warn"]

    def healthy(self) -> bool:
        """``GET /health`` reports ``"health": "true"``."""
        response = httpx.get(f"{self.client_url}/health", timeout=1.0)
        return response.status_code == 200 and json.loads(response.text).get("health") == "true"

    def component(self, binary: str, log: Path) -> Component:
        """etcd as a stack component, ready when healthy."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        return Component(NAME, self.command(binary), ready=self.healthy, log=log,
                         cwd=self.base_dir)
