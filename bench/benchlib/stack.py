"""The benchmarked deployment: PostgreSQL, Kafka, signing keys, and sso + loyalty processes.

Everything is provisioned under one scratch directory (``/tmp/authloyalty-bench-*``) and torn
down afterwards. The services run exactly as in production: ``authloyalty sso --config FILE``
and ``authloyalty loyalty --config FILE``, ``mode: production``, a PostgreSQL database per
service, ``events.backend: kafka``; nothing in the config is tuned for the benchmark except the
listening ports.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchlib.seed import ACCESS_TTL_SECONDS
from devstack.common import clean_env, free_port
from devstack.kafka import KafkaBroker, KafkaCluster
from devstack.postgres import PostgresCluster, scratch_dir

ROOT = Path(__file__).resolve().parents[2]

# PostgreSQL settings for a 2-core machine whose memory is shared with the services, Kafka and
# the load generator. Durable: fsync, synchronous_commit and full_page_writes stay on (the
# devstack defaults when durable=True); only sizes and the planner's cost model are adjusted.
PG_SETTINGS: dict[str, str] = {
    "shared_buffers": "512MB",
    "effective_cache_size": "4GB",
    "work_mem": "8MB",
    "maintenance_work_mem": "256MB",
    "wal_buffers": "16MB",
    # No checkpoint in the middle of a scenario: the runner issues CHECKPOINT between them.
    "max_wal_size": "8GB",
    "min_wal_size": "1GB",
    "checkpoint_timeout": "30min",
    "checkpoint_completion_target": "0.9",
    "random_page_cost": "1.1",
    "effective_io_concurrency": "200",
    # OLTP on 2 cores: parallel query only steals the other core.
    "max_parallel_workers_per_gather": "0",
    "jit": "off",
    "synchronous_commit": "on",
    "fsync": "on",
    "full_page_writes": "on",
}

PASSWORD = "bench password 123"  # every seeded user's password (Argon2id hashes of it)


def authloyalty_bin() -> str:
    """The ``authloyalty`` console script of this virtualenv."""
    for candidate in (Path(sys.executable).parent / "authloyalty",
                      ROOT / ".venv" / "bin" / "authloyalty"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("authloyalty")
    if not found:
        raise RuntimeError("the authloyalty command is not installed (make venv)")
    return found



def stop_on_sigterm() -> None:
    """SIGTERM ends the run like Ctrl+C, so its ``finally`` stops what it started."""
    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)

def log(message: str) -> None:
    """Progress on stderr, timestamped."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Service:
    """One ``authloyalty <command> --config FILE`` process."""

    command: str
    config: Path
    health_url: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, timeout: float = 60.0) -> None:
        # A session of its own, as a service unit or a container would have: with the kernel's
        # autogroup scheduling (on by default) every process of one session shares a single
        # scheduling entity, and PostgreSQL's backends (each in a session of its own) waited
        # up to 231 ms for a core while the services, the brokers and wrk shared the bench's
        # (docs/performance.md, "The scheduler's groups").
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [authloyalty_bin(), self.command, "--config", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, env={**clean_env(), **self.env},
                cwd=ROOT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command} exited early:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.health_url, timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.command} not healthy in {timeout} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@dataclass
class Stack:
    """The whole deployment under ``root``."""

    root: Path
    pg: PostgresCluster | None = None
    kafka: KafkaBroker | KafkaCluster | None = None
    # Kafka brokers: 1, or a KRaft cluster whose topics are replicated min(3, N) times (the
    # sessions topic one time less; deploy/README.md, "Logout under failures").
    brokers: int = 1
    sso_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    loyalty_port: int = field(default_factory=free_port)
    services: dict[str, Service] = field(default_factory=dict)
    sso_ports: list[int] = field(default_factory=list)
    loyalty_ports: list[int] = field(default_factory=list)
    # AUTHLOYALTY_* overrides given to every service process (experiments; recorded in results)
    service_env: dict[str, str] = field(default_factory=dict)
    sso_db_url: str = ""
    loyalty_db_url: str = ""

    @classmethod
    def create(cls) -> Stack:
        return cls(scratch_dir("authloyalty-bench-"))

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def sso(self) -> str:
        return f"http://127.0.0.1:{self.sso_port}"

    @property
    def loyalty(self) -> str:
        return f"http://127.0.0.1:{self.loyalty_port}"

    @property
    def loyalty_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.loyalty_ports or [self.loyalty_port]]

    @property
    def sso_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.sso_ports or [self.sso_port]]

    # -- provisioning ------------------------------------------------------------------------

    def provision(self) -> None:
        """PostgreSQL and Kafka (in parallel), keys, config, migrations."""
        kafka_error: list[BaseException] = []

        def start_kafka() -> None:
            try:
                if self.brokers > 1:
                    self.kafka = KafkaCluster(self.root / "kafka", self.brokers)
                else:
                    self.kafka = KafkaBroker(self.root / "kafka", heap="512m")
                self.kafka.start(timeout=180)
            except BaseException as exc:  # reported by the main thread
                kafka_error.append(exc)

        thread = threading.Thread(target=start_kafka, name="kafka-start")
        thread.start()
        try:
            self._start_postgres()
        finally:
            thread.join()
        if kafka_error:
            raise RuntimeError(f"Kafka did not start: {kafka_error[0]}") from kafka_error[0]
        assert self.kafka is not None
        log(f"kafka on {self.kafka.bootstrap_servers}")
        subprocess.run([authloyalty_bin(), "keys", "generate", "--dir", str(self.keys_dir)],
                       check=True, capture_output=True, env=clean_env())
        self._write_config()
        subprocess.run([authloyalty_bin(), "migrate", "--config", str(self.config_path)],
                       check=True, capture_output=True, env=clean_env(), cwd=ROOT)
        log("migrations applied")

    def _start_postgres(self) -> None:
        pg = PostgresCluster(self.root / "pg", durable=True)
        pg.start()
        self.pg = pg
        # devstack has no knob for these: ALTER SYSTEM (postgresql.auto.conf wins over the
        # included devstack.conf), then restart for shared_buffers.
        pg.psql("".join(f"ALTER SYSTEM SET {k} = '{v}';\n" for k, v in PG_SETTINGS.items()))
        pg.stop()
        pg.start()
        self.sso_db_url = pg.create_database("sso")
        self.loyalty_db_url = pg.create_database("loyalty")
        log(f"postgres {self.pg_version()} on port {pg.port} (durable)")

    def pg_version(self) -> str:
        assert self.pg is not None
        return self.pg.psql("SHOW server_version;").strip()

    def _write_config(self) -> None:
        assert self.kafka is not None
        config: dict[str, Any] = {
            "mode": "production",
            "sso": {
                # The seeded tokens are minted offline to outlive a full run; since tokens
                # living longer than the configured TTL are refused, the TTL is theirs.
                "access_token_ttl_seconds": ACCESS_TTL_SECONDS,
                "http_port": self.sso_port,
                "grpc_port": self.grpc_port,
                "signing_keys_dir": str(self.keys_dir),
                "database": {"url": self.sso_db_url},
            },
            "loyalty": {
                "http_port": self.loyalty_port,
                "database": {"url": self.loyalty_db_url},
                "jwks_url": f"{self.sso}/.well-known/jwks.json",
            },
            "events": {
                "backend": "kafka",
                "kafka": {"bootstrap_servers": self.kafka.bootstrap_servers,
                          "replication_factor": min(3, self.brokers)},
            },
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def config(self) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load(self.config_path.read_text())
        return loaded

    # -- services ----------------------------------------------------------------------------

    def start_services(self, sso_processes: int = 1, loyalty_processes: int = 1) -> None:
        """``authloyalty sso`` and ``authloyalty loyalty`` processes, all on the one config file.

        The first process of each service listens on the ports in the file; further ones get
        their own ports through the documented environment overrides
        (``AUTHLOYALTY_SSO__HTTP_PORT`` ...). Every sso runs the outbox relay (the outbox is
        claimed with FOR UPDATE SKIP LOCKED); every loyalty is its own Kafka instance (own
        revocation consumer group, shared registration group).
        """
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        self.sso_ports = [self.sso_port] + [free_port() for _ in range(sso_processes - 1)]
        self.loyalty_ports = [self.loyalty_port] + [free_port()
                                                    for _ in range(loyalty_processes - 1)]
        # Password hashes at once per sso process: the cores shared out between the processes,
        # as docs/operations.md advises for several sso processes on one host.
        hashing = {"AUTHLOYALTY_SSO__ARGON2__THREADS":
                   str(max(1, (os.cpu_count() or 1) // max(1, sso_processes)))}
        for i, port in enumerate(self.sso_ports):
            env = {**hashing, **self.service_env}
            if i > 0:
                env.update({"AUTHLOYALTY_SSO__HTTP_PORT": str(port),
                            "AUTHLOYALTY_SSO__GRPC_PORT": str(free_port())})
            name = "sso" if i == 0 else f"sso-{i + 1}"
            self.services[name] = Service(
                "sso", self.config_path, f"http://127.0.0.1:{port}/auth/healthz",
                logs / f"{name}.log", env)
        for i, port in enumerate(self.loyalty_ports):
            env = dict(self.service_env)
            if i > 0:
                env["AUTHLOYALTY_LOYALTY__HTTP_PORT"] = str(port)
            name = "loyalty" if i == 0 else f"loyalty-{i + 1}"
            self.services[name] = Service(
                "loyalty", self.config_path, f"http://127.0.0.1:{port}/loyalty/healthz",
                logs / f"{name}.log", env)
        for service in self.services.values():
            service.start()
        log(f"sso on ports {self.sso_ports} (pids {self.pids('sso')}), loyalty on ports "
            f"{self.loyalty_ports} (pids {self.pids('loyalty')})")

    def kafka_pids(self) -> list[int | None]:
        """The broker processes' pids (None for a node that is down)."""
        if self.kafka is None:
            return []
        nodes = self.kafka.nodes if isinstance(self.kafka, KafkaCluster) else [self.kafka]
        return [node.pid for node in nodes]

    def pids(self, command: str) -> list[int]:
        """PIDs of every process running ``authloyalty <command>``."""
        return [s.pid for s in self.services.values()
                if s.command == command and s.pid is not None]

    def pid(self, name: str) -> int | None:
        service = self.services.get(name)
        return service.pid if service else None

    def postmaster_pid(self) -> int | None:
        if self.pg is None:
            return None
        try:
            return int((self.pg.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def check_services(self) -> None:
        """Raise if a service died."""
        for service in self.services.values():
            if service.process is not None and service.process.poll() is not None:
                raise RuntimeError(f"{service.command} died:\n{service.tail()}")

    # -- SQL ---------------------------------------------------------------------------------

    def sql(self, database: str, query: str) -> str:
        assert self.pg is not None
        return self.pg.psql(query, database).strip()

    def checkpoint(self) -> None:
        """Flush dirty pages now, so no checkpoint lands inside the next measurement."""
        self.sql("postgres", "CHECKPOINT;")

    # -- teardown ----------------------------------------------------------------------------

    def stop(self, keep: bool = False) -> None:
        for service in reversed(list(self.services.values())):
            with contextlib.suppress(Exception):
                service.stop()
        if self.kafka is not None:
            with contextlib.suppress(Exception):
                self.kafka.stop()
        if self.pg is not None:
            with contextlib.suppress(Exception):
                self.pg.stop()
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)
