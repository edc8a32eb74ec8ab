"""Events ↔ Kafka records: the tables that route them, and Confluent-framed protobuf values.

Each service declares a table: the producer one :class:`Outgoing` row per event it publishes
(topic, key, protobuf message), the consumer one :class:`Incoming` row per topic it reads
(protobuf message, and how it becomes an event). This module holds the machinery only.

Values use the Confluent wire format (magic byte 0, 4-byte schema id, message indexes,
protobuf), subject ``<topic>-value`` (TopicNameStrategy), exactly as the original Go producer.
On first use of a subject the encoder gives it the ``BACKWARD`` compatibility rule (unless it
has another rule than ``NONE`` already) and registers the message's file as ``.proto`` text
(:mod:`~authloyalty.platform.proto_text`): an incompatible change of a ``.proto`` is refused by
the registry (409) and its events stay in the outbox until it is resolved.
Headers: ``event-id``, ``event-type`` (the event's name) and a W3C ``traceparent``.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from uuid import UUID

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf.message import Message

from authloyalty.platform.bus import Envelope, IntegrationEvent, PermanentEventError
from authloyalty.platform.proto_text import proto_source
from authloyalty.platform.settings import KafkaSettings

HEADER_EVENT_ID = "event-id"
HEADER_EVENT_TYPE = "event-type"
HEADER_TRACEPARENT = "traceparent"
# Records without an event id (e.g. from the original producer) get one derived from their
# position, so a redelivery of the same record is still recognised.
_POSITION_NAMESPACE = UUID("4f7a3c1e-9b2d-4d6e-8a51-0c3b7e9f2a64")
_SERDE_CONF = {"use.deprecated.format": False}
# Consumers with the new schema can read what producers with the previous one wrote.
COMPATIBILITY = "BACKWARD"
_SUBJECT_NOT_FOUND = 40401
# After the registry failed a subject, its other events fail at once for this long instead of
# each waiting for the registry again (the outbox retries them with its backoff).
_REGISTRY_RETRY_AFTER_SECONDS = 1.0

Headers = list[tuple[str, str | bytes | None]]
E = TypeVar("E", bound=IntegrationEvent)
M = TypeVar("M", bound=Message)
TopicOf = Callable[[KafkaSettings], str]


@dataclass(frozen=True)
class Outgoing(Generic[E, M]):
    """How a producer publishes ``event``: on which topic, under which key, as which message.

    ``every_partition``: written to every partition of its topic and published once the first
    copy is acknowledged (a consumer reading every partition sees it even while a partition
    has no leader)."""

    event: type[E]
    topic: TopicOf
    key: Callable[[E], str]
    message: type[M]
    to_message: Callable[[E], M]
    every_partition: bool = False


@dataclass(frozen=True)
class Incoming(Generic[E, M]):
    """How a consumer reads ``topic``: the message its records carry and the event it makes
    of one (given the record's key); raising :class:`PermanentEventError` refuses it."""

    topic: TopicOf
    message: type[M]
    to_event: Callable[[M, str], E]


class OutgoingTable:
    """A producer's :class:`Outgoing` rows, by event type and by name."""

    def __init__(self, *rows: Outgoing[Any, Any]) -> None:
        self.rows = rows
        self._by_type = {row.event: row for row in rows}
        self._by_name = {row.event.name: row.event for row in rows}

    def row(self, event: IntegrationEvent) -> Outgoing[Any, Any]:
        """The row of ``event``'s type."""
        try:
            return self._by_type[type(event)]
        except KeyError:
            raise ValueError(f"no topic for event type {event.name!r}") from None

    def key(self, event: IntegrationEvent) -> str:
        """The record key of ``event``."""
        return str(self.row(event).key(event))

    def event_type(self, name: str) -> type[IntegrationEvent]:
        """The event type called ``name``."""
        return self._by_name[name]


@dataclass(frozen=True)
class Record:
    """A record as read from Kafka."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, str | bytes | None]]

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` as text."""
        found = None
        for key, value in self.headers:
            if key.lower() == name.lower() and value is not None:
                found = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        return found


def new_traceparent(event_id: UUID) -> str:
    """A W3C traceparent whose trace id is the event id (until tracing supplies one)."""
    return f"00-{event_id.hex}-{os.urandom(8).hex()}-01"


class EventEncoder:
    """Topic, key, headers and framed value of the events in a producer's table."""

    def __init__(self, settings: KafkaSettings, table: OutgoingTable,
                 registry: SchemaRegistryClient) -> None:
        self._settings = settings
        self._table = table
        self._registry = registry
        self._schema_ids: dict[str, int] = {}  # by subject
        self._failures: dict[str, tuple[float, Exception]] = {}  # by subject: when, what
        self._lock = threading.Lock()

    def close(self) -> None:
        """Release the registry client's connections."""
        self._registry.close()

    def topics(self) -> list[str]:
        """Every topic this producer writes to."""
        return [row.topic(self._settings) for row in self._table.rows]

    def fan_out_topics(self) -> set[str]:
        """The topics whose records go to every partition."""
        return {row.topic(self._settings) for row in self._table.rows if row.every_partition}

    def topic_for(self, event: IntegrationEvent) -> str:
        """The topic that carries ``event``."""
        return self._table.row(event).topic(self._settings)

    def schema_id(self, topic: str, message: type[Message]) -> int:
        """The registry's id of ``message``'s schema under ``<topic>-value``; the first call
        sets the subject's rule and registers the schema (raises while the registry cannot be
        reached or refuses it; later calls answer from memory)."""
        subject = f"{topic}-value"
        found = self._schema_ids.get(subject)
        if found is None:
            with self._lock:
                found = self._schema_ids.get(subject)
                if found is None:
                    found = self._register(subject, message)
        return found

    def _register(self, subject: str, message: type[Message]) -> int:
        failed = self._failures.get(subject)
        if failed is not None and time.monotonic() - failed[0] < _REGISTRY_RETRY_AFTER_SECONDS:
            raise failed[1]
        try:
            found = register(self._registry, subject, message)
        except Exception as exc:
            self._failures[subject] = (time.monotonic(), exc)
            raise
        self._failures.pop(subject, None)
        self._schema_ids[subject] = found
        return found

    def encode(self, envelope: Envelope[Any]) -> tuple[str, bytes, bytes, Headers]:
        """Topic, key, value and headers of ``envelope``."""
        event = envelope.event
        row = self._table.row(event)
        topic = row.topic(self._settings)
        message = row.to_message(event)
        value = frame(self.schema_id(topic, row.message), message)
        headers: Headers = [
            (HEADER_EVENT_ID, str(envelope.id).encode()),
            (HEADER_EVENT_TYPE, event.name.encode()),
            (HEADER_TRACEPARENT, str(envelope.headers.get(HEADER_TRACEPARENT)
                                     or new_traceparent(envelope.id)).encode()),
        ]
        return topic, row.key(event).encode(), value, headers


def register(registry: SchemaRegistryClient, subject: str, message: type[Message]) -> int:
    """Give ``subject`` the :data:`COMPATIBILITY` rule unless it has another one, register
    ``message``'s file as ``.proto`` text under it (idempotent) and return the schema id.

    Apicurio answers ``NONE`` (its global default) for a subject without a rule of its own, a
    Confluent registry 404: both count as no rule (a deliberate ``NONE`` is replaced too)."""
    if type(registry).__name__ != "MockSchemaRegistryClient":  # ``mock://`` keeps no rules
        try:
            level: str | None = registry.get_compatibility(subject)
        except SchemaRegistryError as exc:
            if exc.error_code != _SUBJECT_NOT_FOUND and exc.http_status_code != 404:
                raise
            level = None
        if level in (None, "NONE"):
            registry.set_compatibility(subject_name=subject, level=COMPATIBILITY)
    source = proto_source(message.DESCRIPTOR.file)
    return int(registry.register_schema(subject, Schema(source, "PROTOBUF")))


def frame(schema_id: int, message: Message) -> bytes:
    """``message`` in the Confluent wire format: magic byte, schema id, message indexes."""
    return (b"\x00" + schema_id.to_bytes(4, "big") + _message_indexes(message)
            + message.SerializeToString())


def _message_indexes(message: Message) -> bytes:
    """The path of the message type in its file: ``[0]`` (the first top-level message) is
    the single byte 0, otherwise the count and each index as zig-zag varints."""
    path: list[int] = []
    descriptor: Any = message.DESCRIPTOR
    while descriptor.containing_type is not None:
        parent = descriptor.containing_type
        path.insert(0, list(parent.nested_types).index(descriptor))
        descriptor = parent
    path.insert(0, list(descriptor.file.message_types_by_name.values()).index(descriptor))
    if path == [0]:
        return b"\x00"
    return b"".join(_zigzag_varint(n) for n in [len(path), *path])


def _zigzag_varint(value: int) -> bytes:
    number = (value << 1) ^ (value >> 63)
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


class EventDecoder:
    """The events carried by the records of the topics in a consumer's table."""

    def __init__(self, settings: KafkaSettings, table: Sequence[Incoming[Any, Any]]) -> None:
        self._rows = {row.topic(settings): (row, ProtobufDeserializer(row.message, _SERDE_CONF))
                      for row in table}

    def decode(self, record: Record) -> Envelope[Any]:
        """The event carried by ``record``; :class:`PermanentEventError` if it cannot be read."""
        if record.value is None:
            raise PermanentEventError("record has no value")
        found = self._rows.get(record.topic)
        if found is None:
            raise PermanentEventError(f"no event is carried on topic {record.topic!r}")
        row, deserialize = found
        context = SerializationContext(record.topic, MessageField.VALUE)
        headers = {HEADER_TRACEPARENT: tp} if (tp := record.header(HEADER_TRACEPARENT)) else {}
        key = record.key.decode("utf-8", "replace") if record.key else ""
        try:
            message = deserialize(record.value, context)
            if message is None:
                raise PermanentEventError("empty record")
            event = row.to_event(message, key)
        except PermanentEventError:
            raise
        except Exception as exc:  # undecodable bytes: no retry will ever help
            raise PermanentEventError(f"cannot decode record: {exc}") from exc
        return Envelope(event, id=self._event_id(record), headers=headers)

    @staticmethod
    def _event_id(record: Record) -> UUID:
        raw = record.header(HEADER_EVENT_ID)
        if raw:
            try:
                return UUID(raw)
            except ValueError:
                pass
        return uuid.uuid5(_POSITION_NAMESPACE,
                          f"{record.topic}/{record.partition}/{record.offset}")
