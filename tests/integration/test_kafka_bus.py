"""The Kafka bus against a real broker: wire format, compatibility, dead letters, retries."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message_factory import GetMessageClass
from prometheus_client import REGISTRY

from authloyalty.bootstrap import EmbeddedSystem
from authloyalty.events import UserRegistered
from authloyalty.loyalty.domain import Principal
from authloyalty.loyalty.events import LOYALTY_EVENTS
from authloyalty.platform.bus import Envelope
from authloyalty.platform.database import DatabaseUnavailable
from authloyalty.platform.kafka import KafkaEventConsumer, KafkaPublisher
from authloyalty.platform.kafka_codec import EventDecoder, EventEncoder
from authloyalty.platform.settings import KafkaSettings
from authloyalty.rpc.registration.v1.registration_pb2 import RegistrationMessage
from authloyalty.sso.events import SSO_EVENTS


def read_all(settings: KafkaSettings, topic: str, count: int, timeout: float = 20.0
             ) -> list[Any]:
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers,
                         "group.id": f"reader-{uuid4().hex}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            found.append(message)
    consumer.close()
    return found


def compiled(source: str, name: str, work: Path) -> descriptor_pb2.FileDescriptorProto:
    """``.proto`` source compiled by protoc (grpc_tools), as a file descriptor."""
    from grpc_tools import protoc

    (work / name).parent.mkdir(parents=True, exist_ok=True)
    (work / name).write_text(source)
    out = work / "set.pb"
    assert protoc.main(["protoc", f"-I{work}", f"--descriptor_set_out={out}", name]) == 0
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return files.file[0]


async def test_relay_output_is_confluent_protobuf_readable_from_the_registry_schema(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    registry = SchemaRegistryClient.new_client({"url": kafka_settings.schema_registry_url})
    publisher = KafkaPublisher(kafka_settings, EventEncoder(kafka_settings, SSO_EVENTS, registry))
    user_id = str(uuid4())
    event = Envelope(UserRegistered(UUID(user_id)))
    try:
        assert await publisher.publish([event]) == [None]
        registered = registry.get_schema(struct.unpack(">I", read_all(
            kafka_settings, kafka_settings.registration_topic, 1)[0].value()[1:5])[0])
        latest = registry.get_latest_version(f"{kafka_settings.registration_topic}-value")
    finally:
        publisher.close()  # and the registry client with it
    [message] = read_all(kafka_settings, kafka_settings.registration_topic, 1)
    value = message.value()
    assert message.key() == user_id.encode()
    assert value[0] == 0  # magic byte
    schema_id = struct.unpack(">I", value[1:5])[0]
    # A plain deserializer that knows only what the registry holds under that id.
    assert latest.schema_id == schema_id
    pool = DescriptorPool()  # nothing of ours in it: only the registry's schema
    pool.Add(compiled(registered.schema_str, "registration.v1/registration.proto", tmp_path))
    message_class = GetMessageClass(
        pool.FindMessageTypeByName("Registration.v1.RegistrationMessage"))
    decoded = ProtobufDeserializer(message_class, {"use.deprecated.format": False})(
        value, SerializationContext(message.topic(), MessageField.VALUE))
    assert (decoded.uuid, decoded.type) == (user_id, "registration")
    headers = dict(message.headers())
    assert headers["event-id"] == str(event.id).encode()
    assert headers["traceparent"].startswith(b"00-")


@pytest.fixture
async def consuming(system: EmbeddedSystem, kafka_settings: KafkaSettings
                    ) -> AsyncIterator[Callable[..., KafkaEventConsumer]]:
    """Start a consumer feeding loyalty's handlers; stopped at the end of the test."""
    running: list[tuple[KafkaEventConsumer, asyncio.Task[None]]] = []

    def start(handler: Any = None) -> KafkaEventConsumer:
        consumer = KafkaEventConsumer(
            kafka_settings, EventDecoder(kafka_settings, LOYALTY_EVENTS),
            {UserRegistered: handler or system.loyalty.handlers.user_registered},
            [kafka_settings.registration_topic], kafka_settings.consumer_group,
            max_backoff_seconds=0.2)
        running.append((consumer, asyncio.create_task(consumer.run())))
        return consumer

    yield start
    for consumer, task in running:
        consumer.stop()
        await asyncio.wait_for(task, 20)


def go_style_record(schema_id: int, user_id: str, kind: str = "registration") -> bytes:
    """Bytes exactly as the original Go producer framed them (original-system.md §2.7, §5)."""
    payload = RegistrationMessage(uuid=user_id, type=kind).SerializeToString()
    return b"\x00" + struct.pack(">I", schema_id) + b"\x00" + payload


async def balance(system: EmbeddedSystem, user_id: str) -> int | None:
    async with system.loyalty.service._uow() as uow:
        account = await uow.accounts.get(UUID(user_id))
    return account.balance if account else None


async def eventually(check: Callable[[], Any], within: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


async def test_records_of_the_original_go_producer_are_accepted_once(
        system: EmbeddedSystem, kafka_settings: KafkaSettings,
        consuming: Callable[..., KafkaEventConsumer]) -> None:
    consuming()
    user_id = str(uuid4())
    producer = Producer({"bootstrap.servers": kafka_settings.bootstrap_servers})
    headers = [("request-Id", b"header values are binary"),
               ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
    for _ in range(2):  # the original re-sent nothing, but a redelivery must change nothing
        producer.produce(kafka_settings.registration_topic, key=user_id.encode(),
                         value=go_style_record(1, user_id), headers=headers)
    producer.flush(10)

    async def credited() -> bool:
        return await balance(system, user_id) == 100

    await eventually(credited)
    await asyncio.sleep(1.0)
    assert await balance(system, user_id) == 100
    owner = Principal(UUID(user_id), uuid4(), False)
    page = await system.loyalty.service.history(owner, owner.user_id, 10, None)
    assert [(e.kind, e.amount, e.comment) for e in page.items] == [
        ("deposit", 100, "registration")]


async def test_poison_records_go_to_the_dead_letter_topic_and_the_partition_moves_on(
        system: EmbeddedSystem, kafka_settings: KafkaSettings,
        consuming: Callable[..., KafkaEventConsumer]) -> None:
    consuming()
    good = str(uuid4())
    producer = Producer({"bootstrap.servers": kafka_settings.bootstrap_servers})
    topic = kafka_settings.registration_topic
    producer.produce(topic, key=b"garbage", value=b"\x07not protobuf at all")
    producer.produce(topic, key=b"bad-uuid", value=go_style_record(1, "not-a-uuid"))
    producer.produce(topic, key=good.encode(), value=go_style_record(1, good))
    producer.flush(10)

    async def credited() -> bool:
        return await balance(system, good) == 100

    await eventually(credited)
    dead = read_all(kafka_settings, topic + ".dlq", 2)
    assert sorted(m.key() for m in dead) == [b"bad-uuid", b"garbage"]
    for message in dead:
        headers = dict(message.headers())
        assert headers["dlq-original-topic"] == topic.encode()
        assert headers["dlq-error"]


def _applied(topic: str) -> tuple[float, float]:
    """Count and sum of ``authloyalty_event_apply_seconds`` for ``topic``."""
    def sample(suffix: str) -> float:
        return REGISTRY.get_sample_value(f"authloyalty_event_apply_seconds_{suffix}",
                                         {"topic": topic}) or 0.0
    return sample("count"), sample("sum")


async def test_apply_delay_is_timed_from_the_records_timestamp_for_handled_records_only(
        system: EmbeddedSystem, kafka_settings: KafkaSettings,
        consuming: Callable[..., KafkaEventConsumer]) -> None:
    consuming()
    topic = kafka_settings.registration_topic
    count, total = _applied(topic)
    user_id = str(uuid4())
    producer = Producer({"bootstrap.servers": kafka_settings.bootstrap_servers})
    producer.produce(topic, key=b"garbage", value=b"\x07not protobuf at all")  # dead-lettered
    # produced "3 s ago": an operator would read a 3 s delay between the relay and the effect
    producer.produce(topic, key=user_id.encode(), value=go_style_record(1, user_id),
                     timestamp=int((time.time() - 3.0) * 1000))
    producer.flush(10)

    async def credited() -> bool:
        return await balance(system, user_id) == 100

    async def observed() -> bool:  # the observation follows the commit
        return _applied(topic)[0] >= count + 1

    await eventually(credited)
    await eventually(observed)
    after_count, after_total = _applied(topic)
    assert after_count == count + 1  # the dead-lettered record is not counted
    assert 3.0 <= after_total - total < 30.0


async def test_database_outage_is_retried_without_loss_or_dead_letter(
        system: EmbeddedSystem, kafka_settings: KafkaSettings,
        consuming: Callable[..., KafkaEventConsumer]) -> None:
    failures = {"left": 6}  # more than max_attempts: transient errors never dead-letter

    async def flaky(event: Envelope[UserRegistered]) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise DatabaseUnavailable()
        await system.loyalty.handlers.user_registered(event)

    consuming(flaky)
    user_id = str(uuid4())
    producer = Producer({"bootstrap.servers": kafka_settings.bootstrap_servers})
    producer.produce(kafka_settings.registration_topic, key=user_id.encode(),
                     value=go_style_record(1, user_id))
    producer.flush(10)

    async def credited() -> bool:
        return await balance(system, user_id) == 100

    await eventually(credited, 30)
    assert failures["left"] == 0
    assert read_all(kafka_settings, kafka_settings.registration_topic + ".dlq", 1, 3) == []
