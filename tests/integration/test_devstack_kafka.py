"""The throwaway Kafka brokers of devstack: real JVMs under supervisord, no Docker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.kafka import KafkaBroker, KafkaCluster, broker_ids
from devstack.supervisor import Supervisor

ck = pytest.importorskip("confluent_kafka")
admin_mod = pytest.importorskip("confluent_kafka.admin")
ROOT = Path(__file__).resolve().parents[2]


def _produce(bootstrap: str, topic: str, *messages: tuple[bytes, bytes]) -> None:
    producer = ck.Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    errors: list[object] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            errors.append(err)

    for key, value in messages:
        producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
    assert producer.flush(30) == 0, "messages still queued after 30s"
    assert errors == []


def _consume(bootstrap: str, topic: str, group: str, count: int) -> list[tuple[bytes, bytes]]:
    consumer = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        got: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + 30
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append((msg.key(), msg.value()))
        if got:
            consumer.commit(asynchronous=False)
        return got
    finally:
        consumer.close()


def _committed(bootstrap: str, topic: str, group: str) -> int:
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        (tp,) = consumer.committed([ck.TopicPartition(topic, 0)], timeout=15)
        return int(tp.offset)
    finally:
        consumer.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    node = KafkaBroker(tmp_path / "kafka", heap="384m")
    t0 = time.monotonic()
    node.start()
    print(f"broker format+start took {time.monotonic() - t0:.2f}s on {node.bootstrap_servers}")
    try:
        yield node
    finally:
        node.kill()


def test_messages_survive_restart_and_crash(broker: KafkaBroker) -> None:
    bootstrap = broker.bootstrap_servers
    topic = f"devstack-{uuid.uuid4().hex[:8]}"  # auto-created on first produce
    _produce(bootstrap, topic, (b"k1", b"hello"))
    assert _consume(bootstrap, topic, "g1", 1) == [(b"k1", b"hello")]

    # Clean restart on the same data dir and ports: no re-format, data and offsets kept.
    broker.stop()
    assert not broker.is_running()
    t0 = time.monotonic()
    broker.start()
    print(f"restart took {time.monotonic() - t0:.2f}s")
    assert broker.bootstrap_servers == bootstrap
    assert _committed(bootstrap, topic, "g1") == 1
    _produce(bootstrap, topic, (b"k2", b"after restart"))
    assert _consume(bootstrap, topic, "g1", 1) == [(b"k2", b"after restart")]

    # Crash (SIGKILL) and recover: acknowledged messages are still there.
    broker.kill()
    assert not broker.is_running()
    broker.start()
    assert _consume(bootstrap, topic, "g2", 2) == [(b"k1", b"hello"), (b"k2", b"after restart")]
    assert broker.log_file.read_text().count("Kafka Server started") == 3


def test_pause_and_resume(broker: KafkaBroker) -> None:
    assert broker_ids(broker.bootstrap_servers) == {1}
    broker.pause()
    try:
        with pytest.raises(TimeoutError):  # the port accepts but nothing answers
            broker_ids(broker.bootstrap_servers, timeout=1.0)
    finally:
        broker.resume()
    assert broker_ids(broker.bootstrap_servers) == {1}


def test_killed_broker_leaves_nothing_running(broker: KafkaBroker) -> None:
    """Its own supervisord reaps the JVM and exits with it."""
    pid = broker.pid
    assert pid is not None
    broker.kill()
    assert not broker.is_running()
    assert not broker.supervisor.alive()
    assert not Path(f"/proc/{pid}").exists() or b"kafka.Kafka" not in Path(
        f"/proc/{pid}/cmdline").read_bytes()


def test_cli_start_status_stop(tmp_path: Path) -> None:
    base = tmp_path / "cli"
    cmd = [sys.executable, "-m", "devstack", "kafka"]
    start = subprocess.run(
        [*cmd, "start", "--dir", str(base), "--heap", "384m"],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert start.returncode == 0, start.stderr
    bootstrap = start.stdout.strip()
    try:
        assert bootstrap.startswith("127.0.0.1:")
        status = subprocess.run(
            [*cmd, "status", "--dir", str(base)], capture_output=True, text=True, check=False,
            cwd=ROOT,
        )
        assert status.returncode == 0, status.stdout
        _produce(bootstrap, "cli-topic", (b"k", b"v"))
        assert _consume(bootstrap, "cli-topic", "g", 1) == [(b"k", b"v")]
    finally:
        stop = subprocess.run(
            [*cmd, "stop", "--dir", str(base)], capture_output=True, text=True, check=False,
            cwd=ROOT,
        )
    assert stop.returncode == 0, stop.stderr
    status = subprocess.run(
        [*cmd, "status", "--dir", str(base)], capture_output=True, text=True, check=False,
        cwd=ROOT,
    )
    assert status.returncode == 3
    assert not Supervisor(base).alive(), "supervisord outlived `kafka stop`"
    # The JVM is gone: nothing of ours still holds the broker's server.properties open.
    config = str(base / "server.properties")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            assert config.encode() not in fh.read()


def test_cluster_survives_node_crash(tmp_path: Path) -> None:
    cluster = KafkaCluster(tmp_path / "cluster", 3, heap="256m")
    t0 = time.monotonic()
    cluster.start()
    print(f"3-node cluster start took {time.monotonic() - t0:.2f}s")
    try:
        bootstrap = cluster.bootstrap_servers
        admin = admin_mod.AdminClient({"bootstrap.servers": bootstrap})
        futures = admin.create_topics(
            [admin_mod.NewTopic("replicated", 1, 3, config={"min.insync.replicas": "2"})]
        )
        futures["replicated"].result(30)
        _produce(bootstrap, "replicated", (b"a", b"1"))

        cluster.kill_node(1)
        _produce(bootstrap, "replicated", (b"b", b"2"))  # acks=all with 2 of 3 in sync
        assert _consume(bootstrap, "replicated", "g", 2) == [(b"a", b"1"), (b"b", b"2")]

        cluster.start_node(1)
        assert broker_ids(cluster.node(1).bootstrap_servers) == {1, 2, 3}
    finally:
        cluster.stop()
    assert not any(node.is_running() for node in cluster.nodes)
    assert not cluster.supervisor.alive()
