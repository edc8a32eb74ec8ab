"""One KRaft node's files: ``server.properties``, formatted storage, ports and ids, command line.

Every node is a combined broker+controller listening on 127.0.0.1 only, PLAINTEXT, without
authentication: never meant to hold real data or be reachable from another machine. The node's
directory holds ``server.properties`` (rewritten on every start), ``data/``, ``broker.log`` and
``kafka-node.json`` (ports and ids, written when the storage is formatted, so a node restarted
on its data keeps them). Running it is supervisord's job (:mod:`devstack.kafka`).
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

from devstack.common import HOST, DevstackError, free_ports, tail, write_json
from devstack.components import Component
from devstack.kafka_jars import ensure_classpath, find_java, log4j2_config

QuorumMode = Literal["dynamic", "static"]
NODE_FILE = "kafka-node.json"


def random_id() -> str:
    """A Kafka ``Uuid`` string (url-safe base64 of 16 random bytes, 22 chars), never starting
    with "-", which command-line parsers would take for an option (as Kafka's own does)."""
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not value.startswith("-"):
            return value


class Voter(NamedTuple):
    """A controller in the KRaft quorum: node id, controller port and metadata directory id."""

    node_id: int
    port: int
    directory_id: str


class KafkaNode:
    """The files and command line of one node living in ``base_dir``.

    Alone it is a single-node cluster (dynamic quorum, ``format --standalone``); a cluster
    passes ``voters``/``cluster_id``. ``properties`` override the generated server properties.
    """

    def __init__(self, base_dir: Path, port: int | None = None, *, heap: str = "512m",
                 node_id: int = 1, controller_port: int | None = None,
                 voters: Sequence[Voter] | None = None, quorum: QuorumMode = "dynamic",
                 cluster_id: str | None = None,
                 properties: Mapping[str, str | int | bool] | None = None,
                 java_options: Sequence[str] = (), classpath: Path | None = None) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "broker.log"
        self.config_file = self.base_dir / "server.properties"
        self.heap = heap
        self.java_options = list(java_options)
        self.properties = dict(properties or {})
        self.classpath = classpath
        saved = self._load_saved()
        if saved is not None:
            # Restarting on existing data: the quorum state and broker registration refer to
            # these ports and ids, so they must not change.
            self.node_id = int(saved["node_id"])
            self.port = int(saved["port"]) if port is None else port
            self.controller_port = int(saved["controller_port"])
            self.quorum: QuorumMode = "static" if saved["quorum"] == "static" else "dynamic"
            self.cluster_id = str(saved["cluster_id"])
            self.voters = [Voter(int(v[0]), int(v[1]), str(v[2])) for v in saved["voters"]]
            return
        if port is None or controller_port is None:
            free = free_ports(2)
            port = free[0] if port is None else port
            controller_port = free[1] if controller_port is None else controller_port
        self.node_id, self.port, self.controller_port = node_id, port, controller_port
        self.quorum = quorum
        self.cluster_id = cluster_id or random_id()
        if voters is None:
            voters = [Voter(node_id, controller_port, random_id())]
        if not any(v.node_id == node_id and v.port == controller_port for v in voters):
            raise ValueError(f"node {node_id} (controller port {controller_port}) not in voters")
        self.voters = list(voters)

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT``, for ``bootstrap.servers``."""
        return f"{HOST}:{self.port}"

    @property
    def name(self) -> str:
        """The node's program name: ``kafka-<id>``."""
        return f"kafka-{self.node_id}"

    def is_formatted(self) -> bool:
        """Whether the storage has been formatted (``meta.properties`` exists)."""
        return (self.data_dir / "meta.properties").is_file()

    def component(self, ready: Callable[[], bool], group: str | None = None) -> Component:
        """The node as a supervisord program; ``setup`` writes the config and formats."""
        return Component(name=self.name, command=[*self._java(), "kafka.Kafka",
                                                  str(self.config_file)],
                         ready=ready, log=self.log_file, cwd=self.base_dir, setup=self.prepare,
                         group=group, stop_wait=30)

    def prepare(self) -> None:
        """Write ``server.properties``; format the storage on first use."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        lines = [f"{key}={value}" for key, value in self._server_properties().items()]
        self.config_file.write_text("# generated by devstack; rewritten on every start\n"
                                    + "\n".join(lines) + "\n")
        if not self.is_formatted():
            self._format()

    def _java(self) -> list[str]:
        classpath = self.classpath or ensure_classpath()
        return [
            find_java(), f"-Xmx{self.heap}", "-Xms64m", "-XX:+UseSerialGC",
            # C1 only: the broker gets ready sooner and several JVMs share 2 cores better.
            "-XX:TieredStopAtLevel=1", "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            "-Dlog4j2.shutdownHookEnabled=false",  # Kafka's own hook logs the shutdown
            f"-Dlog4j2.configurationFile={log4j2_config()}",
            f"-Dkafka.logs.dir={self.base_dir / 'logs'}",
            *self.java_options, "-cp", f"{classpath}/*",
        ]

    def _server_properties(self) -> dict[str, str]:
        replicas = min(3, len(self.voters))
        min_isr = max(1, replicas - 1)
        partitions = 1 if len(self.voters) == 1 else 3
        endpoints = f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}"
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
            # Three nodes starting with the rest of the stack on 2 busy cores: a broker whose
            # quorum takes longer than the default 60 s to catch it up would give up and exit.
            "initial.broker.registration.timeout.ms": 180_000,
            # Fewer threads and a small log-cleaner buffer (default 128 MiB) for small heaps.
            "num.network.threads": 2,
            "num.io.threads": 4,
            "num.recovery.threads.per.data.dir": 1,
            "log.cleaner.dedupe.buffer.size": 16 * 1024 * 1024,
        }
        voters = ",".join(f"{v.node_id}@{HOST}:{v.port}" for v in self.voters)
        if self.quorum == "static":
            props["controller.quorum.voters"] = voters
        else:
            props["controller.quorum.bootstrap.servers"] = ",".join(
                f"{HOST}:{v.port}" for v in self.voters)
        props.update(self.properties)
        return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in props.items()}

    def _format(self) -> None:
        cmd = [*self._java(), "kafka.tools.StorageTool", "format", "--cluster-id",
               self.cluster_id, "--config", str(self.config_file)]
        if self.quorum == "dynamic":
            if len(self.voters) == 1:
                cmd.append("--standalone")
            else:
                cmd += ["--initial-controllers", ",".join(
                    f"{v.node_id}@{HOST}:{v.port}:{v.directory_id}" for v in self.voters)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.base_dir,
                              check=False)
        if proc.returncode != 0:
            raise DevstackError(f"formatting Kafka storage in {self.data_dir} failed "
                                f"(exit {proc.returncode}):\n{tail(proc.stdout + proc.stderr)}")
        write_json(self.base_dir / NODE_FILE, {
            "node_id": self.node_id, "port": self.port, "controller_port": self.controller_port,
            "quorum": self.quorum, "cluster_id": self.cluster_id,
            "voters": [list(v) for v in self.voters]})

    def _load_saved(self) -> dict[str, Any] | None:
        path = self.base_dir / NODE_FILE
        if not path.is_file():
            return None
        data: dict[str, Any] = json.loads(path.read_text())
        return data
