"""sso, loyalty and relay as separate processes on PostgreSQL and a real Kafka broker."""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
import yaml

from devstack.common import free_port, free_ports
from devstack.kafka import KafkaBroker, KafkaCluster
from devstack.postgres import PostgresCluster
from devstack.registry import Registry
from tests.e2e.e2e_helpers import AUTHLOYALTY, server_env


@dataclass
class Service:
    """One ``authloyalty <command> --config FILE`` process."""

    command: str
    config: Path
    health_url: str | None
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    # Settings of this process only (a second replica's port), as AUTHLOYALTY_* variables.
    env: dict[str, str] = field(default_factory=dict)
    name: str = ""
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.config.parent / f"{self.name or self.command}.log"

    def launch(self) -> None:
        """Start without waiting for it to answer."""
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [AUTHLOYALTY, self.command, "--config", str(self.config), *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, env=server_env(**self.env))

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait for its health check (or for its banner line)."""
        self.launch()
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"{self.command} exited early:\n{self.output()}")
            if self._ready():
                return
            time.sleep(0.1)
        self.kill()
        pytest.fail(f"{self.command} not ready in {timeout} s:\n{self.output()}")

    def _ready(self) -> bool:
        if self.health_url is None:
            return "relay running" in self.output()
        try:
            return httpx.get(self.health_url, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def output(self) -> str:
        """What the process wrote."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int:
        """SIGTERM and wait."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=20)
        self.process = None
        return code

    def kill(self) -> None:
        """SIGKILL: no chance to clean up."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@dataclass
class Stack:
    """Config and processes of one separate-process deployment."""

    root: Path
    pg: PostgresCluster
    broker: KafkaBroker | KafkaCluster
    database: str = field(default_factory=lambda: f"stack_{uuid4().hex[:10]}")
    # 0: chosen at construction, the three together (never the defaults 8000/8001/44044).
    sso_port: int = 0
    loyalty_port: int = 0
    grpc_port: int = 0
    services: dict[str, Service] = field(default_factory=dict)
    registry: Registry | None = None  # the run's (``schema_registry``) or a test's own

    def __post_init__(self) -> None:
        # Picked one at a time, two picks can return the same just-released port.
        picked = iter(free_ports(3, avoid=(self.sso_port, self.loyalty_port, self.grpc_port)))
        self.sso_port = self.sso_port or next(picked)
        self.loyalty_port = self.loyalty_port or next(picked)
        self.grpc_port = self.grpc_port or next(picked)

    @property
    def sso(self) -> str:
        return f"http://127.0.0.1:{self.sso_port}"

    @property
    def loyalty(self) -> str:
        return f"http://127.0.0.1:{self.loyalty_port}"

    def write_config(self, **kafka: Any) -> Path:
        """Production-mode config: own schema per service, Kafka bus with topics (and registry
        subjects) of this stack's own, a fresh signing key."""
        assert self.registry is not None, "a Stack needs a schema registry"
        self.root.mkdir(parents=True, exist_ok=True)
        url = self.pg.create_database(self.database)
        keys = self.root / "keys"
        subprocess.run([AUTHLOYALTY, "keys", "generate", "--dir", str(keys)], check=True,
                       capture_output=True)
        config = {
            "mode": "production",
            "log_format": "console",
            "sso": {"http_port": self.sso_port, "grpc_port": self.grpc_port,
                    "signing_keys_dir": str(keys),
                    "database": {"url": url, "schema": "sso"},
                    # Hashing cost is not what these tests measure.
                    "argon2": {"time_cost": 1, "memory_kib": 1024},
                    "login_throttle": {"max_failures_per_client": 100000}},
            "loyalty": {"http_port": self.loyalty_port,
                        "database": {"url": url, "schema": "loyalty"},
                        "jwks_url": f"{self.sso}/.well-known/jwks.json"},
            "events": {"backend": "kafka", "relay_poll_interval_seconds": 0.2,
                       "relay_max_backoff_seconds": 2.0,
                       "kafka": {"bootstrap_servers": self.broker.bootstrap_servers,
                                 "schema_registry_url": self.registry.ccompat_url,
                                 "registration_topic": f"registration-{self.database}",
                                 "sessions_topic": f"sessions-{self.database}",
                                 "accounts_topic": f"accounts-{self.database}",
                                 "delivery_timeout_seconds": 3.0, **kafka}},
        }
        path = self.root / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        subprocess.run([AUTHLOYALTY, "migrate", "--config", str(path)], check=True,
                       capture_output=True, env=server_env())
        return path

    def start(self, name: str, *extra: str) -> Service:
        """Start ``sso``, ``loyalty`` or ``relay``."""
        health = {"sso": f"{self.sso}/auth/healthz", "loyalty": f"{self.loyalty}/loyalty/healthz",
                  "relay": None}[name]
        service = self.services.get(name) or Service(name, self.root / "config.yaml", health,
                                                      list(extra))
        self.services[name] = service
        service.start()
        return service

    def start_loyalty_replica(self, replica: int) -> tuple[Service, str]:
        """Start loyalty replica number ``replica`` (2, 3, …) on a port of its own; the service
        and its base URL."""
        name = f"loyalty-{replica}"
        service = self.services.get(name)
        if service is None:
            port = free_port()
            service = Service("loyalty", self.root / "config.yaml",
                              f"http://127.0.0.1:{port}/loyalty/healthz",
                              env={"AUTHLOYALTY_LOYALTY__HTTP_PORT": str(port)}, name=name)
            self.services[name] = service
        service.start()
        assert service.health_url is not None
        return service, service.health_url.removesuffix("/loyalty/healthz")

    def stop_all(self) -> None:
        """Stop every process still running."""
        for service in self.services.values():
            if service.process is not None:
                try:
                    service.stop()
                except subprocess.TimeoutExpired:
                    service.kill()

    def sql(self, query: str) -> str:
        """Run SQL on the stack's database."""
        return self.pg.psql(query, self.database).strip()

    def bonus_counts(self) -> dict[str, int]:
        """Welcome bonuses per account, read straight from loyalty's tables."""
        out = self.sql("SELECT account_id, count(*) FROM loyalty.ledger_entries "
                       "WHERE comment = 'registration' GROUP BY account_id")
        return {line.split("|")[0]: int(line.split("|")[1]) for line in out.splitlines() if line}


def register_many(sso: str, count: int, prefix: str, workers: int = 4) -> list[str]:
    """Register ``count`` users in parallel; every answer must be 201."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> str:
        with httpx.Client(timeout=30) as client:
            r = client.post(f"{sso}/auth/registration",
                            json={"email": f"{prefix}-{i}@example.com",
                                  "password": "long enough"})
        assert r.status_code == 201, r.text
        user_id: str = r.json()["user_id"]
        return user_id

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, range(count)))


def wait_for(predicate: Any, timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate`` until true or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
