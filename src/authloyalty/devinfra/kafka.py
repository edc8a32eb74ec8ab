"""Throwaway Apache Kafka (KRaft) brokers for tests, benchmarks and the local multi-process stack.

No Docker and no Kafka tarball: the broker classpath is resolved from Maven Central with
``scripts/kafka/pom.xml`` (see :func:`ensure_classpath`) and ``kafka.Kafka`` runs as a plain JVM
subprocess. Every node is a combined broker+controller listening on 127.0.0.1 only, PLAINTEXT,
no authentication: never meant to hold real data or be reachable from another machine.

CLI (``start`` detaches and returns once the brokers answer; ``stop`` stops them)::

    python -m authloyalty.devinfra.kafka start --dir DIR [--port N] [--brokers N] [--heap 512m]
    python -m authloyalty.devinfra.kafka status --dir DIR
    python -m authloyalty.devinfra.kafka stop --dir DIR
    python -m authloyalty.devinfra.kafka classpath      # resolve the jars, print the lib dir

Environment:

``AUTHLOYALTY_CACHE_DIR``
    where the jars go (``<dir>/kafka-<version>/lib``); default ``~/.cache/authloyalty``.
``AUTHLOYALTY_KAFKA_POM``
    the pom (or the directory holding it) to resolve instead of ``scripts/kafka/pom.xml``.
``AUTHLOYALTY_KAFKA_LOG4J2``
    a log4j2 configuration file instead of ``scripts/kafka/log4j2.properties``.
``AUTHLOYALTY_NO_APT``
    set to ``1`` to never ``apt-get install`` a missing java/mvn (as root).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Literal, NamedTuple, Self

from authloyalty.devinfra.common import (
    HOST,
    apt_install,
    can_apt_install,
    free_ports,
    tail,
    write_json,
)

__all__ = [
    "HOST",
    "KafkaBroker",
    "KafkaCluster",
    "QuorumMode",
    "Voter",
    "broker_ids",
    "ensure_classpath",
    "find_java",
    "kafka_version",
    "main",
    "pom_path",
]

CACHE_ENV = "AUTHLOYALTY_CACHE_DIR"
POM_ENV = "AUTHLOYALTY_KAFKA_POM"
LOG4J2_ENV = "AUTHLOYALTY_KAFKA_LOG4J2"

QuorumMode = Literal["dynamic", "static"]

_MIN_JAVA = 17
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_MARKER = ".complete"
_NODE_FILE = "kafka-node.json"
_CLUSTER_FILE = "kafka-cluster.json"
_STATE_FILE = "devinfra-kafka.json"
_SUPERVISOR_LOG = "supervisor.log"
_MODULE = "authloyalty.devinfra.kafka"
_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}
# Used when scripts/kafka/log4j2.properties cannot be found (e.g. an installed wheel).
_DEFAULT_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = STDOUT
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = INFO
"""


# -- classpath ----------------------------------------------------------------------------------


def pom_path() -> Path:
    """Return the pom resolving the broker classpath (``$AUTHLOYALTY_KAFKA_POM`` or the repo's)."""
    override = os.environ.get(POM_ENV)
    if override:
        path = Path(override).expanduser()
        if path.is_dir():
            path = path / "pom.xml"
    else:
        # src/authloyalty/devinfra/kafka.py -> repository root is three levels above the package.
        path = Path(__file__).resolve().parents[3] / "scripts" / "kafka" / "pom.xml"
    if not path.is_file():
        raise RuntimeError(
            f"Kafka classpath pom not found at {path}; run from a source checkout or point "
            f"{POM_ENV} at scripts/kafka/pom.xml"
        )
    return path


def kafka_version(pom: Path | None = None) -> str:
    """Return the ``kafka.version`` property of the classpath pom."""
    pom = pom or pom_path()
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", _POM_NS)
    if node is None or not (node.text or "").strip():
        raise RuntimeError(f"{pom} has no <properties><kafka.version>")
    return (node.text or "").strip()


def _cache_root() -> Path:
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "authloyalty"


def _java_major(java: str) -> int:
    proc = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"cannot run `{java} -version`:\n{tail(proc.stderr + proc.stdout)}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _which_java() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(Path(java_home) / "bin" / "java", os.X_OK):
        return str(Path(java_home) / "bin" / "java")
    return shutil.which("java")


def _ensure_tools(*, need_mvn: bool) -> tuple[str, str | None]:
    java, mvn = _which_java(), shutil.which("mvn")
    missing = [] if java else ["java"]
    if need_mvn and not mvn:
        missing.append("mvn")
    if missing:
        if not can_apt_install():
            raise RuntimeError(
                f"{' and '.join(missing)} not found on PATH: the Kafka broker needs Java "
                f"{_MIN_JAVA}+ and Maven (Debian: `apt-get install default-jre-headless maven`)"
            )
        apt_install(["default-jre-headless", "maven"])
        java, mvn = _which_java(), shutil.which("mvn")
        if java is None or (need_mvn and mvn is None):
            raise RuntimeError(
                "installed default-jre-headless and maven but java/mvn still missing"
            )
    assert java is not None
    major = _java_major(java)
    if major < _MIN_JAVA:
        raise RuntimeError(f"{java} is Java {major}; Kafka 4.x needs Java {_MIN_JAVA} or newer")
    return java, mvn


def find_java() -> str:
    """Return the ``java`` executable to use (``$JAVA_HOME/bin/java`` or PATH), checking >= 17."""
    return _ensure_tools(need_mvn=False)[0]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_classpath(pom: Path | None = None) -> Path:
    """Resolve the broker jars into ``<cache>/kafka-<version>/lib`` (once) and return that dir.

    A marker file holding the pom's hash is written after Maven succeeded; without it (or after
    the pom changed) the directory is wiped and copied again. Concurrent callers serialise on a
    lock file, so parallel test workers do not fight over the copy.
    """
    pom = (pom or pom_path()).resolve()
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    lib = _cache_root() / f"kafka-{kafka_version(pom)}" / "lib"
    marker = lib / _MARKER

    def complete() -> bool:
        with contextlib.suppress(OSError):
            return marker.read_text().strip() == digest
        return False

    if complete():
        return lib
    _, mvn = _ensure_tools(need_mvn=True)
    assert mvn is not None
    lib.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(lib.parent / ".lock"):
        if complete():
            return lib
        shutil.rmtree(lib, ignore_errors=True)
        cmd = [
            mvn, "-B", "-q", "--no-transfer-progress", "-Dstyle.color=never",
            "-f", str(pom),
            f"{_DEPENDENCY_PLUGIN}:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={lib}",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(
                f"resolving the Kafka classpath failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                f"{tail(proc.stdout + proc.stderr)}"
            )
        if not any(lib.glob("kafka_2.13-*.jar")):
            raise RuntimeError(f"mvn succeeded but {lib} holds no kafka_2.13 jar")
        marker.write_text(digest + "\n")
    return lib


def _log4j2_config(base_dir: Path) -> Path:
    override = os.environ.get(LOG4J2_ENV)
    if override:
        return Path(override).expanduser().absolute()
    with contextlib.suppress(RuntimeError):
        candidate = pom_path().parent / "log4j2.properties"
        if candidate.is_file():
            return candidate.resolve()
    fallback = base_dir / "log4j2.properties"
    fallback.write_text(_DEFAULT_LOG4J2)
    return fallback


# -- small helpers ------------------------------------------------------------------------------


def _random_id() -> str:
    """A Kafka ``Uuid`` string: url-safe base64 of 16 random bytes, no padding (22 chars).

    Like Kafka's own ``Uuid.randomUuid``, never one starting with "-": command-line parsers
    would take it for an option (``--cluster-id -x…`` fails to parse).
    """
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not value.startswith("-"):
            return value


def _proc_state(pid: int) -> str | None:
    """Return the /proc state letter of ``pid`` (``None`` if it does not exist)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _pid_alive(pid: int) -> bool:
    # Reap it if it is our (exited) child; a zombie reparented to a non-reaping PID 1 is dead too.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X")


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # Every process we start leads its own session/process group (start_new_session=True).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _wait_pid(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


# -- minimal Kafka wire protocol (readiness probe) ----------------------------------------------


class KafkaProtocolError(RuntimeError):
    """The broker answered, but not with what the readiness probe expected."""


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks += chunk
    return bytes(chunks)


def _request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    client = b"authloyalty-devinfra"
    # Request header v1 (non-flexible): api_key, api_version, correlation_id, client_id.
    payload = struct.pack(">hhih", api_key, version, corr, len(client)) + client + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    data = _recv_exact(sock, size)
    (got,) = struct.unpack_from(">i", data)
    if got != corr:
        raise KafkaProtocolError(f"correlation id {got} != {corr}")
    return data[4:]


def broker_ids(port: int, host: str = HOST, *, timeout: float = 2.0) -> set[int]:
    """Return the ids of the live brokers that the broker at ``host:port`` knows about.

    Sends ApiVersions v0 and then a non-flexible Metadata request (v4..v8) for no topics,
    without any client library. Raises ``OSError`` or :class:`KafkaProtocolError`.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        resp = _request(sock, 18, 0, 1, b"")  # ApiVersions v0
        error, count = struct.unpack_from(">hi", resp)
        if error:
            raise KafkaProtocolError(f"ApiVersions error code {error}")
        versions = {}
        for i in range(count):
            key, low, high = struct.unpack_from(">hhh", resp, 6 + 6 * i)
            versions[key] = (low, high)
        low, high = versions.get(3, (0, -1))
        usable = [v for v in range(8, 3, -1) if low <= v <= high]
        if not usable:
            raise KafkaProtocolError(f"no Metadata version in 4..8 (broker: {low}..{high})")
        version = usable[0]
        body = struct.pack(">i?", 0, False)  # topics: empty array; allow_auto_topic_creation
        if version >= 8:
            body += struct.pack(">??", False, False)  # include cluster/topic authorized ops
        resp = _request(sock, 3, version, 2, body)
        offset = 4  # throttle_time_ms
        (count,) = struct.unpack_from(">i", resp, offset)
        offset += 4
        ids: set[int] = set()
        for _ in range(count):
            node_id, host_len = struct.unpack_from(">ih", resp, offset)
            offset += 6 + host_len + 4  # node_id, host, port
            (rack_len,) = struct.unpack_from(">h", resp, offset)
            offset += 2 + max(rack_len, 0)
            ids.add(node_id)
        return ids


# -- broker -------------------------------------------------------------------------------------


class Voter(NamedTuple):
    """A controller in the KRaft quorum: node id, controller port and metadata directory id."""

    node_id: int
    port: int
    directory_id: str


class KafkaBroker:
    """One combined KRaft node (broker + controller) living in ``base_dir``.

    ``base_dir`` holds ``server.properties``, the data directory (``data/``), ``broker.log``
    (appended across restarts) and ``kafka-node.json`` (ports and ids). The storage is formatted
    on the first :meth:`start` only, so stop/kill followed by start keeps every message. A
    ``KafkaBroker`` created on a ``base_dir`` used before reuses its ports and ids.

    Used alone it is a single-node cluster (dynamic quorum, ``format --standalone``);
    :class:`KafkaCluster` passes ``voters``/``cluster_id`` to make it one node of many.
    ``properties`` override or extend the generated ``server.properties``.
    """

    def __init__(
        self,
        base_dir: Path,
        port: int | None = None,
        *,
        heap: str = "512m",
        node_id: int = 1,
        controller_port: int | None = None,
        voters: Sequence[Voter] | None = None,
        quorum: QuorumMode = "dynamic",
        cluster_id: str | None = None,
        properties: Mapping[str, str | int | bool] | None = None,
        java_options: Sequence[str] = (),
        classpath: Path | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "broker.log"
        self.config_file = self.base_dir / "server.properties"
        self.heap = heap
        self.java_options = list(java_options)
        self.properties = dict(properties or {})
        self._classpath = classpath
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        saved = self._load_saved()
        if saved is not None:
            # Restarting on existing data: the quorum state and broker registration refer to
            # these ports and ids, so they must not change.
            self.node_id = int(saved["node_id"])
            self._port = int(saved["port"]) if port is None else port
            self._controller_port = int(saved["controller_port"])
            self.quorum: QuorumMode = "static" if saved["quorum"] == "static" else "dynamic"
            self.cluster_id = str(saved["cluster_id"])
            self.voters = [Voter(int(v[0]), int(v[1]), str(v[2])) for v in saved["voters"]]
            return
        self.node_id = node_id
        if port is None or controller_port is None:
            free = free_ports(2)
            port = free[0] if port is None else port
            controller_port = free[1] if controller_port is None else controller_port
        self._port = port
        self._controller_port = controller_port
        self.quorum = quorum
        self.cluster_id = cluster_id or _random_id()
        if voters is None:
            voters = [Voter(node_id, controller_port, _random_id())]
        if not any(v.node_id == node_id and v.port == controller_port for v in voters):
            raise ValueError(f"node {node_id} (controller port {controller_port}) not in voters")
        self.voters = list(voters)

    # -- properties -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The PLAINTEXT client port on 127.0.0.1."""
        return self._port

    @property
    def controller_port(self) -> int:
        """The KRaft controller port on 127.0.0.1."""
        return self._controller_port

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT``, for ``bootstrap.servers``."""
        return f"{HOST}:{self._port}"

    @property
    def pid(self) -> int | None:
        """PID of the broker JVM while it runs (it leads its own process group)."""
        return self._pid if self.is_running() else None

    def is_running(self) -> bool:
        """Whether the broker JVM is alive (possibly paused)."""
        if self._proc is not None:
            return self._proc.poll() is None
        return self._pid is not None and _pid_alive(self._pid)

    def is_formatted(self) -> bool:
        """Whether the data directory has been formatted (``meta.properties`` exists)."""
        return (self.data_dir / "meta.properties").is_file()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> Self:
        """Format the storage on first use, start the JVM and wait until it serves metadata."""
        deadline = time.monotonic() + timeout
        self.launch()
        self.wait_ready(max(deadline - time.monotonic(), 0.0))
        return self

    def launch(self) -> None:
        """Format if needed and start the JVM without waiting (see :meth:`wait_ready`)."""
        if self.is_running():
            raise RuntimeError(f"{self!r} is already running (pid {self._pid})")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        java = find_java()
        classpath = self._classpath or ensure_classpath()
        self._write_config()
        base_cmd = [java, *self._jvm_options(), "-cp", f"{classpath}/*"]
        if not self.is_formatted():
            self._format(base_cmd)
        with self.log_file.open("ab") as log:
            log.write(f"=== devinfra: starting kafka.Kafka at {time.ctime()} ===\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [*base_cmd, "kafka.Kafka", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                start_new_session=True,
            )
        self._pid = self._proc.pid

    def wait_ready(self, timeout: float = 60, expected: Sequence[int] | None = None) -> None:
        """Wait until this node answers a Metadata request listing itself (and ``expected``)."""
        wanted = {self.node_id, *(expected or ())}
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while True:
            if not self.is_running():
                code = self._proc.returncode if self._proc is not None else "?"
                raise RuntimeError(
                    f"Kafka node {self.node_id} exited (code {code}) during startup; "
                    f"{self.log_file}:\n{self.log_tail()}"
                )
            try:
                if wanted <= broker_ids(self._port, timeout=1.0):
                    return
                last = None
            except (OSError, KafkaProtocolError, struct.error) as exc:
                last = exc
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Kafka node {self.node_id} on {self.bootstrap_servers} not ready after "
                    f"{timeout:.0f}s (last probe error: {last!r}); {self.log_file}:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (clean shutdown), then SIGKILL after ``timeout`` seconds. No-op if stopped."""
        self.send_stop()
        self.wait_stopped(timeout)

    def send_stop(self) -> None:
        """Send SIGTERM (resuming a paused JVM first) without waiting."""
        if self._pid is not None and self.is_running():
            _signal_group(self._pid, signal.SIGCONT)
            _signal_group(self._pid, signal.SIGTERM)

    def wait_stopped(self, timeout: float = 30) -> None:
        """Wait for the JVM to exit; SIGKILL it after ``timeout`` seconds."""
        if self._pid is None:
            return
        if not self._wait(timeout):
            self.kill()
        self._proc = self._pid = None

    def kill(self) -> None:
        """SIGKILL the JVM (simulates a crash); the data stays and :meth:`start` recovers it."""
        if self._pid is not None and self.is_running():
            _signal_group(self._pid, signal.SIGKILL)
            self._wait(30)
        self._proc = self._pid = None

    def pause(self) -> None:
        """SIGSTOP the JVM: it keeps its sockets but stops answering (a hung broker)."""
        if self._pid is None or not self.is_running():
            raise RuntimeError(f"{self!r} is not running")
        _signal_group(self._pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused JVM."""
        if self._pid is None or not self.is_running():
            raise RuntimeError(f"{self!r} is not running")
        _signal_group(self._pid, signal.SIGCONT)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of ``broker.log``."""
        try:
            return tail(self.log_file.read_text(errors="replace"), lines)
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        return self if self.is_running() else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"KafkaBroker(base_dir={str(self.base_dir)!r}, node_id={self.node_id}, "
            f"port={self._port})"
        )

    # -- internals --------------------------------------------------------------------------

    def _wait(self, timeout: float) -> bool:
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        return self._pid is None or _wait_pid(self._pid, timeout)

    def _load_saved(self) -> dict[str, Any] | None:
        path = self.base_dir / _NODE_FILE
        if not path.is_file():
            return None
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def _jvm_options(self) -> list[str]:
        return [
            f"-Xmx{self.heap}",
            "-Xms64m",
            "-XX:+UseSerialGC",
            # C1 only: the broker gets ready sooner and several JVMs share 2 cores better.
            "-XX:TieredStopAtLevel=1",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            "-Dlog4j2.shutdownHookEnabled=false",  # Kafka's own hook logs the shutdown
            f"-Dlog4j2.configurationFile={_log4j2_config(self.base_dir)}",
            f"-Dkafka.logs.dir={self.base_dir / 'logs'}",
            *self.java_options,
        ]

    def _server_properties(self) -> dict[str, str]:
        replicas = min(3, len(self.voters))
        min_isr = max(1, replicas - 1)
        partitions = 1 if len(self.voters) == 1 else 3
        endpoints = f"PLAINTEXT://{HOST}:{self._port},CONTROLLER://{HOST}:{self._controller_port}"
        props: dict[str, str | int | bool] = {
            "process.roles": "broker,controller",
            "node.id": self.node_id,
            "listeners": endpoints,
            "advertised.listeners": endpoints,
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": 1,
            "default.replication.factor": replicas,
            "auto.create.topics.enable": True,
            "delete.topic.enable": True,
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": partitions,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": partitions,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "share.coordinator.state.topic.num.partitions": partitions,
            "group.initial.rebalance.delay.ms": 0,
            # A restarted (or killed) node can only re-register once its old broker session
            # expired (default 9 s); short sessions make restarts and failover tests quick.
            "broker.heartbeat.interval.ms": 500,
            "broker.session.timeout.ms": 3000,
            # Fewer threads and a small log-cleaner buffer (default 128 MiB) for small heaps.
            "num.network.threads": 2,
            "num.io.threads": 4,
            "num.recovery.threads.per.data.dir": 1,
            "log.cleaner.dedupe.buffer.size": 16 * 1024 * 1024,
        }
        if self.quorum == "static":
            props["controller.quorum.voters"] = ",".join(
                f"{v.node_id}@{HOST}:{v.port}" for v in self.voters
            )
        else:
            props["controller.quorum.bootstrap.servers"] = ",".join(
                f"{HOST}:{v.port}" for v in self.voters
            )
        props.update(self.properties)
        return {
            key: (str(value).lower() if isinstance(value, bool) else str(value))
            for key, value in props.items()
        }

    def _write_config(self) -> None:
        lines = [f"{key}={value}" for key, value in self._server_properties().items()]
        self.config_file.write_text(
            "# generated by authloyalty.devinfra.kafka; rewritten on every start\n"
            + "\n".join(lines)
            + "\n"
        )

    def _format(self, base_cmd: Sequence[str]) -> None:
        cmd = [
            *base_cmd, "kafka.tools.StorageTool", "format",
            "--cluster-id", self.cluster_id,
            "--config", str(self.config_file),
        ]  # fmt: skip
        if self.quorum == "dynamic":
            if len(self.voters) == 1:
                cmd.append("--standalone")
            else:
                cmd += [
                    "--initial-controllers",
                    ",".join(f"{v.node_id}@{HOST}:{v.port}:{v.directory_id}" for v in self.voters),
                ]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.base_dir, check=False)
        if proc.returncode != 0:
            raise RuntimeError(
                f"formatting Kafka storage in {self.data_dir} failed (exit {proc.returncode}):\n"
                f"{tail(proc.stdout + proc.stderr)}"
            )
        write_json(
            self.base_dir / _NODE_FILE,
            {
                "node_id": self.node_id,
                "port": self._port,
                "controller_port": self._controller_port,
                "quorum": self.quorum,
                "cluster_id": self.cluster_id,
                "voters": [list(v) for v in self.voters],
            },
        )


# -- cluster ------------------------------------------------------------------------------------


class KafkaCluster:
    """``brokers`` combined KRaft nodes (ids 1..N) in ``base_dir/node-<id>``, on loopback.

    Internal topics and auto-created topics get replication factor min(3, N) and, for the
    transaction/share-state topics, min ISR replication factor - 1. ``quorum="dynamic"`` formats
    with ``--initial-controllers`` (KIP-853), ``"static"`` uses ``controller.quorum.voters``.
    """

    def __init__(
        self,
        base_dir: Path,
        brokers: int = 3,
        *,
        heap: str = "384m",
        quorum: QuorumMode = "dynamic",
        ports: Sequence[int] | None = None,
        properties: Mapping[str, str | int | bool] | None = None,
        java_options: Sequence[str] = (),
        classpath: Path | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        saved_path = self.base_dir / _CLUSTER_FILE
        if saved_path.is_file():
            # Existing cluster: each node reloads its own ports and ids from its directory.
            brokers = int(json.loads(saved_path.read_text())["brokers"])
        if brokers < 1:
            raise ValueError("brokers must be >= 1")
        if ports is not None and len(ports) != brokers:
            raise ValueError(f"need {brokers} ports, got {len(ports)}")
        free = free_ports(2 * brokers)
        voters = [Voter(i + 1, free[brokers + i], _random_id()) for i in range(brokers)]
        cluster_id = _random_id()
        self.nodes: list[KafkaBroker] = []
        for i, voter in enumerate(voters):
            node_dir = self.base_dir / f"node-{voter.node_id}"
            port: int | None = free[i] if ports is None else ports[i]
            if ports is None and (node_dir / _NODE_FILE).is_file():
                port = None  # formatted before: the node reloads its saved ports and ids
            self.nodes.append(
                KafkaBroker(
                    node_dir,
                    port,
                    heap=heap,
                    node_id=voter.node_id,
                    controller_port=voter.port,
                    voters=voters,
                    quorum=quorum,
                    cluster_id=cluster_id,
                    properties=properties,
                    java_options=java_options,
                    classpath=classpath,
                )
            )
        self._saved_path = saved_path

    @property
    def bootstrap_servers(self) -> str:
        """All nodes' ``127.0.0.1:PORT``, comma-separated."""
        return ",".join(node.bootstrap_servers for node in self.nodes)

    @property
    def node_ids(self) -> list[int]:
        return [node.node_id for node in self.nodes]

    def node(self, node_id: int) -> KafkaBroker:
        """The node with id ``node_id`` (1..N)."""
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)

    def start(self, timeout: float = 120) -> Self:
        """Start every stopped node at once; wait until each lists all nodes as live brokers."""
        deadline = time.monotonic() + timeout
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if any(node._classpath is None for node in self.nodes):
            ensure_classpath()  # once, before launching several JVMs
        started: list[KafkaBroker] = []
        try:
            for node in self.nodes:
                if not node.is_running():
                    node.launch()
                    started.append(node)
            if not self._saved_path.exists():
                write_json(self._saved_path, {"brokers": len(self.nodes)})
            for node in self.nodes:
                node.wait_ready(max(deadline - time.monotonic(), 0.0), expected=self.node_ids)
        except BaseException:
            for node in started:
                node.kill()
            raise
        return self

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM every node at once, then wait (SIGKILL stragglers after ``timeout``)."""
        for node in self.nodes:
            node.send_stop()
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            node.wait_stopped(max(deadline - time.monotonic(), 0.0))

    def kill(self) -> None:
        """SIGKILL every node."""
        for node in self.nodes:
            node.kill()

    def stop_node(self, node_id: int, timeout: float = 30) -> None:
        """Cleanly stop one node."""
        self.node(node_id).stop(timeout)

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node (a crash)."""
        self.node(node_id).kill()

    def start_node(self, node_id: int, timeout: float = 60) -> None:
        """Restart one node on its data; wait until it is back as a live broker."""
        self.node(node_id).start(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"KafkaCluster(base_dir={str(self.base_dir)!r}, brokers={len(self.nodes)})"


# -- CLI ----------------------------------------------------------------------------------------


def _build(base_dir: Path, port: int | None, brokers: int, heap: str) -> KafkaBroker | KafkaCluster:
    if brokers == 1 and not (base_dir / _CLUSTER_FILE).exists():
        return KafkaBroker(base_dir, port, heap=heap)
    ports = None if port is None else [port + i for i in range(brokers)]
    return KafkaCluster(base_dir, brokers, heap=heap, ports=ports)


def _nodes(target: KafkaBroker | KafkaCluster) -> list[KafkaBroker]:
    return target.nodes if isinstance(target, KafkaCluster) else [target]


def _read_state(base_dir: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((base_dir / _STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data


def _supervisor_alive(state: Mapping[str, Any]) -> bool:
    pid = int(state.get("supervisor_pid", 0))
    return pid > 0 and _pid_alive(pid) and _MODULE in _cmdline(pid)


def _serve(args: argparse.Namespace) -> int:
    """Run the broker(s) in the foreground until SIGTERM/SIGINT, keeping the state file."""
    base_dir: Path = args.dir
    base_dir.mkdir(parents=True, exist_ok=True)
    state_path = base_dir / _STATE_FILE
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    target = _build(base_dir, args.port, args.brokers, args.heap)
    started = time.monotonic()
    try:
        target.start(args.timeout)
        state = {
            "status": "ready",
            "supervisor_pid": os.getpid(),
            "bootstrap_servers": target.bootstrap_servers,
            "started_in_s": round(time.monotonic() - started, 2),
            "nodes": [
                {
                    "node_id": n.node_id,
                    "pid": n.pid,
                    "port": n.port,
                    "controller_port": n.controller_port,
                    "dir": str(n.base_dir),
                }
                for n in _nodes(target)
            ],
        }
        write_json(state_path, state)
        print(f"kafka ready on {target.bootstrap_servers}", flush=True)
        reported: set[int] = set()
        while not stop.wait(1.0):
            for node in _nodes(target):
                if not node.is_running() and node.node_id not in reported:
                    reported.add(node.node_id)
                    print(f"node {node.node_id} exited; see {node.log_file}", flush=True)
    finally:
        target.stop()
        with contextlib.suppress(FileNotFoundError):
            state_path.unlink()
    return 0


def _start(args: argparse.Namespace) -> int:
    base_dir: Path = args.dir
    state = _read_state(base_dir)
    if state is not None and _supervisor_alive(state):
        print(state["bootstrap_servers"])
        return 0
    base_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (base_dir / _STATE_FILE).unlink()
    # Resolve jars here so Maven errors show up on the terminal, not in supervisor.log.
    ensure_classpath()
    src_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src_root, env.get("PYTHONPATH")) if p)
    argv = [
        sys.executable, "-m", _MODULE, "serve",
        "--dir", str(base_dir), "--brokers", str(args.brokers), "--heap", args.heap,
        "--timeout", str(args.timeout),
    ]  # fmt: skip
    if args.port is not None:
        argv += ["--port", str(args.port)]
    log_fd = os.open(base_dir / _SUPERVISOR_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        # posix_spawn (not Popen): the supervisor outlives us, so there is no handle to wait on.
        pid = os.posix_spawn(
            sys.executable,
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(log_fd)
    deadline = time.monotonic() + args.timeout + 15
    while time.monotonic() < deadline:
        state = _read_state(base_dir)
        if state is not None and state.get("supervisor_pid") == pid:
            print(state["bootstrap_servers"])
            return 0
        if not _pid_alive(pid):
            break
        time.sleep(0.2)
    if _pid_alive(pid):
        _signal_group(pid, signal.SIGTERM)
        _wait_pid(pid, 30)
    log = (base_dir / _SUPERVISOR_LOG).read_text(errors="replace")
    print(f"kafka failed to start; {base_dir / _SUPERVISOR_LOG}:\n{tail(log)}", file=sys.stderr)
    return 1


def _stop(args: argparse.Namespace) -> int:
    base_dir: Path = args.dir
    state = _read_state(base_dir)
    if state is None:
        print(f"no running kafka in {base_dir}", file=sys.stderr)
        return 0
    pid = int(state.get("supervisor_pid", 0))
    if _supervisor_alive(state):
        _signal_group(pid, signal.SIGTERM)
        if not _wait_pid(pid, args.timeout + 10):
            _signal_group(pid, signal.SIGKILL)
            _wait_pid(pid, 10)
    # Safety net if the supervisor was killed: brokers run in their own process groups. SIGTERM
    # them all at once: a node stopped last, alone, hangs in controlled shutdown (no quorum).
    orphans = []
    for node in state.get("nodes", []):
        node_pid = int(node.get("pid") or 0)
        config = str(Path(node["dir"]) / "server.properties")
        if node_pid and _pid_alive(node_pid) and config in _cmdline(node_pid):
            _signal_group(node_pid, signal.SIGTERM)
            orphans.append(node_pid)
    deadline = time.monotonic() + args.timeout
    for node_pid in orphans:
        if not _wait_pid(node_pid, max(deadline - time.monotonic(), 0.0)):
            _signal_group(node_pid, signal.SIGKILL)
            _wait_pid(node_pid, 10)
    with contextlib.suppress(FileNotFoundError):
        (base_dir / _STATE_FILE).unlink()
    return 0


def _status(args: argparse.Namespace) -> int:
    state = _read_state(args.dir)
    if state is None or not _supervisor_alive(state):
        print("stopped")
        return 3
    print(json.dumps(state, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {_MODULE}", description="Throwaway Kafka (KRaft) brokers on 127.0.0.1."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "serve"):
        cmd = sub.add_parser(
            name, help="start detached" if name == "start" else "run in foreground"
        )
        cmd.add_argument("--dir", type=lambda s: Path(s).absolute(), required=True)
        cmd.add_argument("--port", type=int, help="client port (node i gets PORT+i-1)")
        cmd.add_argument("--brokers", type=int, default=1, help="number of nodes (default 1)")
        cmd.add_argument("--heap", default="512m", help="max heap per node (default 512m)")
        cmd.add_argument("--timeout", type=float, default=120.0)
    for name in ("stop", "status"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--dir", type=lambda s: Path(s).absolute(), required=True)
        cmd.add_argument("--timeout", type=float, default=30.0)
    sub.add_parser("classpath", help="resolve the broker jars and print the lib directory")
    args = parser.parse_args(argv)
    if args.command == "classpath":
        print(ensure_classpath())
        return 0
    handlers = {"start": _start, "serve": _serve, "stop": _stop, "status": _status}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
