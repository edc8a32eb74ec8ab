"""Apicurio Registry 2.6.13.Final: the Schema Registry of the stack and of the tests.

The services speak the Confluent Schema Registry API, which Apicurio serves under
``/apis/ccompat/v7``. The application comes from Maven Central
(``io.apicurio:apicurio-registry-app:2.6.13.Final:tar.gz:all``, fetched once with
``mvn dependency:copy`` into ``<cache>/downloads``) and is unpacked once into
``<cache>/apicurio-2.6.13.Final``; it runs as a plain JVM with in-memory storage (the
schemas live as long as the process: the services register theirs again on first use).
Apicurio 3.x is not an option: its Confluent API answers ``GET /schemas/ids/{id}`` with 500.

A :class:`Registry` runs under the caller's supervisord (a stack component) or under one of
its own in its directory (tests); it is ready when ``GET /health/ready`` answers 200.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from devstack.common import (
    HOST,
    DevstackError,
    file_lock,
    free_port,
    require_commands,
    tail,
    tail_file,
)
from devstack.components import Component
from devstack.kafka_jars import cache_root, find_java
from devstack.supervisor import Supervisor

VERSION = "2.6.13.Final"
ARTIFACT = f"io.apicurio:apicurio-registry-app:{VERSION}:tar.gz:all"
TARBALL = f"apicurio-registry-app-{VERSION}-all.tar.gz"
RUNNER = f"apicurio-registry-app-{VERSION}-runner.jar"
CCOMPAT_PATH = "/apis/ccompat/v7"
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_MARKER = ".complete"


def fetch_tarball() -> Path:
    """The application tarball in ``<cache>/downloads`` (``mvn dependency:copy`` if absent)."""
    downloads = cache_root() / "downloads"
    tarball = downloads / TARBALL
    if tarball.is_file():
        return tarball
    downloads.mkdir(parents=True, exist_ok=True)
    mvn = require_commands({"mvn": "maven"})["mvn"]
    cmd = [mvn, "-B", "-q", "--no-transfer-progress", "-Dstyle.color=never",
           f"{_DEPENDENCY_PLUGIN}:copy", f"-Dartifact={ARTIFACT}",
           f"-DoutputDirectory={downloads}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not tarball.is_file():
        raise DevstackError(f"fetching Apicurio Registry failed (exit {proc.returncode}): "
                            f"{' '.join(cmd)}\n{tail(proc.stdout + proc.stderr)}")
    return tarball


def ensure_registry() -> Path:
    """The directory holding the runner jar, fetched and unpacked once (concurrent callers
    wait on a lock; a marker is written only after a complete extraction)."""
    home = cache_root() / f"apicurio-{VERSION}"
    if (home / _MARKER).is_file():
        return home
    home.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(home.parent / f".apicurio-{VERSION}.lock"):
        if (home / _MARKER).is_file():
            return home
        tarball = fetch_tarball()
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir()
        with tarfile.open(tarball) as archive:
            archive.extractall(home, filter="data")
        if not (home / RUNNER).is_file():
            raise DevstackError(f"{tarball} holds no {RUNNER}")
        (home / _MARKER).write_text(VERSION + "\n")
    return home


class Registry:
    """One Apicurio Registry process on ``127.0.0.1:port`` (a free port unless given), its
    log in ``base_dir/registry.log``."""

    def __init__(self, base_dir: Path, port: int | None = None, *,
                 supervisor: Supervisor | None = None, name: str = "registry",
                 heap: str = "384m", log: Path | None = None) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.port = port or free_port()
        self.name = name
        self.heap = heap
        self.log_file = log or self.base_dir / "registry.log"
        self._own_supervisor = supervisor is None
        self.supervisor = supervisor or Supervisor(self.base_dir)
        self._component: Component | None = None

    @property
    def url(self) -> str:
        """The base URL (``/health/ready``, ``/apis/registry/v2``, the UI)."""
        return f"http://{HOST}:{self.port}"

    @property
    def ccompat_url(self) -> str:
        """The Confluent-compatible API: ``events.kafka.schema_registry_url``."""
        return self.url + CCOMPAT_PATH

    def ready(self) -> bool:
        """``GET /health/ready`` answers 200."""
        try:
            return httpx.get(f"{self.url}/health/ready", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def component(self, depends_on: tuple[str, ...] = ()) -> Component:
        """The registry as a supervisord program."""
        if self._component is None:  # resolving java and the jar takes a moment
            home = ensure_registry()
            command = [
                find_java(), f"-Xmx{self.heap}", "-XX:+UseSerialGC",
                # C1 only: ready sooner, and several JVMs share 2 cores better.
                "-XX:TieredStopAtLevel=1", "-XX:+ExitOnOutOfMemoryError",
                f"-Dquarkus.http.host={HOST}",
                "-Dquarkus.datasource.jdbc.initial-size=2",
                "-Dquarkus.datasource.jdbc.min-size=2", "-Dquarkus.datasource.jdbc.max-size=10",
                "-jar", str(home / RUNNER)]
            self._component = Component(
                self.name, command, ready=self.ready, log=self.log_file,
                depends_on=depends_on, env={"HTTP_PORT": str(self.port)}, cwd=self.base_dir,
                setup=lambda: self.base_dir.mkdir(parents=True, exist_ok=True), stop_wait=20)
        return self._component

    def is_running(self) -> bool:
        """Whether the JVM is alive."""
        return self.supervisor.alive() and self.supervisor.is_running(self.component())

    @property
    def pid(self) -> int | None:
        """The JVM's pid while it runs."""
        return self.supervisor.pid(self.component()) if self.is_running() else None

    def start(self, timeout: float = 90.0) -> Self:
        """Start the JVM and wait until it is ready."""
        component = self.component()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self._own_supervisor:
            self.supervisor.ensure([component])
        if not self.is_running():
            self.supervisor.start(component)
        deadline = time.monotonic() + timeout
        while not self.ready():
            if not self.is_running():
                raise DevstackError(f"the registry exited during startup; {self.log_file}:\n"
                                    f"{tail_file(self.log_file, 40)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the registry on {self.url} not ready after {timeout:.0f} s;"
                                   f" {self.log_file}:\n{tail_file(self.log_file, 40)}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        """Stop the JVM (its schemas are gone: storage is in memory); a no-op if stopped."""
        if self.is_running():
            self.supervisor.stop(self.component())

    def kill(self) -> None:
        """SIGKILL the JVM (a crash)."""
        if self.is_running():
            self.supervisor.kill(self.component())

    def close(self) -> None:
        """Stop, and stop its own supervisord too."""
        with contextlib.suppress(Exception):
            self.stop()
        if self._own_supervisor:
            self.supervisor.shutdown()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry(base_dir={str(self.base_dir)!r}, port={self.port})"
