"""The production topology on one machine, without containers: up, status, restart, logs, down.

``up`` provisions (Debian packages unless ``--no-install``, the TLS CA, signing keys, configs),
renders the component table of :mod:`devstack.topology` into ``supervisord.conf``, starts
supervisord and then each component once its dependencies are ready, and returns when the
gateway answers; the stack keeps running under supervisord. ``DIR/stack.json`` holds the plan
(options, ports, tool paths) from which every later command rebuilds the same table; process
state is supervisord's alone. ``up`` on a directory whose stack was stopped resumes its data.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import xmlrpc.client
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from devstack import components as runner
from devstack import jaeger, packages, tls
from devstack.common import (
    DevstackError,
    bindable,
    free_ports,
    require_commands,
    tail_file,
    write_json,
)
from devstack.components import Component
from devstack.endpoints import endpoints
from devstack.topology import Topology, authloyalty, run, saved_postgres_port

DEFAULT_DIR = Path("var/stack")
STATE_FILE = "stack.json"
DEFAULT_HTTPS_PORT = 8443
DEFAULT_GRPC_GATEWAY_PORT = 44044
DEFAULT_PROMETHEUS_PORT = 9090
UP_TIMEOUT = 300.0
RESTART_TIMEOUT = 120.0
# Subdirectories `up --fresh` may delete (never the directory itself, which the user named).
_OWNED = ("pg", "kafka", "keys", "tls", "config", "nginx", "prometheus", "jaeger", "registry",
          "logs")


@dataclass
class Options:
    """What ``up`` was asked for."""

    directory: Path
    sso_replicas: int = 2
    loyalty_replicas: int = 1
    brokers: int = 3
    postgres: str = "ha"  # "ha": etcd + 3 Patroni members + HAProxy; "simple": primary+replica
    https_port: int | None = None
    grpc_gateway_port: int | None = None
    prometheus: bool = True
    prometheus_port: int | None = None
    jaeger: bool = True
    also_443: bool = True
    install: bool = True
    fresh: bool = False


def load_state(directory: Path) -> dict[str, Any] | None:
    """The plan of the stack in ``directory`` (None if there is none)."""
    try:
        data: dict[str, Any] = json.loads((directory / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise DevstackError(f"{directory / STATE_FILE} is not valid JSON: {exc}") from exc
    return data


@contextlib.contextmanager
def _locked(directory: Path, *, create: bool = False) -> Iterator[None]:
    """Serialise ``up``, ``restart``, ``stop``, ``start`` and ``down`` on one directory; only
    ``up`` (``create``) makes the directory, the others refuse one that holds no stack."""
    if create:
        directory.mkdir(parents=True, exist_ok=True)
    elif load_state(directory) is None:
        raise DevstackError(f"no stack in {directory}")
    with (directory / ".stack.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DevstackError(f"another devstack command is working on {directory}") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _choose_ports(opts: Options, taken: set[int]) -> dict[str, Any]:
    def fixed(port: int | None, default: int, flag: str) -> int:
        if port is not None:
            if port in taken or not bindable(port):
                raise DevstackError(f"{flag} {port} is in use (or not permitted); choose another")
            chosen = port
        elif default not in taken and bindable(default):
            chosen = default
        else:
            chosen = free_ports(1, taken)[0]
            print(f"port {default} is busy; using {chosen} instead ({flag} chooses)", flush=True)
        taken.add(chosen)
        return chosen

    https = [fixed(opts.https_port, DEFAULT_HTTPS_PORT, "--https-port")]
    # 443 as well, when nobody asked for a particular port and we may bind it (root, free).
    if opts.also_443 and opts.https_port is None and 443 not in taken and bindable(443):
        https.append(443)
    grpc = fixed(opts.grpc_gateway_port, DEFAULT_GRPC_GATEWAY_PORT, "--http2-grpc-port")
    prom = (fixed(opts.prometheus_port, DEFAULT_PROMETHEUS_PORT, "--prometheus-port")
            if opts.prometheus else None)
    pg = opts.directory / "pg"
    primary = saved_postgres_port(pg / "primary")
    replica = saved_postgres_port(pg / "replica")
    tracing = len(jaeger.PORT_NAMES) if opts.jaeger else 0
    free = iter(free_ports(2 * opts.sso_replicas + opts.loyalty_replicas + 3 + tracing, taken))
    return {"https": https, "grpc_gateway": grpc, "prometheus": prom, "registry": next(free),
            "jaeger": {n: next(free) for n in jaeger.PORT_NAMES} if opts.jaeger else None,
            "sso": [[next(free), next(free)] for _ in range(opts.sso_replicas)],
            "loyalty": [next(free) for _ in range(opts.loyalty_replicas)],
            # The HA cluster keeps its own ports (devstack.patroni).
            **({} if opts.postgres == "ha" else
               {"postgres_primary": primary or next(free),
                "postgres_replica": replica or next(free)})}


def _provision(opts: Options) -> dict[str, str]:
    commands = dict(packages.STACK_COMMANDS)
    if opts.prometheus:
        commands |= packages.PROMETHEUS_COMMANDS
    modules: dict[str, str] = {}
    if opts.postgres == "ha":
        commands |= packages.HA_POSTGRES_COMMANDS
        modules = dict(packages.HA_POSTGRES_MODULES)
    packages.ensure_packages(commands, postgres=True, install=opts.install,
                             python_modules=modules)
    tools = require_commands(commands)
    if opts.jaeger:
        tools["jaeger"] = str(jaeger.ensure_binary(report=True))  # built once, then cached
    return tools


def up(opts: Options) -> int:
    """Start the stack; on failure stop what was started and return 1."""
    directory = opts.directory = opts.directory.absolute()
    started = time.monotonic()

    def step(text: str) -> None:
        print(f"[{time.monotonic() - started:5.1f}s] {text}", flush=True)

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # so that a terminated `up` stops what it started

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    with _locked(directory, create=True):
        topology: Topology | None = None
        try:
            topology = _prepare(opts, step)
            table = topology.components()
            topology.supervisor.launch(table)
            step(f"supervisord up ({topology.supervisor.conf})")
            runner.bring_up(topology.supervisor, table, timeout=UP_TIMEOUT, report=step)
            _check_gateway(topology)
        except BaseException as exc:
            if topology is not None:
                with contextlib.suppress(Exception):
                    topology.supervisor.shutdown()
            _set_status(directory, "failed")
            if isinstance(exc, KeyboardInterrupt):
                print("interrupted; everything started was stopped", flush=True)
                return 130
            if isinstance(exc, DevstackError | OSError | TimeoutError | ValueError):
                print(f"error: {exc}\nlogs: {directory / 'logs'}", flush=True)
                return 1
            raise
        elapsed = round(time.monotonic() - started, 1)
        _set_status(directory, "running", started_in_s=elapsed)
        step(f"stack is up in {elapsed} s")
    print()
    return status(directory)


def _prepare(opts: Options, step: Any) -> Topology:
    directory = opts.directory
    if (previous := load_state(directory)) is not None and Topology(
            directory, previous).supervisor.alive():
        raise DevstackError(f"a stack is already running in {directory}; see `status` or "
                            "stop it with `down`")
    if opts.fresh:
        for name in _OWNED:
            shutil.rmtree(directory / name, ignore_errors=True)
    _check_postgres_shape(directory / "pg", opts.postgres)
    tools = _provision(opts)
    if os.geteuid() == 0:
        directory.chmod(0o755)  # the postgres OS user and nginx's workers reach files in it
    (directory / "logs").mkdir(exist_ok=True)
    (directory / "pg").mkdir(exist_ok=True)
    (directory / "pg").chmod(0o755)
    plan: dict[str, Any] = {
        "version": 2, "status": "starting", "dir": str(directory),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": {"sso_replicas": opts.sso_replicas,
                    "loyalty_replicas": opts.loyalty_replicas, "brokers": opts.brokers,
                    "postgres": opts.postgres},
        "tools": tools, "ports": {"postgres_primary": 0, "postgres_replica": 0},
    }
    topology = Topology(directory, plan)  # Kafka first: its nodes keep ports once formatted
    plan["ports"] = _choose_ports(opts, {p for n in topology.kafka_nodes()
                                         for p in (n.port, n.controller_port)})
    files = topology.tls
    if not (files.cert.is_file() and _valid_for_a_day(files.cert, tools["openssl"])):
        tls.make_tls(directory / "tls", openssl=tools["openssl"])
        step(f"TLS certificate for localhost/127.0.0.1 signed by {files.ca}")
    keys = directory / "keys"
    if not any(keys.glob("*.pem")):
        run([*authloyalty(), "keys", "generate", "--dir", str(keys)], "keys generate")
    keys.chmod(0o700)
    plan["components"] = topology.write_files()
    if topology.ha is not None:
        plan["ports"]["postgres_ha"] = topology.ha.state["ports"]
    write_json(directory / STATE_FILE, plan)
    step(f"configs written to {directory / 'config'}")
    return topology


def _check_postgres_shape(pg: Path, wanted: str) -> None:
    """Refuse to start one PostgreSQL shape on the data of the other."""
    held = ("ha" if (pg / "ha").is_dir() else
            "simple" if (pg / "primary").is_dir() else None)
    if held is not None and held != wanted:
        raise DevstackError(f"{pg} holds the data of --postgres {held}; use --postgres {held} "
                            "or --fresh")


def _valid_for_a_day(cert: Path, openssl: str) -> bool:
    return subprocess.run([openssl, "x509", "-checkend", str(24 * 3600), "-noout", "-in",
                           str(cert)], capture_output=True, check=False).returncode == 0


def _check_gateway(topology: Topology) -> None:
    base = f"https://localhost:{topology.plan['ports']['https'][0]}"
    context = ssl.create_default_context(cafile=str(topology.tls.ca))
    with httpx.Client(verify=context, timeout=5.0) as client:
        for path in ("/auth/healthz", "/loyalty/healthz", "/.well-known/jwks.json"):
            response = client.get(base + path)
            if response.status_code != 200:
                raise DevstackError(f"GET {base}{path} through the gateway answered "
                                    f"{response.status_code}: {response.text[:300]}")


def _set_status(directory: Path, value: str, **extra: Any) -> None:
    state = load_state(directory)
    if state is not None:
        state.update(status=value, **extra)
        write_json(directory / STATE_FILE, state)


def _topology(directory: Path) -> Topology:
    state = load_state(directory)
    if state is None:
        raise DevstackError(f"no stack in {directory}")
    return Topology(directory, state)


def down(directory: Path) -> int:
    """Stop every process of the stack (reverse start order) and its supervisord."""
    with _locked(directory):
        topology = _topology(directory)
        topology.supervisor.shutdown()
        _set_status(directory, "stopped",
                    stopped_at=datetime.now(UTC).isoformat(timespec="seconds"))
    print(f"stack in {directory} stopped")
    return 0


def restart(directory: Path, name: str) -> int:
    """Restart one component and wait until it is ready again."""
    with _locked(directory):
        topology = _topology(directory)
        if not topology.supervisor.alive():
            raise DevstackError(f"the stack in {directory} is not running; use `up`")
        table = {c.name: c for c in topology.components()}
        if name not in table:
            raise DevstackError(f"no component {name!r}; one of {', '.join(table)}")
        runner.restart(topology.supervisor, table[name], timeout=RESTART_TIMEOUT)
    return 0


def _running_table(directory: Path) -> tuple[Topology, list[Component]]:
    topology = _topology(directory)
    if not topology.supervisor.alive():
        raise DevstackError(f"the stack in {directory} is not running; use `up`")
    return topology, topology.components()


def select(table: Sequence[Component], names: Sequence[str]) -> list[Component]:
    """The components named, a group name (``kafka``) standing for all its members; in start
    order."""
    chosen: set[str] = set()
    for name in names:
        members = {c.name for c in table if name in (c.name, c.group)}
        if not members:
            raise DevstackError(f"no component or group {name!r}; one of "
                                f"{', '.join(c.name for c in table)}")
        chosen |= members
    return [c for c in runner.in_start_order(table) if c.name in chosen]


def stop(directory: Path, names: Sequence[str]) -> int:
    """Stop components (their stop signal, SIGKILL after their grace period) and leave them
    stopped until ``start``; the members of a group named whole stop together."""
    with _locked(directory):
        topology, table = _running_table(directory)
        chosen = select(table, names)
        whole = {c.group for c in chosen if c.group
                 and all(m in chosen for m in table if m.group == c.group)}
        for group in sorted(whole):
            topology.supervisor.call("stopProcessGroup", group, True)
        for component in reversed(chosen):
            if component.group not in whole:
                topology.supervisor.stop(component)
        print(f"stopped {', '.join(c.name for c in chosen)}")
    return 0


def start(directory: Path, names: Sequence[str]) -> int:
    """Start stopped components (together: a Kafka quorum needs its members) and wait until
    every one is ready."""
    with _locked(directory):
        topology, table = _running_table(directory)
        chosen = [c for c in select(table, names) if not topology.supervisor.is_running(c)]
        for component in chosen:
            topology.supervisor.start(component)
        runner.wait_ready(topology.supervisor, chosen, time.monotonic() + RESTART_TIMEOUT)
    return 0


def logs(directory: Path, name: str, lines: int) -> int:
    """Print the end of one component's log."""
    table = {c.name: c for c in _topology(directory).components()}
    if name not in table:
        raise DevstackError(f"no component {name!r}; one of {', '.join(table)}")
    print(tail_file(table[name].log, lines))
    return 0


def status_report(directory: Path) -> dict[str, Any] | None:
    """The plan with supervisord's state, pid and ``alive`` on every component."""
    state = load_state(directory)
    if state is None:
        return None
    topology = Topology(directory, state)
    try:
        info = topology.supervisor.all_info()
    except (OSError, xmlrpc.client.Error):
        info = {}
    described = state.get("components", {})
    report = []
    for component in topology.components():
        entry = info.get(component.name, {})
        alive = entry.get("statename") in ("STARTING", "RUNNING", "STOPPING")
        report.append({"name": component.name, "state": entry.get("statename", "STOPPED"),
                       "alive": alive, "pid": entry.get("pid") if alive else None,
                       "log": str(component.log), **described.get(component.name, {})})
    state["components"] = report
    state["endpoints"] = endpoints(report)
    state["supervisor"] = {"alive": bool(info), "config": str(topology.supervisor.conf)}
    return state


def _flat(urls: Any) -> list[str]:
    """Every URL of a component's (possibly nested) ``urls``, for one line of ``status``."""
    if isinstance(urls, dict):
        return [u for v in urls.values() for u in _flat(v)]
    if isinstance(urls, list):
        return [u for v in urls for u in _flat(v)]
    return [str(urls)]


def status(directory: Path, as_json: bool = False) -> int:
    """Print what runs and where; exit 0 if everything is alive, 1 if not, 3 if no stack."""
    report = status_report(directory)
    if report is None:
        print(f"no stack in {directory}")
        return 3
    components = report["components"]
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print(f"stack in {report['dir']}: {report.get('status')} "
              f"(started {report.get('started_at')})")
        nginx = next((c for c in components if c["name"] == "nginx"), None)
        if nginx is not None and "urls" in nginx:
            print(f"  gateway  {nginx['urls']['https'][0]}  (trust {nginx['ca']})")
        width = max(len(c["name"]) for c in components)
        print(f"  {'NAME':<{width}}  {'STATE':<8}  {'PID':<8}  WHERE")
        for c in components:
            where = "  ".join(_flat(c.get("urls", {})))
            print(f"  {c['name']:<{width}}  {c['state']:<8}  {c['pid'] or '-'!s:<8}  {where}")
    if not report["supervisor"]["alive"]:
        return 3
    return 0 if all(c["alive"] for c in components) else 1
