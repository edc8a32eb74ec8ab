"""Throwaway Apache Kafka (KRaft) brokers for tests, benchmarks and the local stack.

Each node (:class:`~devstack.kafka_node.KafkaNode`: config, storage, command line) runs as a
supervisord program; a :class:`KafkaBroker` alone has its own supervisord in its directory, the
nodes of a :class:`KafkaCluster` share one (programs ``kafka:kafka-<id>``, stopped together).
A node is ready when confluent-kafka's ``AdminClient`` gets metadata from it listing the
expected live brokers.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from devstack.common import DevstackError, free_ports, tail_file, write_json
from devstack.components import Component
from devstack.kafka_jars import ensure_classpath
from devstack.kafka_node import NODE_FILE, KafkaNode, QuorumMode, Voter, random_id
from devstack.supervisor import Supervisor

__all__ = ["KafkaBroker", "KafkaCluster", "Voter", "broker_ids", "warm_up"]

CLUSTER_FILE = "kafka-cluster.json"
_QUIET = {"log_level": 0, "reconnect.backoff.ms": 100, "reconnect.backoff.max.ms": 500}


def admin_client(bootstrap_servers: str) -> Any:
    """An AdminClient that retries connections quickly and logs nothing."""
    return AdminClient({"bootstrap.servers": bootstrap_servers, **_QUIET})


def broker_ids(bootstrap_servers: str, timeout: float = 2.0, admin: Any = None) -> set[int]:
    """The ids of the live brokers that the cluster at ``bootstrap_servers`` reports.

    Raises ``TimeoutError`` when no metadata arrives within ``timeout`` seconds.
    """
    client = admin if admin is not None else admin_client(bootstrap_servers)
    try:
        metadata = client.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise TimeoutError(f"no metadata from {bootstrap_servers}: {exc}") from exc
    return set(metadata.brokers)


def brokers_ready(bootstrap_servers: str, expected: set[int]) -> Any:
    """A readiness check: the node at ``bootstrap_servers`` lists every id in ``expected``."""
    admin = admin_client(bootstrap_servers)

    def ready() -> bool:
        return expected <= broker_ids(bootstrap_servers, 1.0, admin)

    return ready


class KafkaBroker(KafkaNode):
    """One node with its lifecycle: start (format on first use), stop, kill, pause, resume.

    The data stays across stop/kill and :meth:`start`, and so do the ports and ids.
    """

    def __init__(self, base_dir: Path, port: int | None = None, *,
                 supervisor: Supervisor | None = None, group: str | None = None,
                 expected: Sequence[int] = (), **node: Any) -> None:
        super().__init__(base_dir, port, **node)
        self._own_supervisor = supervisor is None
        self.supervisor = supervisor or Supervisor(self.base_dir)
        self._group = group
        self._expected = {self.node_id, *expected}
        self._component: Component | None = None

    def as_component(self) -> Component:
        """This node as a stack component (ready once it lists every expected node)."""
        if self._component is None:  # resolving java and the jars takes a moment
            self._component = self.component(
                brokers_ready(self.bootstrap_servers, self._expected), self._group)
        return self._component

    @property
    def pid(self) -> int | None:
        """The JVM's pid while it runs."""
        return self.supervisor.pid(self.as_component()) if self.is_running() else None

    def is_running(self) -> bool:
        """Whether the JVM is alive (possibly paused)."""
        return self.supervisor.alive() and self.supervisor.is_running(self.as_component())

    def start(self, timeout: float = 60) -> Self:
        """Format on first use, start the JVM and wait until it serves metadata."""
        deadline = time.monotonic() + timeout
        self.launch()
        self.wait_ready(max(deadline - time.monotonic(), 0.0))
        return self

    def launch(self) -> None:
        """Format if needed and start the JVM without waiting (see :meth:`wait_ready`)."""
        if self.is_running():
            raise DevstackError(f"{self!r} is already running")
        component = self.as_component()
        self.prepare()
        if self._own_supervisor:
            self.supervisor.ensure([component])
        self.supervisor.start(component)

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until this node answers metadata listing itself (and the expected nodes)."""
        ready = self.as_component().ready
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while True:
            if not self.is_running():
                raise DevstackError(f"Kafka node {self.node_id} exited during startup; "
                                    f"{self.log_file}:\n{tail_file(self.log_file, 40)}")
            try:
                if ready():
                    return
            except TimeoutError as exc:
                last = exc
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Kafka node {self.node_id} on {self.bootstrap_servers} not ready after "
                    f"{timeout:.0f}s (last probe error: {last!r}); {self.log_file}:\n"
                    f"{tail_file(self.log_file, 40)}")
            time.sleep(0.1)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (clean shutdown), SIGKILL after 30 s; a no-op if stopped."""
        if self._own_supervisor:
            self.supervisor.shutdown(timeout + 30)
        elif self.is_running():
            self.supervisor.stop(self.as_component())

    def kill(self) -> None:
        """SIGKILL the JVM (a crash); the data stays and :meth:`start` recovers it."""
        if self.is_running():
            self.supervisor.kill(self.as_component())
        if self._own_supervisor:
            self.supervisor.shutdown()

    def pause(self) -> None:
        """SIGSTOP the JVM: it keeps its sockets but stops answering (a hung broker)."""
        self._signal("STOP")

    def resume(self) -> None:
        """SIGCONT a paused JVM."""
        self._signal("CONT")

    def _signal(self, name: str) -> None:
        if not self.is_running():
            raise DevstackError(f"{self!r} is not running")
        self.supervisor.signal(self.as_component(), name)

    def __enter__(self) -> Self:
        return self if self.is_running() else self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"KafkaBroker(base_dir={str(self.base_dir)!r}, node_id={self.node_id}, " \
               f"port={self.port})"


class KafkaCluster:
    """``brokers`` nodes (ids 1..N) in ``base_dir/node-<id>`` under one supervisord.

    Internal and auto-created topics get replication factor min(3, N). ``quorum="dynamic"``
    formats with ``--initial-controllers`` (KIP-853), ``"static"`` uses
    ``controller.quorum.voters``. A directory used before keeps its nodes' ports and ids.
    """

    def __init__(self, base_dir: Path, brokers: int = 3, *, heap: str = "384m",
                 quorum: QuorumMode = "dynamic", ports: Sequence[int] | None = None,
                 supervisor: Supervisor | None = None, **node: Any) -> None:
        self.base_dir = Path(base_dir).absolute()
        saved_path = self.base_dir / CLUSTER_FILE
        if saved_path.is_file():
            brokers = int(json.loads(saved_path.read_text())["brokers"])
        if brokers < 1:
            raise ValueError("brokers must be >= 1")
        if ports is not None and len(ports) != brokers:
            raise ValueError(f"need {brokers} ports, got {len(ports)}")
        free = free_ports(2 * brokers)
        voters = [Voter(i + 1, free[brokers + i], random_id()) for i in range(brokers)]
        cluster_id = random_id()
        self.supervisor = supervisor or Supervisor(self.base_dir)
        ids = [v.node_id for v in voters]
        self.nodes: list[KafkaBroker] = []
        for i, voter in enumerate(voters):
            node_dir = self.base_dir / f"node-{voter.node_id}"
            port: int | None = free[i] if ports is None else ports[i]
            if ports is None and (node_dir / NODE_FILE).is_file():
                port = None  # formatted before: the node reloads its saved ports and ids
            self.nodes.append(KafkaBroker(
                node_dir, port, supervisor=self.supervisor, group="kafka", expected=ids,
                heap=heap, node_id=voter.node_id, controller_port=voter.port, voters=voters,
                quorum=quorum, cluster_id=cluster_id, **node))
        self._saved_path = saved_path

    @property
    def bootstrap_servers(self) -> str:
        """All nodes' ``127.0.0.1:PORT``, comma-separated."""
        return ",".join(node.bootstrap_servers for node in self.nodes)

    @property
    def node_ids(self) -> list[int]:
        """The nodes' ids."""
        return [node.node_id for node in self.nodes]

    def node(self, node_id: int) -> KafkaBroker:
        """The node with id ``node_id`` (1..N)."""
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)

    def components(self) -> list[Component]:
        """Every node as a stack component."""
        return [node.as_component() for node in self.nodes]

    def start(self, timeout: float = 120) -> Self:
        """Start every stopped node at once; wait until each lists all nodes as live brokers."""
        deadline = time.monotonic() + timeout
        self.base_dir.mkdir(parents=True, exist_ok=True)
        ensure_classpath()  # once, before launching several JVMs
        try:
            self.supervisor.ensure(self.components())
            for node in self.nodes:
                if not node.is_running():
                    node.launch()
            if not self._saved_path.exists():
                write_json(self._saved_path, {"brokers": len(self.nodes)})
            for node in self.nodes:
                node.wait_ready(max(deadline - time.monotonic(), 0.0))
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM every node at once (SIGKILL after 30 s), then supervisord exits."""
        self.supervisor.shutdown(timeout + 60)

    def kill(self) -> None:
        """SIGKILL every node."""
        if self.supervisor.alive():
            for node in self.nodes:
                if node.is_running():
                    self.supervisor.kill(node.as_component())
        self.supervisor.shutdown()

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

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"KafkaCluster(base_dir={str(self.base_dir)!r}, brokers={len(self.nodes)})"


WARMUP_TOPIC = "authloyalty-stack-warmup"


def warm_up(bootstrap_servers: str, timeout: float = 60.0) -> None:
    """Let a fresh cluster create and load its coordinators before the services need them.

    Kafka creates ``__transaction_state`` (which hands out idempotent producer ids) and
    ``__consumer_offsets`` on first use and then loads them; until then producers and consumer
    groups wait and retry ("coordinator load in progress"), which delays the first events by a
    second or more. One idempotent produce and one consumer-group commit take that wait out of
    the first user's requests.
    """
    quiet = {"bootstrap.servers": bootstrap_servers, "log_level": 2}
    deadline = time.monotonic() + timeout
    producer = Producer({**quiet, "enable.idempotence": True, "acks": "all"})
    producer.produce(WARMUP_TOPIC, b"warm-up")
    if producer.flush(timeout) != 0:
        raise DevstackError("Kafka warm-up: an idempotent produce did not complete")
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
        raise DevstackError("Kafka warm-up: no consumer group could commit in time")
    finally:
        consumer.close()


def open_kafka(base_dir: Path, brokers: int = 1, heap: str = "512m",
               port: int | None = None) -> KafkaBroker | KafkaCluster:
    """The broker or cluster in ``base_dir`` (created there on first start)."""
    if (base_dir / CLUSTER_FILE).exists() or brokers > 1:
        ports = None if port is None else [port + i for i in range(brokers)]
        return KafkaCluster(base_dir, brokers, heap=heap, ports=ports)
    return KafkaBroker(base_dir, port, heap=heap)
