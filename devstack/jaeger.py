"""Jaeger v2 for the local stack: built once from the Go module proxy, run from a template.

No release tarball: ``go build`` compiles ``github.com/jaegertracing/jaeger/cmd/jaeger`` at
:data:`MODULE_VERSION` inside a small module of our own (``go install …@version`` refuses a
module whose go.mod has ``replace`` directives, and Jaeger's replaces ``Shopify/sarama``; ours
repeats that replace). The binary and Go's module and build caches live under the cache root
(``~/.cache/authloyalty``, :func:`devstack.kafka_jars.cache_root`). With empty caches, fetching
the modules (1.3 GB) and building took 4 min 14 s on 2 cores (up to ~15 min on a busy machine);
with the caches only the link is left (29 s); later calls return the cached binary at once.

The config is ``deploy/jaeger/jaeger.yaml.template`` rendered with the stack's loopback ports:
in-memory storage, OTLP gRPC and HTTP receivers, the query API, and the health endpoint
(``GET /status``) that tells when Jaeger is ready.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from pathlib import Path

from devstack.common import HOST, DevstackError, file_lock, find_command, tail
from devstack.kafka_jars import cache_root
from devstack.nginx import deploy_dir

MODULE = "github.com/jaegertracing/jaeger"
MODULE_VERSION = "v1.76.0"
COMMAND_PACKAGE = f"{MODULE}/cmd/jaeger"
# Jaeger's own go.mod replaces sarama; a module that builds it must say the same.
REPLACES = {"github.com/Shopify/sarama": "github.com/Shopify/sarama@v1.33.0"}
BUILD_MODULE = "authloyalty.local/jaegerbuild"
MIN_GO = (1, 24)  # Jaeger's go.mod: go 1.24.6
TEMPLATE = Path("jaeger") / "jaeger.yaml.template"
COMPOSE_CONFIG = Path("jaeger") / "jaeger.compose.yaml"
# The ports of one Jaeger, in the order the plan keeps them.
PORT_NAMES = ("otlp_grpc", "otlp_http", "query_http", "query_grpc", "health")
COMPOSE_PORTS = {"otlp_grpc": 4317, "otlp_http": 4318, "query_http": 16686,
                 "query_grpc": 16685, "health": 13133}
MAX_TRACES = 10_000
_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")
_BUILD_TIMEOUT = 3600.0
_GO_DEFAULT = Path("/usr/local/go/bin/go")  # where Go's own installer puts it


def version_dir() -> str:
    """``1.76.0``: the version part of the cache directories' names."""
    return MODULE_VERSION.lstrip("v")


def binary_path() -> Path:
    """Where the built binary is kept."""
    return cache_root() / f"jaeger-{version_dir()}" / "jaeger"


def build_dir() -> Path:
    """The module the binary is built in (go.mod and go.sum)."""
    return cache_root() / f"jaeger-build-{version_dir()}"


def go_env() -> dict[str, str]:
    """The environment of our ``go`` commands: caches under the cache root, no toolchain
    downloads (a Go too old fails with a clear message instead)."""
    root = cache_root() / "go"
    return {**os.environ, "GOMODCACHE": str(root / "mod"), "GOCACHE": str(root / "build"),
            "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}


def find_go() -> str:
    """The ``go`` command, at least :data:`MIN_GO` (Debian's golang-go is too old)."""
    go = find_command("go")
    if go is None and _runnable(_GO_DEFAULT):
        go = str(_GO_DEFAULT)
    if go is None:
        raise DevstackError("building Jaeger needs Go {}.{}+ (`go` not found on PATH or in "
                            "/usr/local/go/bin)".format(*MIN_GO))
    out = subprocess.run([go, "version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"go(\d+)\.(\d+)", out)
    if match is None or (int(match.group(1)), int(match.group(2))) < MIN_GO:
        raise DevstackError(f"building Jaeger needs Go {MIN_GO[0]}.{MIN_GO[1]}+; "
                            f"{go} is {out.strip() or 'unknown'}")
    return go


def ensure_binary(report: bool = False) -> Path:
    """The Jaeger binary, built first if it is not in the cache (serialised by a lock)."""
    binary = binary_path()
    if _runnable(binary):
        return binary
    go = find_go()
    binary.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(binary.parent / ".lock"):
        if _runnable(binary):
            return binary
        if report:
            print(f"building Jaeger {MODULE_VERSION} into {binary} (first time: minutes)",
                  flush=True)
        started = time.monotonic()
        _build(go, binary)
        if report:
            print(f"Jaeger built in {time.monotonic() - started:.0f} s", flush=True)
    return binary


def _runnable(binary: Path) -> bool:
    return binary.is_file() and os.access(binary, os.X_OK)


def _build(go: str, binary: Path) -> None:
    module = build_dir()
    module.mkdir(parents=True, exist_ok=True)
    if not (module / "go.mod").is_file():
        _go(go, module, "mod", "init", BUILD_MODULE)
        for old, new in REPLACES.items():
            _go(go, module, "mod", "edit", f"-replace={old}={new}")
    if COMMAND_PACKAGE not in (module / "go.mod").read_text():
        _go(go, module, "get", "-tool", f"{COMMAND_PACKAGE}@{MODULE_VERSION}")
    partial = binary.with_name(binary.name + ".partial")
    _go(go, module, "build", "-o", str(partial), COMMAND_PACKAGE)
    partial.replace(binary)  # only a complete binary ever has the final name


def _go(go: str, cwd: Path, *args: str) -> None:
    cmd = [go, *args]
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=go_env(), capture_output=True, text=True,
                              timeout=_BUILD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DevstackError(f"`{' '.join(cmd)}` took over {_BUILD_TIMEOUT:.0f} s") from exc
    if proc.returncode != 0:
        raise DevstackError(f"`{' '.join(cmd)}` in {cwd} failed (exit {proc.returncode}):\n"
                            f"{tail(proc.stdout + proc.stderr, 30)}")


# -- config -------------------------------------------------------------------------------------


def render_config(addresses: dict[str, str], max_traces: int = MAX_TRACES,
                  base_path: str = "/") -> str:
    """The template with ``addresses`` (one ``host:port`` per :data:`PORT_NAMES` entry); the
    query API and UI are served under ``base_path``."""
    values = {name.upper(): addresses[name] for name in PORT_NAMES}
    values["MAX_TRACES"] = str(max_traces)
    values["BASE_PATH"] = base_path
    text = (deploy_dir() / TEMPLATE).read_text()

    def fill(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            raise DevstackError(f"{TEMPLATE}: unknown placeholder {match.group(0)}")
        return values[match.group(1)]

    return _PLACEHOLDER.sub(fill, text)


def local_addresses(ports: dict[str, int]) -> dict[str, str]:
    """Loopback ``host:port`` of each of the stack's Jaeger ports."""
    return {name: f"{HOST}:{ports[name]}" for name in PORT_NAMES}


def render_compose() -> str:
    """The compose deployment's config: every port on all interfaces of its container, the
    UI and query API under ``/jaeger`` (the gateway's ``/jaeger/`` location)."""
    header = (f"# Generated from deploy/{TEMPLATE} by `python -m devstack jaeger "
              "render-compose`; do not edit.\n")
    return header + render_config({n: f"0.0.0.0:{p}" for n, p in COMPOSE_PORTS.items()},
                                  base_path="/jaeger")


def urls(ports: dict[str, int]) -> dict[str, str]:
    """What ``status --json`` shows: the query API, the OTLP receivers and the health check."""
    return {"query": f"http://{HOST}:{ports['query_http']}",
            "otlp_http": f"http://{HOST}:{ports['otlp_http']}",
            "otlp_grpc": f"http://{HOST}:{ports['otlp_grpc']}",
            "health": f"http://{HOST}:{ports['health']}/status"}


def server_command(binary: str, config_file: Path) -> list[str]:
    """The command line of the stack's Jaeger."""
    return [binary, "--config", str(config_file)]


def compose_config_path() -> Path:
    """The rendered config the compose file mounts."""
    return deploy_dir() / COMPOSE_CONFIG


def compose_config_current() -> bool:
    """Whether ``deploy/jaeger/jaeger.compose.yaml`` matches the template."""
    with contextlib.suppress(OSError):
        return compose_config_path().read_text() == render_compose()
    return False
