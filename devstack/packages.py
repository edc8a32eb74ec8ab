"""Debian packages: what the stack and the tests need, installed with apt-get on request.

Only ``python -m devstack up`` (unless ``--no-install``) and ``scripts/install-system-deps.sh``
install anything; tests and fixtures only check that a tool exists
(:func:`devstack.common.require_commands`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from devstack.common import DevstackError, find_command, require_commands, tail

# command -> Debian package, for everything `up` runs.
STACK_COMMANDS = {
    "nginx": "nginx",
    "openssl": "openssl",
    "java": "default-jre-headless",
    "mvn": "maven",
}
PROMETHEUS_COMMANDS = {"prometheus": "prometheus", "promtool": "prometheus"}
# The HA PostgreSQL of the stack (devstack/patroni.py): Patroni runs on the system Python.
HA_POSTGRES_COMMANDS = {"patroni": "patroni", "patronictl": "patroni", "etcd": "etcd-server",
                        "etcdctl": "etcd-client", "haproxy": "haproxy"}
HA_POSTGRES_MODULES = {"psycopg2": "python3-psycopg2"}  # module of /usr/bin/python3 -> package
POSTGRES_PACKAGE = "postgresql"
PG_ROOT = Path("/usr/lib/postgresql")


def can_apt_install() -> bool:
    """Missing Debian packages may be installed here: root and apt-get."""
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def apt_install(packages: Sequence[str]) -> None:
    """``apt-get update`` then ``apt-get install`` ``packages`` (no recommends, no daemons)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with _no_service_starts():
        for cmd in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        ):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise DevstackError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n"
                                    f"{tail(proc.stdout + proc.stderr, 30)}")


@contextlib.contextmanager
def _no_service_starts() -> Iterator[None]:
    # Debian postinst scripts start the packaged daemons (nginx on :80, prometheus on :9090,
    # a "main" PostgreSQL cluster) where an init system runs; a policy-rc.d answering 101
    # forbids that during our install.
    policy = Path("/usr/sbin/policy-rc.d")
    created = False
    if not policy.exists():
        with contextlib.suppress(OSError):
            policy.write_text("#!/bin/sh\n# temporary, written by devstack\nexit 101\n")
            policy.chmod(0o755)
            created = True
    try:
        yield
    finally:
        if created:
            with contextlib.suppress(OSError):
                policy.unlink()


def postgres_installed() -> bool:
    """Whether Debian's PostgreSQL server binaries are present."""
    return any((d / "initdb").is_file() for d in PG_ROOT.glob("*/bin"))


def system_python_has(module: str) -> bool:
    """Whether the system Python (``/usr/bin/python3``) imports ``module``."""
    return subprocess.run(["/usr/bin/python3", "-c", f"import {module}"], capture_output=True,
                          check=False).returncode == 0


def ensure_packages(commands: Mapping[str, str], *, postgres: bool, install: bool,
                    python_modules: Mapping[str, str] | None = None) -> None:
    """Install what is missing of ``commands``, ``python_modules`` of the system Python and
    PostgreSQL when ``install`` and allowed; otherwise fail naming the packages."""
    missing = sorted({pkg for cmd, pkg in commands.items() if find_command(cmd) is None}
                     | {pkg for mod, pkg in (python_modules or {}).items()
                        if not system_python_has(mod)})
    if postgres and not postgres_installed():
        missing.append(POSTGRES_PACKAGE)
    if missing and install and can_apt_install():
        apt_install(missing)
    require_commands(commands)
    absent = sorted(pkg for mod, pkg in (python_modules or {}).items()
                    if not system_python_has(mod))
    if absent:
        raise DevstackError(f"missing Debian packages {absent}: run `make system-deps` or "
                            f"`apt-get install {' '.join(absent)}`")
    if postgres and not postgres_installed():
        raise DevstackError(f"no PostgreSQL server binaries under {PG_ROOT}/*/bin: run "
                            f"`make system-deps` or `apt-get install {POSTGRES_PACKAGE}`")
