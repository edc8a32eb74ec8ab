"""The production topology on one machine, without containers.

``up`` starts, from Debian packages and the other devinfra modules, everything the compose file in
``deploy/`` runs as containers, on 127.0.0.1:

- PostgreSQL: a primary with one database per service (``sso``, ``loyalty``) and a streaming
  replica made with ``pg_basebackup -R``; loyalty reads balances and history from the replica;
- Kafka: one KRaft broker, or a cluster with ``--brokers 3`` (events use confluent-kafka's
  ``mock://`` Schema Registry; consumers need no registry);
- signing keys (``authloyalty keys generate``), ``authloyalty migrate``;
- N ``authloyalty sso`` replicas (each with its own HTTP and gRPC port; every one runs the outbox
  relay, which uses SKIP LOCKED) and M ``authloyalty loyalty`` replicas (each its own Kafka
  ``instance_id``);
- nginx: TLS gateway (certificate from a throwaway CA made with openssl at start), HTTP and gRPC
  round robin over the sso replicas, loyalty behind the same port, plus a plaintext HTTP/2 port
  for gRPC from services;
- Prometheus scraping every sso and loyalty ``/metrics``.

Everything lives in ``--dir``: generated configs (``config/``), logs (``logs/``), data, and
``stack.json``, the state file listing every process (pid and its start time, so a reused pid is
never mistaken for ours). ``status`` reads it; ``down`` stops exactly those processes, in reverse
order, by pid (never by name). ``up`` on a directory whose stack was stopped starts it again on
the same data.

CLI (also ``main(argv)`` for ``authloyalty stack``)::

    python -m authloyalty.devinfra.stack up [--dir DIR] [--sso-replicas 2] [--loyalty-replicas 1]
        [--brokers 1] [--https-port 8443] [--http2-grpc-port 44044] [--prometheus-port 9090]
        [--no-prometheus] [--no-install] [--fresh]
    python -m authloyalty.devinfra.stack status [--dir DIR] [--json]
    python -m authloyalty.devinfra.stack down [--dir DIR]

Needs root or the packages already installed: nginx, openssl, prometheus (installed with apt-get
when missing), PostgreSQL (see :mod:`~authloyalty.devinfra.postgres`), Java and Maven (see
:mod:`~authloyalty.devinfra.kafka`).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import yaml

from authloyalty.devinfra import nginx as gateway
from authloyalty.devinfra import prometheus as prom
from authloyalty.devinfra.common import (
    HOST,
    clean_env,
    free_ports,
    port_open,
    tail,
    write_json,
)
from authloyalty.devinfra.kafka import KafkaBroker, KafkaCluster
from authloyalty.devinfra.postgres import PostgresCluster

__all__ = ["DEFAULT_DIR", "STATE_FILE", "StackError", "load_state", "main", "process_alive"]

DEFAULT_DIR = Path("var/stack")
STATE_FILE = "stack.json"
DEFAULT_HTTPS_PORT = 8443
DEFAULT_GRPC_GATEWAY_PORT = 44044
DEFAULT_PROMETHEUS_PORT = 9090
DATABASES = ("sso", "loyalty")
# The consumer's lag reporter asks the broker for watermarks on the consuming connection; each
# query waits behind the fetch long-poll (librdkafka default 500 ms), so with three partitions
# a revocation could reach loyalty 1.5 s late. Shorter long-polls keep that under the 1 s
# logout guarantee.
LOYALTY_KAFKA_CLIENT = {"fetch.wait.max.ms": "100"}
_LOCK_FILE = ".stack.lock"
_SERVICE_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 20.0
# Subdirectories `up --fresh` may delete (never the directory itself, which the user named).
_OWNED = ("pg", "kafka", "keys", "tls", "config", "nginx", "prometheus", "logs")


class StackError(RuntimeError):
    """The stack cannot be started, inspected or stopped; the message says why."""


# -- processes ----------------------------------------------------------------------------------


def _proc_stat(pid: int) -> list[str] | None:
    # Fields after the command name, which may itself contain spaces and parentheses.
    return _proc_stat_path(Path(f"/proc/{pid}/stat"))


def _start_time(pid: int) -> int | None:
    """Clock ticks after boot at which ``pid`` started (tells a reused pid apart)."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields is not None and len(fields) > 19 else None


def _reap(pid: int) -> None:
    # Our own exited child stays a zombie until waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _threads_left(pid: int) -> bool:
    """Whether any thread of ``pid`` has not exited yet."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tasks:
        fields = _proc_stat_path(Path(f"/proc/{pid}/task/{tid}/stat"))
        if fields is not None and fields[0] not in ("Z", "X"):
            return True
    return False


def _proc_stat_path(path: Path) -> list[str] | None:
    try:
        return path.read_text().rpartition(")")[2].split()
    except OSError:
        return None


def process_alive(record: dict[str, Any]) -> bool:
    """Whether the process of a state record (``pid``, ``start_time``) still runs.

    A zombie counts as gone, but only once every thread has exited: the main thread of a
    SIGKILLed multi-threaded process turns zombie first, while the other threads, and with them
    its open sockets, live on for a moment.
    """
    pid = int(record["pid"])
    _reap(pid)
    fields = _proc_stat(pid)
    if fields is None:
        return False
    expected = record.get("start_time")
    if expected is not None and _start_time(pid) != int(expected):
        return False  # the pid now belongs to another process
    if fields[0] in ("Z", "X"):
        return _threads_left(pid)
    return True


def _record(pid: int) -> dict[str, Any]:
    return {"pid": pid, "start_time": _start_time(pid)}


def _signal(record: dict[str, Any], sig: signal.Signals, *, group: bool = True) -> None:
    """Signal a process we started (and its process group: each leads its own session)."""
    if not process_alive(record):
        return
    pid = int(record["pid"])
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group and os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _wait_gone(records: Sequence[dict[str, Any]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(process_alive(r) for r in records):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _terminate(records: Sequence[dict[str, Any]], first: signal.Signals = signal.SIGTERM,
               timeout: float = _STOP_TIMEOUT) -> None:
    """``first`` to every process at once, then SIGKILL whatever is left after ``timeout``."""
    for record in records:
        _signal(record, first)
    if not _wait_gone(records, timeout):
        for record in records:
            _signal(record, signal.SIGKILL)
        _wait_gone(records, 10)


# -- small helpers ------------------------------------------------------------------------------


def _tail(path: Path | None, lines: int = 25) -> str:
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return tail(text, lines)


def load_state(directory: Path) -> dict[str, Any] | None:
    """The state file of the stack in ``directory`` (None if there is none)."""
    try:
        data: dict[str, Any] = json.loads((directory / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise StackError(f"{directory / STATE_FILE} is not valid JSON: {exc}") from exc
    return data


def _bindable(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _authloyalty() -> list[str]:
    """How to run the ``authloyalty`` command of this installation."""
    beside = Path(sys.executable).parent / "authloyalty"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("authloyalty")
    return [found] if found else [sys.executable, "-m", "authloyalty.cli"]


def _service_env(**extra: str) -> dict[str, str]:
    # The generated config is the whole truth: settings from our own environment
    # (AUTHLOYALTY_*, CONFIG_PATH) would override it in every process alike.
    return clean_env(**{"PYTHONUNBUFFERED": "1", **extra})


def _run(argv: Sequence[str], what: str, *, env: dict[str, str] | None = None,
         timeout: float = 120.0) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        output = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise StackError(f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n{output}")
    return proc.stdout


@contextlib.contextmanager
def _locked(directory: Path, timeout: float = 0.0) -> Iterator[None]:
    """Serialise ``up`` and ``down`` on one directory."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / _LOCK_FILE).open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StackError(
                        f"another `stack up` or `down` is working on {directory}") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- the plan -----------------------------------------------------------------------------------


@dataclass
class Options:
    """What ``up`` was asked for."""

    directory: Path
    sso_replicas: int = 2
    loyalty_replicas: int = 1
    brokers: int = 1
    https_port: int | None = None
    grpc_gateway_port: int | None = None
    prometheus: bool = True
    prometheus_port: int | None = None
    also_443: bool = True
    install: bool = True
    fresh: bool = False


@dataclass
class Ports:
    """Every port the stack listens on."""

    https: list[int]
    grpc_gateway: int
    prometheus: int | None
    sso: list[tuple[int, int]]  # (http, grpc) per replica
    loyalty: list[int]


def _choose_ports(opts: Options, taken: set[int]) -> Ports:
    def fixed(port: int | None, default: int, flag: str) -> int:
        if port is not None:
            if port in taken or not _bindable(port):
                raise StackError(f"{flag} {port} is in use (or not permitted); choose another")
            taken.add(port)
            return port
        if default not in taken and _bindable(default):
            taken.add(default)
            return default
        chosen = free_ports(1, taken)[0]
        print(f"port {default} is busy; using {chosen} instead ({flag} chooses)", flush=True)
        taken.add(chosen)
        return chosen

    https = [fixed(opts.https_port, DEFAULT_HTTPS_PORT, "--https-port")]
    # 443 as well, when nobody asked for a particular port and we may bind it (root, free).
    if opts.also_443 and opts.https_port is None and 443 not in taken and _bindable(443):
        https.append(443)
        taken.add(443)
    grpc_gateway = fixed(opts.grpc_gateway_port, DEFAULT_GRPC_GATEWAY_PORT, "--http2-grpc-port")
    prometheus = (fixed(opts.prometheus_port, DEFAULT_PROMETHEUS_PORT, "--prometheus-port")
                  if opts.prometheus else None)
    free = free_ports(2 * opts.sso_replicas + opts.loyalty_replicas, taken)
    sso = [(free[2 * i], free[2 * i + 1]) for i in range(opts.sso_replicas)]
    loyalty = free[2 * opts.sso_replicas:]
    return Ports(https, grpc_gateway, prometheus, sso, loyalty)


# -- up -----------------------------------------------------------------------------------------


@dataclass
class _Up:
    opts: Options
    state: dict[str, Any] = field(default_factory=dict)
    kafka: KafkaBroker | KafkaCluster | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def dir(self) -> Path:
        return self.opts.directory

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    # -- state --------------------------------------------------------------------------------

    def save(self) -> None:
        write_json(self.dir / STATE_FILE, self.state)

    def add(self, name: str, kind: str, pids: Sequence[int], **info: Any) -> dict[str, Any]:
        component = {"name": name, "kind": kind, "processes": [_record(p) for p in pids], **info}
        self.state["components"].append(component)
        self.save()
        return component

    def step(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f}s] {text}", flush=True)

    # -- the whole thing ----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        opts = self.opts
        self.check_previous()
        tools = self.ensure_tools()
        self.dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # The postgres OS user (and nginx's workers) must reach their files inside it.
            self.dir.chmod(0o755)
        self.logs.mkdir(exist_ok=True)
        self.state = {
            "version": 1,
            "status": "starting",
            "dir": str(self.dir),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "up_pid": os.getpid(),
            "up_start_time": _start_time(os.getpid()),
            "options": {"sso_replicas": opts.sso_replicas,
                        "loyalty_replicas": opts.loyalty_replicas, "brokers": opts.brokers},
            "components": [],
        }
        self.save()

        self.kafka = self.make_kafka()
        kafka_ports = {n.port for n in self.kafka_nodes()} | {
            n.controller_port for n in self.kafka_nodes()}
        ports = _choose_ports(opts, kafka_ports)
        self.state["ports"] = {"https": ports.https, "grpc_gateway": ports.grpc_gateway,
                               "prometheus": ports.prometheus}
        kafka_error: list[BaseException] = []  # from the Kafka and keys threads
        kafka_thread = threading.Thread(target=self.start_kafka, args=(kafka_error,),
                                        name="kafka-start", daemon=True)
        self.step(f"starting Kafka ({opts.brokers} broker(s)) in the background")
        kafka_thread.start()
        keys_thread = threading.Thread(target=self.make_keys, args=(kafka_error,),
                                       name="keys", daemon=True)
        keys_thread.start()
        try:
            tls = self.make_tls(tools["openssl"])
            primary, replica = self.start_postgres()
            keys_thread.join()
            if kafka_error and not kafka_thread.is_alive():
                raise kafka_error[0]
            # Migrations need only PostgreSQL: they run while Kafka may still be starting.
            configs = self.write_configs(ports, primary, replica, self.dir / "keys", tls)
            self.step("applying migrations (authloyalty migrate)")
            _run([*_authloyalty(), "migrate", "--config", str(configs["sso"][0])], "migrate",
                 env=_service_env())
            self.step("migrations applied")
        finally:
            keys_thread.join()
            kafka_thread.join()
        self.record_kafka()
        if kafka_error:
            raise kafka_error[0]

        self.start_services("sso", configs["sso"],
                            [f"http://{HOST}:{h}/auth/healthz" for h, _ in ports.sso],
                            [{"http": h, "grpc": g} for h, g in ports.sso])
        self.start_nginx(tools["nginx"], ports, tls)
        self.start_services("loyalty", configs["loyalty"],
                            [f"http://{HOST}:{p}/loyalty/healthz" for p in ports.loyalty],
                            [{"http": p} for p in ports.loyalty],
                            env={"SSL_CERT_FILE": str(tls.ca)})
        if ports.prometheus is not None:
            self.start_prometheus(tools["prometheus"], ports)
        self.check_gateway(ports, tls)

        elapsed = round(time.monotonic() - self.started, 1)
        self.state.update(status="running", started_in_s=elapsed)
        self.state.pop("up_pid", None)
        self.state.pop("up_start_time", None)
        self.save()
        self.step(f"stack is up in {elapsed} s")
        return self.state

    # -- steps --------------------------------------------------------------------------------

    def check_previous(self) -> None:
        previous = load_state(self.dir)
        if previous is not None and any(
                process_alive(p) for c in previous.get("components", [])
                for p in c.get("processes", [])):
            raise StackError(f"a stack is already running in {self.dir}; "
                             f"see `status --dir {self.dir}` or stop it with `down`")
        if self.opts.fresh:
            for name in _OWNED:
                shutil.rmtree(self.dir / name, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                (self.dir / STATE_FILE).unlink()

    def ensure_tools(self) -> dict[str, str]:
        wanted = {"nginx": "nginx", "openssl": "openssl"}
        if self.opts.prometheus:
            wanted |= {"prometheus": prom.DEBIAN_PACKAGE, "promtool": prom.DEBIAN_PACKAGE}
        missing = [c for c in wanted if gateway.find_command(c) is None]
        if missing:
            self.step(f"installing Debian packages for {', '.join(missing)}")
        return gateway.ensure_commands(wanted, install=self.opts.install)

    def make_kafka(self) -> KafkaBroker | KafkaCluster:
        base = self.dir / "kafka"
        single_saved = (base / "kafka-node.json").is_file()
        cluster_saved = base / "kafka-cluster.json"
        if cluster_saved.is_file():
            saved = int(json.loads(cluster_saved.read_text())["brokers"])
            if saved != self.opts.brokers:
                raise StackError(f"{base} holds a {saved}-broker cluster; use --brokers {saved} "
                                 "or --fresh")
            return KafkaCluster(base, saved)
        if single_saved and self.opts.brokers != 1:
            raise StackError(f"{base} holds a single broker; use --brokers 1 or --fresh")
        if self.opts.brokers == 1:
            return KafkaBroker(base)
        return KafkaCluster(base, self.opts.brokers)

    def kafka_nodes(self) -> list[KafkaBroker]:
        if isinstance(self.kafka, KafkaCluster):
            return self.kafka.nodes
        return [self.kafka] if self.kafka is not None else []

    def start_kafka(self, errors: list[BaseException]) -> None:
        assert self.kafka is not None
        try:
            self.kafka.start(120)
            self.step("Kafka broker(s) answer; warming up producer ids and consumer groups")
            warm_up_kafka(self.kafka.bootstrap_servers)
        except BaseException as exc:
            errors.append(StackError(f"Kafka did not start: {exc}"))
            with contextlib.suppress(Exception):
                self.kafka.kill()

    def record_kafka(self) -> None:
        nodes = [n for n in self.kafka_nodes() if n.pid is not None]
        if not nodes or self.kafka is None:
            return
        base = self.dir / "kafka"
        for node in nodes:
            self.link_log(f"kafka-{node.node_id}.log", node.log_file)
        self.add("kafka", "kafka", [n.pid for n in nodes if n.pid is not None],
                 dir=str(base), bootstrap_servers=self.kafka.bootstrap_servers,
                 ports={f"broker-{n.node_id}": n.port for n in nodes})
        self.step(f"Kafka ready on {self.kafka.bootstrap_servers}")

    def link_log(self, name: str, target: Path) -> None:
        link = self.logs / name
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(os.path.relpath(target, self.logs))

    def make_tls(self, openssl: str) -> gateway.TlsFiles:
        tls_dir = self.dir / "tls"
        files = gateway.TlsFiles(tls_dir / "ca.pem", tls_dir / "tls.crt", tls_dir / "tls.key")
        fresh_enough = files.cert.is_file() and files.key.is_file() and subprocess.run(
            [openssl, "x509", "-checkend", str(24 * 3600), "-noout", "-in", str(files.cert)],
            capture_output=True, check=False).returncode == 0
        if not fresh_enough:
            files = gateway.make_tls(tls_dir, openssl=openssl)
            self.step(f"TLS certificate for localhost/127.0.0.1 signed by {files.ca}")
        return files

    def make_keys(self, errors: list[BaseException]) -> None:
        keys = self.dir / "keys"
        try:
            if not any(keys.glob("*.pem")):
                _run([*_authloyalty(), "keys", "generate", "--dir", str(keys)], "keys generate")
                self.step(f"signing key generated in {keys}")
            keys.chmod(0o700)
        except BaseException as exc:
            errors.append(exc)

    def start_postgres(self) -> tuple[PostgresCluster, PostgresCluster]:
        pg = self.dir / "pg"
        pg.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            pg.chmod(0o755)
        primary_dir, replica_dir = pg / "primary", pg / "replica"
        if (primary_dir / "devinfra-postgres.json").is_file():
            primary = PostgresCluster.existing(primary_dir)
        else:
            primary = PostgresCluster(primary_dir)
        primary.start()
        self.add_postgres("postgres-primary", primary, role="primary")
        for name in DATABASES:
            exists = primary.psql("SELECT 1 FROM pg_database WHERE datname = :'name';",
                                  variables={"name": name}).strip()
            if not exists:
                primary.create_database(name)
        self.step(f"PostgreSQL primary on port {primary.port} (databases {', '.join(DATABASES)})")
        if (replica_dir / "devinfra-postgres.json").is_file():
            replica = PostgresCluster.existing(replica_dir).start()
        else:
            replica = primary.start_replica(replica_dir)
        self.add_postgres("postgres-replica", replica, role="replica")
        self.step(f"PostgreSQL streaming replica on port {replica.port}")
        return primary, replica

    def add_postgres(self, name: str, cluster: PostgresCluster, role: str) -> None:
        pid = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
        self.link_log(f"{name}.log", cluster.log_file)
        self.add(name, "postgres", [pid], role=role, dir=str(cluster.base_dir),
                 ports={"postgres": cluster.port},
                 urls={db: cluster.url(db, driver=None) for db in DATABASES})

    def write_configs(self, ports: Ports, primary: PostgresCluster, replica: PostgresCluster,
                      keys: Path, tls: gateway.TlsFiles) -> dict[str, list[Path]]:
        assert self.kafka is not None
        config_dir = self.dir / "config"
        config_dir.mkdir(exist_ok=True)
        gateway_url = f"https://localhost:{ports.https[0]}"
        base: dict[str, Any] = {
            "mode": "production",
            "log_level": "INFO",
            "log_format": "json",
            "sso": {
                "http_host": HOST,
                "signing_keys_dir": str(keys),
                "database": {"url": primary.url("sso", driver=None)},
                # X-Forwarded-For is believed only from the gateway.
                "trusted_proxies": [f"{HOST}/32"],
            },
            "loyalty": {
                "http_host": HOST,
                "database": {"url": primary.url("loyalty", driver=None),
                             "read_url": replica.url("loyalty", driver=None)},
                "jwks_url": f"{gateway_url}/.well-known/jwks.json",
                "sso_grpc_target": f"{HOST}:{ports.grpc_gateway}",
            },
            "events": {
                "backend": "kafka",
                "kafka": {
                    "bootstrap_servers": self.kafka.bootstrap_servers,
                    "replication_factor": min(3, self.opts.brokers),
                },
            },
        }
        written: dict[str, list[Path]] = {"sso": [], "loyalty": []}
        for i, (http, grpc) in enumerate(ports.sso, start=1):
            cfg = _merge(base, {"sso": {"http_port": http, "grpc_port": grpc},
                                "loyalty": {"http_port": ports.loyalty[0]}})
            written["sso"].append(self.write_config(config_dir / f"sso-{i}.yaml", cfg))
        for i, http in enumerate(ports.loyalty, start=1):
            cfg = _merge(base, {"sso": {"http_port": ports.sso[0][0],
                                        "grpc_port": ports.sso[0][1]},
                                "loyalty": {"http_port": http},
                                "events": {"kafka": {"instance_id": f"loyalty-{i}",
                                                     "client": LOYALTY_KAFKA_CLIENT}}})
            written["loyalty"].append(self.write_config(config_dir / f"loyalty-{i}.yaml", cfg))
        self.step(f"configs written to {config_dir}")
        return written

    @staticmethod
    def write_config(path: Path, cfg: dict[str, Any]) -> Path:
        path.write_text("# Generated by authloyalty.devinfra.stack; rewritten on every `up`.\n"
                        + yaml.safe_dump(cfg, sort_keys=False))
        return path

    def start_services(self, kind: str, configs: Sequence[Path], health: Sequence[str],
                       ports: Sequence[dict[str, int]], env: dict[str, str] | None = None) -> None:
        launched: list[tuple[str, subprocess.Popen[bytes], str, Path]] = []
        for i, (config, url, port_map) in enumerate(zip(configs, health, ports, strict=True),
                                                      start=1):
            name = f"{kind}-{i}"
            log = self.logs / f"{name}.log"
            with log.open("ab") as out:
                out.write(f"=== stack: starting {name} at {time.ctime()} ===\n".encode())
                out.flush()
                proc = subprocess.Popen(
                    [*_authloyalty(), kind, "--config", str(config)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    env=_service_env(**(env or {})), cwd=self.dir, start_new_session=True)
            urls = {"http": f"http://{HOST}:{port_map['http']}"}
            if "grpc" in port_map:
                urls["grpc"] = f"{HOST}:{port_map['grpc']}"
            self.add(name, kind, [proc.pid], ports=port_map, urls=urls, config=str(config),
                     log=str(log))
            launched.append((name, proc, url, log))
        deadline = time.monotonic() + _SERVICE_START_TIMEOUT
        for name, proc, url, log in launched:
            _wait_http(url, proc, name, log, deadline)
        self.step(f"{len(launched)} {kind} process(es) ready: "
                  + ", ".join(f"{n} pid {p.pid}" for n, p, _, _ in launched))

    def start_nginx(self, binary: str, ports: Ports, tls: gateway.TlsFiles) -> None:
        prefix = self.dir / "nginx"
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        values = gateway.GatewayValues(
            sso_http=[f"{HOST}:{h}" for h, _ in ports.sso],
            sso_grpc=[f"{HOST}:{g}" for _, g in ports.sso],
            loyalty_http=[f"{HOST}:{p}" for p in ports.loyalty],
            https_listen=[f"{HOST}:{p}" for p in ports.https],
            grpc_listen=[f"{HOST}:{ports.grpc_gateway}"],
            tls_cert=str(tls.cert), tls_key=str(tls.key),
            pid_file=str(prefix / "nginx.pid"),
            error_log=str(self.logs / "nginx-error.log"),
            access_log=str(self.logs / "nginx-access.log"),
            temp_dir=str(prefix / "tmp"),
        )
        conf = prefix / "nginx.conf"
        conf.write_text("# Generated by authloyalty.devinfra.stack from "
                        f"{gateway.template_path()}\n" + gateway.render_gateway(values))
        error_log = self.logs / "nginx-error.log"
        try:
            gateway.check_config(conf, prefix=prefix, error_log=error_log, nginx=binary)
        except RuntimeError as exc:
            raise StackError(str(exc)) from exc
        log = self.logs / "nginx.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [binary, "-p", f"{prefix}/", "-c", str(conf), "-e", str(error_log),
                 "-g", "daemon off;"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=prefix, start_new_session=True)
        urls = {"https": [f"https://localhost:{p}" for p in ports.https],
                "grpc_tls": [f"localhost:{p}" for p in ports.https],
                "grpc_h2c": f"{HOST}:{ports.grpc_gateway}"}
        self.add("nginx", "nginx", [proc.pid], config=str(conf), log=str(error_log),
                 ports={"https": ports.https, "grpc_h2c": ports.grpc_gateway}, urls=urls,
                 ca=str(tls.ca))
        deadline = time.monotonic() + 15
        while not all(port_open(p) for p in [*ports.https, ports.grpc_gateway]):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise StackError(f"nginx did not start; {error_log}:\n{_tail(error_log)}")
            time.sleep(0.05)
        self.step(f"nginx gateway on https://localhost:{', '.join(map(str, ports.https))} "
                  f"(gRPC also on h2c {HOST}:{ports.grpc_gateway}), pid {proc.pid}")

    def start_prometheus(self, binary: str, ports: Ports) -> None:
        assert ports.prometheus is not None
        base = self.dir / "prometheus"
        (base / "data").mkdir(parents=True, exist_ok=True)
        address = f"{HOST}:{ports.prometheus}"
        jobs = {
            "sso": [(f"sso-{i}", f"{HOST}:{h}") for i, (h, _) in enumerate(ports.sso, start=1)],
            "loyalty": [(f"loyalty-{i}", f"{HOST}:{p}")
                        for i, p in enumerate(ports.loyalty, start=1)],
        }
        conf = base / "prometheus.yml"
        conf.write_text(prom.render_config(jobs, self_address=address))
        try:
            prom.check_config(conf, promtool=gateway.find_command("promtool"))
        except RuntimeError as exc:
            raise StackError(str(exc)) from exc
        log = self.logs / "prometheus.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                prom.server_command(binary, conf, base / "data", address),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=base, start_new_session=True)
        url = f"http://{address}"
        self.add("prometheus", "prometheus", [proc.pid], config=str(conf), log=str(log),
                 ports={"http": ports.prometheus}, urls={"http": url})
        _wait_http(f"{url}/-/ready", proc, "prometheus", log, time.monotonic() + 30)
        self.step(f"Prometheus on {url} scraping {sum(len(t) for t in jobs.values())} targets, "
                  f"pid {proc.pid}")

    def check_gateway(self, ports: Ports, tls: gateway.TlsFiles) -> None:
        base = f"https://localhost:{ports.https[0]}"
        context = ssl.create_default_context(cafile=str(tls.ca))
        with httpx.Client(verify=context, timeout=5.0) as client:
            for path in ("/auth/healthz", "/loyalty/healthz", "/.well-known/jwks.json"):
                response = client.get(base + path)
                if response.status_code != 200:
                    raise StackError(f"GET {base}{path} through the gateway answered "
                                     f"{response.status_code}: {response.text[:300]}")
        self.step(f"gateway answers on {base}")

    # -- failure ------------------------------------------------------------------------------

    def rollback(self) -> None:
        """Stop whatever this run started (its state file says what)."""
        if self.kafka is not None and not any(
                c["kind"] == "kafka" for c in self.state.get("components", [])):
            with contextlib.suppress(Exception):
                self.kafka.kill()
        if not self.state:
            return  # failed before writing any state
        if self.state.get("components"):
            print("stopping what was started ...", file=sys.stderr, flush=True)
            _stop_all(self.state, quiet=True)
        self.state["status"] = "failed"
        self.state.pop("up_pid", None)
        self.state.pop("up_start_time", None)
        with contextlib.suppress(OSError):
            self.save()


WARMUP_TOPIC = "authloyalty-stack-warmup"


def warm_up_kafka(bootstrap_servers: str, timeout: float = 60.0) -> None:
    """Let a fresh cluster create and load its coordinators before the services need them.

    Kafka creates ``__transaction_state`` (which hands out idempotent producer ids) and
    ``__consumer_offsets`` on first use and then loads them; until then producers and consumer
    groups wait and retry ("coordinator load in progress"), which delays the first events by
    a second or more. One idempotent produce and one consumer-group commit here take that wait
    out of the first user's requests.
    """
    from confluent_kafka import Consumer, KafkaException, Producer

    quiet = {"bootstrap.servers": bootstrap_servers, "log_level": 2}
    deadline = time.monotonic() + timeout
    producer = Producer({**quiet, "enable.idempotence": True, "acks": "all"})
    producer.produce(WARMUP_TOPIC, b"warm-up")
    if producer.flush(timeout) != 0:
        raise StackError("Kafka warm-up: an idempotent produce did not complete")
    consumer = Consumer({**quiet, "group.id": WARMUP_TOPIC, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    try:
        consumer.subscribe([WARMUP_TOPIC])
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            with contextlib.suppress(KafkaException):
                consumer.commit(message=message, asynchronous=False)
                return
        raise StackError("Kafka warm-up: no consumer group could commit in time")
    finally:
        consumer.close()


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = json.loads(json.dumps(base))  # deep copy
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _wait_http(url: str, proc: subprocess.Popen[bytes], name: str, log: Path,
               deadline: float) -> None:
    with httpx.Client(timeout=1.0) as client:
        while True:
            if proc.poll() is not None:
                raise StackError(f"{name} exited with {proc.returncode} during startup; "
                                 f"{log}:\n{_tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise StackError(f"{name} not ready ({url}) in time; {log}:\n{_tail(log)}")
            time.sleep(0.1)


# -- down ---------------------------------------------------------------------------------------


def _stop_component(component: dict[str, Any]) -> None:
    kind = component["kind"]
    records = component.get("processes", [])
    if not any(process_alive(r) for r in records):
        return
    if kind == "postgres":
        with contextlib.suppress(RuntimeError, OSError, KeyError):
            PostgresCluster.existing(Path(component["dir"])).stop()
        if any(process_alive(r) for r in records):
            # postgres: SIGINT is "fast" shutdown; never SIGKILL the postmaster first.
            _terminate(records, signal.SIGINT, timeout=30)
    elif kind == "nginx":
        _terminate(records, signal.SIGQUIT, timeout=10)  # graceful: finish open requests
    elif kind == "kafka":
        # Every node at once: a node stopped last, alone, hangs without a quorum.
        _terminate(records, signal.SIGTERM, timeout=30)
    else:
        _terminate(records, signal.SIGTERM, timeout=_STOP_TIMEOUT)


def _stop_all(state: dict[str, Any], *, quiet: bool = False) -> list[str]:
    stopped = []
    for component in reversed(state.get("components", [])):
        was_alive = any(process_alive(r) for r in component.get("processes", []))
        _stop_component(component)
        if was_alive:
            stopped.append(component["name"])
            if not quiet:
                print(f"stopped {component['name']}", flush=True)
    return stopped


def down(directory: Path) -> int:
    """Stop what ``up`` started in ``directory``, newest first."""
    state = load_state(directory)
    if state is None:
        print(f"no stack in {directory}")
        return 0
    up_pid = state.get("up_pid")
    if up_pid is not None:
        # An `up` still at work: interrupt it (it then stops what it started itself).
        up = {"pid": up_pid, "start_time": state.get("up_start_time")}
        if process_alive(up):
            _terminate([up], signal.SIGTERM, timeout=60)
    with _locked(directory, timeout=60):
        state = load_state(directory) or state
        _stop_all(state)
        left = [c["name"] for c in state.get("components", [])
                if any(process_alive(r) for r in c.get("processes", []))]
        state["status"] = "stopped" if not left else "partly-stopped"
        state["stopped_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        write_json(directory / STATE_FILE, state)
    if left:
        print(f"still running: {', '.join(left)}", file=sys.stderr)
        return 1
    print(f"stack in {directory} stopped")
    return 0


# -- status -------------------------------------------------------------------------------------


def status_report(directory: Path) -> dict[str, Any] | None:
    """The state file with an ``alive`` flag on every process and component."""
    state = load_state(directory)
    if state is None:
        return None
    for component in state.get("components", []):
        for record in component.get("processes", []):
            record["alive"] = process_alive(record)
        flags = [r["alive"] for r in component.get("processes", [])]
        component["alive"] = bool(flags) and all(flags)
    return state


def _where(component: dict[str, Any]) -> str:
    kind = component["kind"]
    if kind == "postgres":
        return f"127.0.0.1:{component['ports']['postgres']} ({component.get('role')})"
    if kind == "kafka":
        return str(component.get("bootstrap_servers", ""))
    if kind == "nginx":
        urls = component.get("urls", {})
        return f"{', '.join(urls.get('https', []))}; gRPC h2c {urls.get('grpc_h2c')}"
    urls = component.get("urls", {})
    return "  ".join(f"{k} {v}" for k, v in urls.items())


def status(directory: Path, as_json: bool = False) -> int:
    """Print what runs and where; exit 0 if everything is alive, 1 if not, 3 if no stack."""
    report = status_report(directory)
    if report is None:
        print(f"no stack in {directory}")
        return 3
    components = report.get("components", [])
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        state = report.get("status")
        down_now = [c["name"] for c in components if not c["alive"]]
        if state == "running" and down_now:
            state = f"running, degraded ({', '.join(down_now)} not alive)"
        print(f"stack in {report['dir']}: {state} "
              f"(started {report.get('started_at')}"
              + (f", up in {report['started_in_s']} s)" if "started_in_s" in report else ")"))
        for component in components:
            if component["kind"] == "nginx":
                print(f"  gateway  {component['urls']['https'][0]}  "
                      f"(trust {component.get('ca')})")
        width = max([len(c["name"]) for c in components] + [4])
        print(f"  {'NAME':<{width}}  {'ALIVE':<5}  {'PID':<16}  WHERE")
        for component in components:
            pids = ",".join(str(r["pid"]) for r in component.get("processes", []))
            alive = "yes" if component["alive"] else "no"
            print(f"  {component['name']:<{width}}  {alive:<5}  {pids:<16}  {_where(component)}")
    all_alive = bool(components) and all(c["alive"] for c in components)
    return 0 if all_alive else 1


# -- CLI ----------------------------------------------------------------------------------------


def up(opts: Options) -> int:
    """Start the stack; on failure stop what was started and return 1."""
    opts.directory = opts.directory.absolute()
    runner = _Up(opts)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with _locked(opts.directory):
            try:
                runner.run()
            except BaseException as exc:
                runner.rollback()
                if isinstance(exc, StackError | RuntimeError | TimeoutError | OSError | ValueError):
                    print(f"error: {exc}", file=sys.stderr)
                    print(f"logs: {opts.directory / 'logs'}", file=sys.stderr)
                    return 1
                if isinstance(exc, KeyboardInterrupt):
                    print("interrupted; everything started was stopped", file=sys.stderr)
                    return 130
                raise
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print()
    status(opts.directory)
    return 0


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="The production topology (PostgreSQL primary+replica, Kafka, sso replicas, "
                    "loyalty, nginx TLS gateway, Prometheus) on this machine, without containers.")
    sub = parser.add_subparsers(dest="command", required=True)

    def directory(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                       help=f"where configs, data, logs and the state file live "
                            f"(default {DEFAULT_DIR})")

    start = sub.add_parser("up", help="start the stack (detached) and return when it serves")
    directory(start)
    start.add_argument("--sso-replicas", type=int, default=2, metavar="N")
    start.add_argument("--loyalty-replicas", type=int, default=1, metavar="N")
    start.add_argument("--brokers", type=int, default=1, choices=[1, 3],
                       help="Kafka brokers: 1, or a 3-node KRaft cluster")
    start.add_argument("--https-port", type=int, metavar="P",
                       help=f"gateway TLS port (default {DEFAULT_HTTPS_PORT}, plus 443 when free "
                            "and permitted)")
    start.add_argument("--http2-grpc-port", type=int, metavar="P",
                       help=f"gateway plaintext HTTP/2 port for gRPC from services "
                            f"(default {DEFAULT_GRPC_GATEWAY_PORT})")
    start.add_argument("--prometheus-port", type=int, metavar="P",
                       help=f"default {DEFAULT_PROMETHEUS_PORT}")
    start.add_argument("--no-prometheus", action="store_true", help="do not run Prometheus")
    start.add_argument("--no-443", action="store_true", help="never listen on 443 as well")
    start.add_argument("--no-install", action="store_true",
                       help="never apt-get install missing Debian packages")
    start.add_argument("--fresh", action="store_true",
                       help="discard the data of a previous (stopped) stack in --dir first")

    show = sub.add_parser("status", help="what runs and where")
    directory(show)
    show.add_argument("--json", action="store_true", help="the state file with alive flags")

    stop = sub.add_parser("down", help="stop everything `up` started, in reverse order")
    directory(stop)
    return parser


def main(argv: Sequence[str] | None = None,
         prog: str = "python -m authloyalty.devinfra.stack") -> int:
    """Entry point: ``up``, ``status`` or ``down`` (``prog`` names the command in --help)."""
    args = _parser(prog).parse_args(argv)
    directory: Path = args.dir.absolute()
    try:
        if args.command == "up":
            if args.sso_replicas < 1 or args.loyalty_replicas < 1:
                print("error: at least one sso and one loyalty replica", file=sys.stderr)
                return 2
            return up(Options(
                directory=directory, sso_replicas=args.sso_replicas,
                loyalty_replicas=args.loyalty_replicas, brokers=args.brokers,
                https_port=args.https_port, grpc_gateway_port=args.http2_grpc_port,
                prometheus=not args.no_prometheus, prometheus_port=args.prometheus_port,
                also_443=not args.no_443, install=not args.no_install, fresh=args.fresh))
        if args.command == "status":
            return status(directory, args.json)
        return down(directory)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
