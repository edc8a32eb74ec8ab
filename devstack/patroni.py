"""PostgreSQL made highly available: etcd, three Patroni members and HAProxy in one directory.

Layout under ``base_dir`` (``DIR/pg/ha`` in the stack)::

    devstack-ha.json     ports and the internal passwords, chosen once and kept with the data
    etcd/data            the single etcd node
    patroni-N/           member.yml, the PostgreSQL data directory (data/), its socket, pgpass
    haproxy.cfg          the primary and replica listeners
    patronictl.yml       enough for ``patronictl -c patronictl.yml list``

Every member runs ``patroni member.yml`` as the ``postgres`` OS user (PostgreSQL refuses root).
The first member to take the leader key in etcd runs ``initdb``; the others copy it with
``pg_basebackup`` and stream from it. Synchronous replication in strict mode means a commit is
acknowledged only once one standby has it too, and Patroni promotes only that standby: a leader
lost with its data directory loses no acknowledged write.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import yaml

from devstack import haproxy
from devstack.common import HOST, DevstackError, clean_env, free_ports
from devstack.components import Component
from devstack.etcd import Etcd
from devstack.postgres import OS_USER, SUPERUSER, find_bindir

STATE_FILE = "devstack-ha.json"
SCOPE = "authloyalty"
MEMBERS = 3
POSTGRES_HOME = "/var/lib/postgresql"
# Patroni's timing (bootstrap.dcs, stored in etcd on first start): a leader that stops renewing
# its key loses it after ``ttl`` s; members act every ``loop_wait`` s; a DCS or PostgreSQL
# call is retried for ``retry_timeout`` s. ttl >= loop_wait + 2 * retry_timeout must hold.
# Patroni's defaults (30/10/10) give a ~30 s failover; these give ~12-15 s.
DCS = {
    "ttl": 10, "loop_wait": 2, "retry_timeout": 4,
    "maximum_lag_on_failover": 1048576,
    # A commit waits for one standby; only that standby may be promoted. Strict: with no
    # standby left, commits wait instead of going on unreplicated.
    "synchronous_mode": True, "synchronous_mode_strict": True,
    "postgresql": {
        "use_pg_rewind": True, "use_slots": True,
        "parameters": {
            "wal_level": "replica", "hot_standby": "on", "wal_log_hints": "on",
            "max_connections": 300, "max_wal_senders": 10, "max_replication_slots": 10,
            "wal_keep_size": "256MB",
        },
    },
}


def _is_root() -> bool:
    return os.geteuid() == 0


class HaPostgres:
    """The HA PostgreSQL of one stack directory: its ports, files, components and probes."""

    def __init__(self, base_dir: Path, state: dict[str, Any]) -> None:
        self.base_dir = base_dir
        self.state = state
        ports = state["ports"]
        self.etcd = Etcd(base_dir / "etcd", ports["etcd_client"], ports["etcd_peer"])
        self.haproxy_ports = haproxy.Ports(ports["haproxy_primary"], ports["haproxy_replicas"],
                                           ports["haproxy_stats"])
        self.members = [haproxy.Backend(f"patroni-{i}", int(pg), int(rest))
                        for i, (pg, rest) in enumerate(ports["members"], start=1)]

    @classmethod
    def open(cls, base_dir: Path, avoid: set[int]) -> HaPostgres:
        """The cluster in ``base_dir``: its saved ports and passwords, or new ones (free ports
        other than ``avoid``) saved for every later ``up``."""
        path = base_dir / STATE_FILE
        if path.is_file():
            return cls(base_dir, json.loads(path.read_text()))
        free = iter(free_ports(2 + 2 * MEMBERS + 3, avoid))
        state = {
            "ports": {"etcd_client": next(free), "etcd_peer": next(free),
                      "members": [[next(free), next(free)] for _ in range(MEMBERS)],
                      "haproxy_primary": next(free), "haproxy_replicas": next(free),
                      "haproxy_stats": next(free)},
            # Internal users of Patroni; clients on loopback connect as postgres with trust.
            "passwords": {u: secrets.token_urlsafe(18)
                          for u in ("superuser", "replication", "rewind")},
        }
        base_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(state, indent=2) + "\n")
        path.chmod(0o600)
        return cls(base_dir, state)

    # -- where things are ---------------------------------------------------------------------

    def member_dir(self, name: str) -> Path:
        """A member's working directory."""
        return self.base_dir / name

    def data_dir(self, name: str) -> Path:
        """A member's PostgreSQL data directory (``postmaster.pid`` is there while it runs)."""
        return self.member_dir(name) / "data"

    def rest_url(self, name: str) -> str:
        """A member's Patroni REST API."""
        member = next(m for m in self.members if m.name == name)
        return f"http://{HOST}:{member.rest_port}"

    @property
    def haproxy_config(self) -> Path:
        """HAProxy's rendered config."""
        return self.base_dir / "haproxy.cfg"

    def url(self, database: str, *, write: bool = True) -> str:
        """A ``postgresql://`` URL through HAProxy to the primary (``write``) or a replica."""
        port = self.haproxy_ports.primary if write else self.haproxy_ports.replicas
        return f"postgresql://{SUPERUSER}@{HOST}:{port}/{quote(database, safe='')}"

    # -- files --------------------------------------------------------------------------------

    def write_files(self) -> None:
        """Every member's ``member.yml``, ``patronictl.yml`` and ``haproxy.cfg``."""
        bindir = find_bindir()
        for member in self.members:
            directory = self.member_dir(member.name)
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "member.yml").write_text(
                "# Generated by devstack; rewritten on every `up`.\n"
                + yaml.safe_dump(self.member_config(member, bindir), sort_keys=False))
            if _is_root():
                # Patroni writes pgpass and the socket here; initdb wants to own data/.
                shutil.chown(directory, user=OS_USER, group=OS_USER)
                shutil.chown(directory / "member.yml", user=OS_USER, group=OS_USER)
        (self.base_dir / "patronictl.yml").write_text(yaml.safe_dump(
            {"scope": SCOPE, "etcd3": {"hosts": f"{HOST}:{self.etcd.client_port}"}}))
        self.haproxy_config.write_text(haproxy.render(self.haproxy_ports, self.members))

    def member_config(self, member: haproxy.Backend, bindir: Path) -> dict[str, Any]:
        """Patroni's configuration of one member."""
        directory = self.member_dir(member.name)
        passwords = self.state["passwords"]
        return {
            "scope": SCOPE, "name": member.name, "log": {"level": "INFO"},
            "restapi": {"listen": f"{HOST}:{member.rest_port}",
                        "connect_address": f"{HOST}:{member.rest_port}"},
            "etcd3": {"hosts": f"{HOST}:{self.etcd.client_port}"},
            "bootstrap": {"dcs": DCS,
                          "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, "data-checksums"]},
            "postgresql": {
                "listen": f"{HOST}:{member.postgres_port}",
                "connect_address": f"{HOST}:{member.postgres_port}",
                "data_dir": str(directory / "data"), "bin_dir": str(bindir),
                "pgpass": str(directory / "pgpass"),
                "authentication": {
                    "superuser": {"username": SUPERUSER, "password": passwords["superuser"]},
                    "replication": {"username": "replicator",
                                    "password": passwords["replication"]},
                    "rewind": {"username": "rewind_user", "password": passwords["rewind"]},
                },
                "parameters": {
                    "unix_socket_directories": str(directory), "shared_buffers": "32MB",
                    # A crashed PostgreSQL process (not machine) loses nothing without fsync:
                    # its writes are in the OS page cache. Throwaway data; much less disk I/O.
                    "fsync": "off",
                },
                # Throwaway clusters, loopback only (like devstack.postgres).
                "pg_hba": ["local all all trust", "local replication all trust",
                           f"host all all {HOST}/32 trust",
                           f"host replication all {HOST}/32 trust"],
            },
        }

    # -- components ---------------------------------------------------------------------------

    def components(self, tools: dict[str, str], logs: Path) -> list[Component]:
        """etcd, ``patroni-1..3`` and ``haproxy``, in dependency order."""
        table = [self.etcd.component(tools["etcd"], logs / "etcd.log")]
        for member in self.members:
            table.append(Component(
                member.name, self.member_command(tools["patroni"], member.name),
                ready=self.member_ready(member.name), log=logs / f"{member.name}.log",
                depends_on=["etcd"], cwd=self.member_dir(member.name),
                # Patroni stops PostgreSQL itself (fast shutdown) and hands over leadership;
                # PostgreSQL runs in a session of its own, so only Patroni is signalled.
                stop_signal="TERM", stop_wait=60, stop_as_group=False))
        table.append(Component(
            "haproxy", haproxy.command(tools["haproxy"], self.haproxy_config),
            ready=self.serving, log=logs / "haproxy.log",
            depends_on=[m.name for m in self.members], cwd=self.base_dir,
            setup=lambda: self.check_haproxy(tools["haproxy"])))
        return table

    def member_command(self, patroni: str, name: str) -> list[str]:
        """``patroni member.yml``, as the postgres OS user when we are root."""
        config = str(self.member_dir(name) / "member.yml")
        if not _is_root():
            return [patroni, config]
        return ["setpriv", f"--reuid={OS_USER}", f"--regid={OS_USER}", "--init-groups",
                "env", f"HOME={POSTGRES_HOME}", patroni, config]

    def check_haproxy(self, binary: str) -> None:
        """``haproxy -c`` on the rendered config."""
        proc = subprocess.run(haproxy.check_config(binary, self.haproxy_config),
                              capture_output=True, text=True, env=clean_env(), check=False)
        if proc.returncode != 0:
            raise DevstackError(f"haproxy -c {self.haproxy_config} failed:\n"
                                f"{proc.stdout}{proc.stderr}")

    # -- probes -------------------------------------------------------------------------------

    def member_ready(self, name: str) -> Callable[[], bool]:
        """Ready: the member's REST API answers ``GET /health`` 200 (its PostgreSQL runs)."""
        url = f"{self.rest_url(name)}/health"
        return lambda: httpx.get(url, timeout=1.0).status_code == 200

    def cluster(self) -> dict[str, Any]:
        """Patroni's ``GET /cluster`` from the first member that answers."""
        error: Exception | None = None
        for member in self.members:
            try:
                response = httpx.get(f"{self.rest_url(member.name)}/cluster", timeout=1.0)
                if response.status_code == 200:
                    data: dict[str, Any] = response.json()
                    return data
            except httpx.HTTPError as exc:
                error = exc
        raise DevstackError(f"no Patroni member answers GET /cluster ({error!r})")

    def leader(self) -> str | None:
        """The name of the running leader, if there is one."""
        return next((m["name"] for m in self.cluster().get("members", [])
                     if m.get("role") == "leader" and m.get("state") == "running"), None)

    def healthy(self) -> bool:
        """A running leader and every other member a replica streaming from it."""
        members = self.cluster().get("members", [])
        leaders = [m for m in members if m.get("role") == "leader" and m.get("state") == "running"]
        replicas = [m for m in members
                    if m.get("role") in ("replica", "sync_standby")
                    and m.get("state") in ("running", "streaming")
                    and isinstance(m.get("lag"), int)]
        return len(leaders) == 1 and len(replicas) == MEMBERS - 1

    def serving(self) -> bool:
        """HAProxy is ready: the cluster is healthy, HAProxy routes writes to the leader only
        and reads to the replicas only, and both its ports reach PostgreSQL."""
        if not self.healthy():
            return False
        leader = self.leader()
        routed = haproxy.servers_up(self.haproxy_ports.stats)
        replicas = {m.name for m in self.members} - {leader}
        return (routed.get("primary") == {leader} and routed.get("replicas") == replicas
                and all(self.accepts_connections(port)
                        for port in (self.haproxy_ports.primary, self.haproxy_ports.replicas)))

    def accepts_connections(self, port: int) -> bool:
        """``pg_isready`` on ``port``."""
        return subprocess.run([str(find_bindir() / "pg_isready"), "-q", "-h", HOST, "-p",
                               str(port), "-U", SUPERUSER, "-t", "1"], env=clean_env(),
                              check=False).returncode == 0

    # -- SQL ----------------------------------------------------------------------------------

    def create_databases(self, names: Sequence[str]) -> None:
        """Create each of ``names`` that does not exist yet, on the primary (through HAProxy)."""
        for name in names:
            if not self.psql("SELECT 1 FROM pg_database WHERE datname = :'name';",
                             name=name).strip():
                self.psql('CREATE DATABASE :"name";', name=name)

    def psql(self, sql: str, database: str = "postgres", **variables: str) -> str:
        """Run SQL on the primary through HAProxy; its unaligned, tuples-only output."""
        cmd = [str(find_bindir() / "psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
               "-d", f"host={HOST} port={self.haproxy_ports.primary} user={SUPERUSER} "
                     f"dbname={database} connect_timeout=10"]
        for key, value in variables.items():
            cmd += ["-v", f"{key}={value}"]
        proc = subprocess.run(cmd, input=sql, capture_output=True, text=True, env=clean_env(),
                              check=False, timeout=60)
        if proc.returncode != 0:
            raise DevstackError(f"psql through HAProxy failed (exit {proc.returncode}):\n"
                                f"{proc.stderr.strip()}")
        return proc.stdout

    # -- status -------------------------------------------------------------------------------

    def describe(self, databases: Sequence[str]) -> dict[str, dict[str, Any]]:
        """What ``status --json`` shows of each component (ports, urls, files)."""
        hp = self.haproxy_ports
        described: dict[str, dict[str, Any]] = {
            "etcd": {"ports": {"client": self.etcd.client_port, "peer": self.etcd.peer_port},
                     "urls": {"client": self.etcd.client_url}},
            "haproxy": {"ports": {"primary": hp.primary, "replicas": hp.replicas,
                                  "stats": hp.stats},
                        "urls": {"write": {db: self.url(db) for db in databases},
                                 "read": {db: self.url(db, write=False) for db in databases}},
                        "stats": f"http://{HOST}:{hp.stats}/",
                        "config": str(self.haproxy_config),
                        "patronictl": str(self.base_dir / "patronictl.yml")},
        }
        for member in self.members:
            described[member.name] = {
                "ports": {"postgres": member.postgres_port, "rest": member.rest_port},
                "urls": {"rest": self.rest_url(member.name)},
                "config": str(self.member_dir(member.name) / "member.yml"),
                "data_dir": str(self.data_dir(member.name))}
        return described
