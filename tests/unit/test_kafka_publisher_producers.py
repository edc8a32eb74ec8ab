"""The relay's Kafka publisher: which producer (connection) carries which records.

A broker answers the requests of one connection in order, and a producer sends a broker the
batches of every partition it leads in one request. A revocation is written to every partition
so that the one partition without a dead broker acknowledges at once; that only works if no
request for that partition also carries a partition that waits for the dead broker. So each
partition of a fan-out topic has a producer of its own, and each other topic one producer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import pytest

from authloyalty.platform import kafka
from authloyalty.platform.bus import Envelope
from authloyalty.platform.settings import KafkaSettings

PARTITIONS = 3


class FakeProducer:
    """Records what it is asked to produce and acknowledges every record at once."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.records: list[tuple[str, int | None]] = []

    def list_topics(self, topic: str, timeout: float) -> Any:
        return SimpleNamespace(topics={topic: SimpleNamespace(
            partitions={p: object() for p in range(PARTITIONS)})})

    def produce(self, topic: str, *, value: bytes, key: bytes, headers: Any,
                on_delivery: Callable[[Any, Any], None], partition: int | None = None) -> None:
        self.records.append((topic, partition))
        on_delivery(None, None)

    def poll(self, timeout: float) -> int:
        time.sleep(timeout)
        return 0

    def flush(self, timeout: float) -> int:
        return 0


class FakeCodec:
    """Two kinds of event: ``fan`` goes to every partition of topic ``sessions``, ``one`` by
    key to topic ``registration``."""

    def topics(self) -> list[str]:
        return ["registration", "sessions"]

    def fan_out_topics(self) -> set[str]:
        return {"sessions"}

    def topic_for(self, event: Any) -> str:
        return "sessions" if event == "fan" else "registration"

    def encode(self, envelope: Envelope[Any]) -> tuple[str, bytes, bytes, list[Any]]:
        return self.topic_for(envelope.event), b"key", b"value", []

    def close(self) -> None:
        pass


@pytest.fixture
def producers(monkeypatch: pytest.MonkeyPatch) -> list[FakeProducer]:
    made: list[FakeProducer] = []

    def make(conf: dict[str, Any]) -> FakeProducer:
        made.append(FakeProducer(conf))
        return made[-1]

    monkeypatch.setattr(kafka, "Producer", make)
    return made


def _envelope(kind: str) -> Envelope[Any]:
    return Envelope(kind, id=uuid4())


async def test_each_partition_of_a_fan_out_topic_has_a_producer_of_its_own(
        producers: list[FakeProducer]) -> None:
    publisher = kafka.KafkaPublisher(KafkaSettings(), FakeCodec())  # type: ignore[arg-type]
    try:
        publisher.prepare()
        results = await publisher.publish([_envelope("fan"), _envelope("one"),
                                           _envelope("fan"), _envelope("one")])
    finally:
        publisher.close()
    assert results == [None, None, None, None]
    carrying = [sorted(set(p.records)) for p in producers if p.records]
    # Every revocation went to all three partitions, each partition through one producer
    # that carries nothing else; the keyed topic has one producer for all its records.
    sessions = [c for c in carrying if c[0][0] == "sessions"]
    assert sorted(sessions) == [[("sessions", p)] for p in range(PARTITIONS)]
    assert [c for c in carrying if c[0][0] == "registration"] == [[("registration", None)]]
    for producer in producers:
        if producer.records and producer.records[0][0] == "sessions":
            assert len(producer.records) == 2  # one copy of each of the two revocations
