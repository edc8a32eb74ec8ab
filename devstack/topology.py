"""The local production topology as a table of components, and the files it runs on.

Every process is one :class:`~devstack.components.Component` in :func:`components`: PostgreSQL
(by default etcd, three Patroni members and HAProxy, see :mod:`devstack.patroni`; with
``--postgres simple`` a primary and a streaming replica), Kafka node(s), N sso replicas (each
runs the outbox relay, which uses SKIP LOCKED), the nginx TLS gateway, M loyalty replicas (each
its own Kafka ``instance_id``) and Prometheus. Adding one (a schema registry, Jaeger) is one
more entry: its command, environment, dependencies and readiness check.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import yaml

from devstack import jaeger, nginx, prometheus
from devstack.common import HOST, DevstackError, clean_env, port_open
from devstack.components import Component
from devstack.kafka import CLUSTER_FILE, KafkaBroker, KafkaCluster, warm_up
from devstack.kafka_node import NODE_FILE
from devstack.patroni import HaPostgres
from devstack.postgres import STATE_FILE as PG_STATE_FILE
from devstack.postgres import PostgresCluster
from devstack.registry import Registry
from devstack.supervisor import Supervisor
from devstack.tls import TlsFiles

DATABASES = ("sso", "loyalty")
# The consumer's lag reporter asks the broker for watermarks on the consuming connection; each
# query waits behind the fetch long-poll (librdkafka default 500 ms), so with three partitions
# a revocation could reach loyalty 1.5 s late. Shorter long-polls keep that under the 1 s
# logout guarantee.
LOYALTY_KAFKA_CLIENT = {"fetch.wait.max.ms": "100"}


def authloyalty() -> list[str]:
    """How to run the ``authloyalty`` command of this installation."""
    beside = Path(sys.executable).parent / "authloyalty"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("authloyalty")
    if found is None:
        raise DevstackError("the authloyalty command is not installed (run `make venv`)")
    return [found]


def run(argv: list[str], what: str, timeout: float = 120.0) -> None:
    """Run a one-off command; fail with its output."""
    proc = subprocess.run(argv, capture_output=True, text=True, env=clean_env(),
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        output = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise DevstackError(f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n{output}")


def http_ok(url: str, verify: ssl.SSLContext | bool = False) -> Callable[[], bool]:
    """A readiness check: ``GET url`` answers 200."""

    def ready() -> bool:
        return httpx.get(url, timeout=1.0, verify=verify).status_code == 200

    return ready


def _once(action: Callable[[], None]) -> Callable[[], None]:
    done: list[bool] = []

    def run_once() -> None:
        if not done:
            action()
            done.append(True)

    return run_once


class Topology:
    """The stack of one directory, from its plan (``stack.json``: options, ports, tools)."""

    def __init__(self, directory: Path, plan: dict[str, Any]) -> None:
        self.dir = directory
        self.plan = plan
        self.logs = directory / "logs"
        self.supervisor = Supervisor(directory)
        self.kafka = open_stack_kafka(directory / "kafka", plan["options"]["brokers"],
                                      self.supervisor)
        self.tls = TlsFiles(*(directory / "tls" / n for n in ("ca.pem", "tls.crt", "tls.key")))
        self.config_dir = directory / "config"

    @cached_property
    def ha(self) -> HaPostgres | None:
        """The HA PostgreSQL (etcd, Patroni members, HAProxy), unless ``--postgres simple``."""
        if self.plan["options"].get("postgres", "simple") != "ha":
            return None
        taken = {p for n in self.kafka_nodes() for p in (n.port, n.controller_port)}
        taken |= set(_ports_in(self.plan["ports"]))
        return HaPostgres.open(self.dir / "pg" / "ha", taken)

    @property
    def primary(self) -> PostgresCluster:
        """The PostgreSQL primary."""
        return PostgresCluster(self.dir / "pg" / "primary",
                               self.plan["ports"]["postgres_primary"])

    @property
    def replica(self) -> PostgresCluster:
        """The PostgreSQL streaming replica."""
        return PostgresCluster(self.dir / "pg" / "replica",
                               self.plan["ports"]["postgres_replica"])

    def kafka_nodes(self) -> list[KafkaBroker]:
        """The Kafka node(s)."""
        return self.kafka.nodes if isinstance(self.kafka, KafkaCluster) else [self.kafka]

    def sso_ports(self) -> list[tuple[int, int]]:
        """(http, grpc) of every sso replica."""
        return [(int(h), int(g)) for h, g in self.plan["ports"]["sso"]]

    def loyalty_ports(self) -> list[int]:
        """The HTTP port of every loyalty replica."""
        return [int(p) for p in self.plan["ports"]["loyalty"]]

    # -- the table ----------------------------------------------------------------------------

    def components(self) -> list[Component]:
        """Every process of the stack, with its dependencies and readiness check."""
        logs, ports, tools = self.logs, self.plan["ports"], self.plan["tools"]
        kafka = [n.as_component() for n in self.kafka_nodes()]
        kafka_names = [c.name for c in kafka]
        services = _once(self.prepare_services)
        tracing = self.tracing_components()
        registry = self.registry_components()
        table = [*self.database_components(), *kafka, *tracing, *registry]
        tracing_names = [c.name for c in tracing]  # services start after it: no span lost
        writer, reader = (["haproxy"] * 2 if self.ha is not None
                          else ["postgres-primary", "postgres-replica"])
        sso_names = [f"sso-{i}" for i in range(1, len(self.sso_ports()) + 1)]
        for name, (http, _) in zip(sso_names, self.sso_ports(), strict=True):
            table.append(self.service(name, "sso", http_ok(f"http://{HOST}:{http}/auth/healthz"),
                                      [writer, *kafka_names, *tracing_names,
                                       *(c.name for c in registry)], services))
        https, grpc_h2c = ports["https"], ports["grpc_gateway"]
        table.append(Component(
            "nginx", [tools["nginx"], "-p", f"{self.dir / 'nginx'}/", "-c", str(self.nginx_conf),
                      "-e", str(logs / "nginx-error.log"), "-g", "daemon off;"],
            ready=lambda: all(port_open(p) for p in [*https, grpc_h2c]),
            log=logs / "nginx.log", depends_on=sso_names, cwd=self.dir / "nginx",
            setup=lambda: self.check_gateway_config(tools["nginx"]),
            stop_signal="QUIT", stop_wait=10))  # QUIT: finish open requests first
        loyalty_names = []
        for i, http in enumerate(self.loyalty_ports(), start=1):
            loyalty_names.append(f"loyalty-{i}")
            table.append(self.service(
                f"loyalty-{i}", "loyalty", http_ok(f"http://{HOST}:{http}/loyalty/healthz"),
                # loyalty fetches the JWKS through the gateway and reads from the replica.
                ["nginx", reader, *kafka_names, *tracing_names], services,
                env={"SSL_CERT_FILE": str(self.tls.ca)}))
        if ports.get("prometheus"):
            address = f"{HOST}:{ports['prometheus']}"
            conf = self.dir / "prometheus" / "prometheus.yml"
            table.append(Component(
                "prometheus", prometheus.server_command(tools["prometheus"], conf,
                                                        self.dir / "prometheus" / "data", address),
                ready=http_ok(f"http://{address}/-/ready"), log=logs / "prometheus.log",
                depends_on=loyalty_names, cwd=self.dir / "prometheus",
                setup=lambda: _check_prometheus(conf, tools["promtool"])))
        return table

    def database_components(self) -> list[Component]:
        """PostgreSQL: etcd, the Patroni members and HAProxy; or a primary and a replica."""
        if self.ha is not None:
            return self.ha.components(self.plan["tools"], self.logs)
        replica = self.replica
        return [
            self.primary.component("postgres-primary", log=self.logs / "postgres-primary.log"),
            replica.component(
                "postgres-replica", log=self.logs / "postgres-replica.log",
                depends_on=["postgres-primary"], setup=self.prepare_replica,
                ready=lambda: replica.accepts_connections() and replica.in_recovery()),
        ]

    @cached_property
    def registry(self) -> Registry | None:
        """The Schema Registry (Apicurio, in memory), unless the plan predates it."""
        port = self.plan["ports"].get("registry")
        if not port:
            return None
        return Registry(self.dir / "registry", int(port), supervisor=self.supervisor,
                        log=self.logs / "registry.log")

    def registry_components(self) -> list[Component]:
        """The registry: sso's relays register the event schemas there on first use."""
        return [] if self.registry is None else [self.registry.component()]

    def tracing_components(self) -> list[Component]:
        """Jaeger, unless the stack runs without it (``--no-jaeger``)."""
        ports = self.plan["ports"].get("jaeger")
        if not ports:
            return []
        return [Component(
            "jaeger", jaeger.server_command(self.plan["tools"]["jaeger"], self.jaeger_conf),
            ready=http_ok(jaeger.urls(ports)["health"]), log=self.logs / "jaeger.log",
            cwd=self.jaeger_conf.parent,
            # Once its query API has served, Jaeger spends ~10 s of its shutdown dialling an
            # OTLP collector of its own on localhost:4317; its storage is memory, nothing to
            # flush: killed after 3 s.
            stop_wait=3)]

    def service(self, name: str, kind: str, ready: Callable[[], bool], depends_on: list[str],
                setup: Callable[[], None], env: dict[str, str] | None = None) -> Component:
        """An ``authloyalty sso|loyalty --config`` replica."""
        return Component(name, [*authloyalty(), kind, "--config",
                                str(self.config_dir / f"{name}.yaml")],
                         ready=ready, log=self.logs / f"{name}.log", depends_on=depends_on,
                         env={"PYTHONUNBUFFERED": "1", **(env or {})}, cwd=self.dir,
                         setup=setup)

    # -- one-off work before a component's first start ----------------------------------------

    def check_gateway_config(self, binary: str) -> None:
        """``nginx -t`` on the rendered gateway config."""
        nginx.check_config(self.nginx_conf, prefix=self.dir / "nginx",
                           error_log=self.logs / "nginx-error.log", nginx=binary)

    def prepare_replica(self) -> None:
        """Create the databases on the primary, then copy it (first time) or rewrite the
        replica's settings."""
        primary, replica = self.primary, self.replica
        for name in DATABASES:
            if not primary.psql("SELECT 1 FROM pg_database WHERE datname = :'name';",
                                     variables={"name": name}).strip():
                primary.create_database(name)
        if (replica.data_dir / "PG_VERSION").exists():
            replica.prepare()
        else:
            primary.make_replica(replica.base_dir, replica.port)

    def prepare_services(self) -> None:
        """Migrations (need only PostgreSQL) and a Kafka warm-up, before the first service."""
        if self.ha is not None:
            self.ha.create_databases(DATABASES)
        run([*authloyalty(), "migrate", "--config", str(self.config_dir / "sso-1.yaml")],
            "migrate")
        warm_up(self.kafka.bootstrap_servers)

    # -- files ----------------------------------------------------------------------------------

    @property
    def nginx_conf(self) -> Path:
        """The gateway's rendered config."""
        return self.dir / "nginx" / "nginx.conf"

    def write_files(self) -> dict[str, dict[str, Any]]:
        """Service configs, the gateway and Prometheus configs; what each component serves."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        ports = self.plan["ports"]
        gateway_url = f"https://localhost:{ports['https'][0]}"
        write, read = self.database_urls()
        base: dict[str, Any] = {
            "mode": "production", "log_level": "INFO", "log_format": "json",
            "sso": {"http_host": HOST, "signing_keys_dir": str(self.dir / "keys"),
                    "database": {"url": write["sso"], "read_url": read["sso"]},
                    # X-Forwarded-For is believed only from the gateway.
                    "trusted_proxies": [f"{HOST}/32"]},
            "loyalty": {"http_host": HOST,
                        "database": {"url": write["loyalty"], "read_url": read["loyalty"]},
                        "jwks_url": f"{gateway_url}/.well-known/jwks.json",
                        "sso_grpc_target": f"{HOST}:{ports['grpc_gateway']}"},
            "events": {"backend": "kafka", "kafka": {
                "bootstrap_servers": self.kafka.bootstrap_servers,
                **({"schema_registry_url": self.registry.ccompat_url}
                   if self.registry is not None else {}),
                "replication_factor": min(3, self.plan["options"]["brokers"])}},
        }
        described: dict[str, dict[str, Any]] = {}
        sso, loyalty = self.sso_ports(), self.loyalty_ports()
        for i, (http, grpc) in enumerate(sso, start=1):
            self._write_config(f"sso-{i}", _merge(base, {
                "sso": {"http_port": http, "grpc_port": grpc},
                "loyalty": {"http_port": loyalty[0]}, **self.telemetry("sso", f"sso-{i}")}))
            described[f"sso-{i}"] = {"ports": {"http": http, "grpc": grpc},
                                     "urls": {"http": f"http://{HOST}:{http}",
                                              "grpc": f"{HOST}:{grpc}"}}
        for i, http in enumerate(loyalty, start=1):
            self._write_config(f"loyalty-{i}", _merge(base, {
                "sso": {"http_port": sso[0][0], "grpc_port": sso[0][1]},
                "loyalty": {"http_port": http},
                "events": {"kafka": {"instance_id": f"loyalty-{i}",
                                     "client": LOYALTY_KAFKA_CLIENT}},
                **self.telemetry("loyalty", f"loyalty-{i}")}))
            described[f"loyalty-{i}"] = {"ports": {"http": http},
                                         "urls": {"http": f"http://{HOST}:{http}"}}
        for name in [*described]:
            described[name]["config"] = str(self.config_dir / f"{name}.yaml")
        self._write_gateway()
        described["nginx"] = {
            "ports": {"https": ports["https"], "grpc_h2c": ports["grpc_gateway"]},
            "urls": {"https": [f"https://localhost:{p}" for p in ports["https"]],
                     "grpc_tls": [f"localhost:{p}" for p in ports["https"]],
                     "grpc_h2c": f"{HOST}:{ports['grpc_gateway']}"},
            "config": str(self.nginx_conf), "ca": str(self.tls.ca)}
        if self.ha is not None:
            self.ha.write_files()
            described |= self.ha.describe(DATABASES)
        else:
            for name, cluster in (("postgres-primary", self.primary),
                                  ("postgres-replica", self.replica)):
                described[name] = {"ports": {"postgres": cluster.port},
                                   "urls": {db: cluster.url(db, driver=None) for db in DATABASES}}
        for node in self.kafka_nodes():
            described[node.name] = {"ports": {"kafka": node.port},
                                    "urls": {"bootstrap": self.kafka.bootstrap_servers}}
        if ports.get("prometheus"):
            described["prometheus"] = {"ports": {"http": ports["prometheus"]},
                                       "urls": {"http": f"http://{HOST}:{ports['prometheus']}"}}
        if self.registry is not None:
            described["registry"] = {"ports": {"http": self.registry.port},
                                     "urls": {"http": self.registry.url,
                                              "ccompat": self.registry.ccompat_url}}
        if ports.get("jaeger"):
            self.jaeger_conf.parent.mkdir(parents=True, exist_ok=True)
            self.jaeger_conf.write_text(
                f"# Generated by devstack from deploy/{jaeger.TEMPLATE}\n"
                + jaeger.render_config(jaeger.local_addresses(ports["jaeger"])))
            described["jaeger"] = {"ports": ports["jaeger"], "urls": jaeger.urls(ports["jaeger"]),
                                   "config": str(self.jaeger_conf)}
        if ports.get("prometheus"):  # last: it scrapes what the entries above describe
            self._write_prometheus(described)
        return described

    @property
    def jaeger_conf(self) -> Path:
        """Jaeger's rendered config."""
        return self.dir / "jaeger" / "jaeger.yaml"

    def telemetry(self, service: str, replica: str) -> dict[str, Any]:
        """A replica's tracing settings: every span to the stack's Jaeger (none without it)."""
        ports = self.plan["ports"].get("jaeger")
        if not ports:
            return {}
        return {"telemetry": {"enabled": True, "otlp_endpoint": jaeger.urls(ports)["otlp_http"],
                              "service_name": service, "instance_id": replica,
                              "sample_ratio": 1.0}}

    def database_urls(self) -> tuple[dict[str, str], dict[str, str]]:
        """The services' write and read URL of each database."""
        if self.ha is not None:
            return ({db: self.ha.url(db) for db in DATABASES},
                    {db: self.ha.url(db, write=False) for db in DATABASES})
        return ({db: self.primary.url(db, driver=None) for db in DATABASES},
                {db: self.replica.url(db, driver=None) for db in DATABASES})

    def _write_config(self, name: str, cfg: dict[str, Any]) -> None:
        (self.config_dir / f"{name}.yaml").write_text(
            "# Generated by devstack; rewritten on every `up`.\n"
            + yaml.safe_dump(cfg, sort_keys=False))

    def _write_gateway(self) -> None:
        prefix, ports = self.dir / "nginx", self.plan["ports"]
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        values = nginx.GatewayValues(
            sso_http=[f"{HOST}:{h}" for h, _ in self.sso_ports()],
            sso_grpc=[f"{HOST}:{g}" for _, g in self.sso_ports()],
            loyalty_http=[f"{HOST}:{p}" for p in self.loyalty_ports()],
            https_listen=[f"{HOST}:{p}" for p in ports["https"]],
            grpc_listen=[f"{HOST}:{ports['grpc_gateway']}"],
            tls_cert=str(self.tls.cert), tls_key=str(self.tls.key),
            pid_file=str(prefix / "nginx.pid"), error_log=str(self.logs / "nginx-error.log"),
            access_log=str(self.logs / "nginx-access.log"), temp_dir=str(prefix / "tmp"))
        self.nginx_conf.write_text(f"# Generated by devstack from {nginx.template_path()}\n"
                                   + nginx.render_gateway(values))

    def _write_prometheus(self, described: dict[str, dict[str, Any]]) -> None:
        base = self.dir / "prometheus"
        (base / "data").mkdir(parents=True, exist_ok=True)
        prometheus.write_config(base, prometheus.scrape_jobs(described),
                                self_address=f"{HOST}:{self.plan['ports']['prometheus']}")


def open_stack_kafka(base: Path, brokers: int,
                     supervisor: Supervisor) -> KafkaBroker | KafkaCluster:
    """The stack's Kafka in ``base`` under the stack's supervisord; refuses a mismatch with the
    data already there."""
    if (base / CLUSTER_FILE).is_file():
        saved = int(json.loads((base / CLUSTER_FILE).read_text())["brokers"])
        if saved != brokers:
            raise DevstackError(f"{base} holds a {saved}-broker cluster; use --brokers {saved} "
                                "or --fresh")
    elif (base / NODE_FILE).is_file() and brokers != 1:
        raise DevstackError(f"{base} holds a single broker; use --brokers 1 or --fresh")
    if brokers == 1:
        return KafkaBroker(base, supervisor=supervisor, group="kafka")
    cluster = KafkaCluster(base, brokers, supervisor=supervisor)
    base.mkdir(parents=True, exist_ok=True)
    (base / CLUSTER_FILE).write_text(json.dumps({"brokers": brokers}) + "\n")
    return cluster


def saved_postgres_port(base: Path) -> int | None:
    """The port of the cluster set up in ``base`` before, if any."""
    path = base / PG_STATE_FILE
    return int(json.loads(path.read_text())["port"]) if path.is_file() else None


def _ports_in(value: Any) -> list[int]:
    """Every port number in a (nested) ports entry of the plan."""
    if isinstance(value, dict):
        return [p for v in value.values() for p in _ports_in(v)]
    if isinstance(value, list):
        return [p for v in value for p in _ports_in(v)]
    return [value] if isinstance(value, int) and value > 0 else []


def _check_prometheus(conf: Path, promtool: str) -> None:
    prometheus.check_rules(conf.parent / prometheus.RULES_FILE, promtool=promtool)
    prometheus.check_config(conf, promtool=promtool)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = json.loads(json.dumps(base))  # deep copy
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
