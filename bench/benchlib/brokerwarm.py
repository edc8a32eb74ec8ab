"""Bring freshly started Kafka brokers to the speed of brokers in service.

A broker the bench has just started is a new JVM whose produce, replication and fetch paths
are not compiled yet (and only C1 compiles them, ``devstack/kafka_node.py``): a plain
producer's ``acks=all`` records reached a consumer after a median of 5.9-6.2 ms on fresh
brokers and 2.9-3.3 ms on warmed ones (``bench/event_path.py --broker-warmup 0``, and without).
A broker in service compiled them long ago. So before any measurement the brokers serve
``seconds`` of produce requests, one record each (each its own replication round), on a topic
of their own, deleted afterwards.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

TOPIC = "bench-broker-warmup"
_QUIET = {"log_level": 0}


def plain_producer(bootstrap_servers: str, **conf: Any) -> Producer:
    """A producer configured as the services' relay is where latency is concerned:
    ``acks=all``, idempotent, no linger."""
    return Producer({"bootstrap.servers": bootstrap_servers, "acks": "all",
                     "enable.idempotence": True, "linger.ms": 0, **conf})


def create_topic(admin: AdminClient, name: str, partitions: int, replicas: int,
                 min_insync: int) -> None:
    """Create ``name`` (``min.insync.replicas`` capped at ``replicas``); wait for it."""
    topic = NewTopic(name, partitions, replicas,
                     config={"min.insync.replicas": str(max(1, min(min_insync, replicas)))})
    for future in admin.create_topics([topic], request_timeout=15).values():
        future.result(15)


def warm_brokers(bootstrap_servers: str, seconds: float) -> int:
    """Produce one ``acks=all`` record at a time to every partition leader for ``seconds``;
    return how many produce requests the brokers served."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, **_QUIET})
    brokers = len(admin.list_topics(timeout=15).brokers)
    replicas = min(3, brokers)
    create_topic(admin, TOPIC, brokers, replicas, replicas - 1)
    deadline = time.monotonic() + seconds
    served = [0] * brokers
    failures: list[BaseException] = []

    def produce(partition: int) -> None:
        producer = plain_producer(bootstrap_servers, **_QUIET)
        try:
            while time.monotonic() < deadline:
                producer.produce(TOPIC, b"warm-up", partition=partition)
                if producer.flush(10) != 0:
                    raise KafkaException(f"partition {partition}: no acknowledgement in 10 s")
                served[partition] += 1
        except BaseException as exc:  # reported by the caller's thread
            failures.append(exc)

    # One thread per partition (a leader each, as the brokers spread them): three rounds in
    # flight at once, and every broker both leads and follows.
    threads = [threading.Thread(target=produce, args=(p,), name=f"broker-warmup-{p}")
               for p in range(brokers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for future in admin.delete_topics([TOPIC], request_timeout=15).values():
        future.result(15)
    if failures:
        raise RuntimeError(f"broker warm-up failed: {failures[0]!r}") from failures[0]
    return sum(served)
