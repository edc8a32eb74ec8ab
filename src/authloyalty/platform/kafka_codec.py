"""Events ↔ Kafka records: topics, keys, headers and Confluent-framed protobuf values.

Values use the Confluent wire format (magic byte 0, 4-byte schema id, message indexes,
protobuf), subject ``<topic>-value`` (TopicNameStrategy), exactly as the original Go producer.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from authloyalty.platform.events import SESSION_REVOKED, USER_REGISTERED, Event, PermanentEventError
from authloyalty.platform.settings import KafkaSettings
from authloyalty.rpc.registration.v1.registration_pb2 import RegistrationMessage
from authloyalty.rpc.session.v1.session_pb2 import SessionRevoked

HEADER_EVENT_ID = "event-id"
HEADER_EVENT_TYPE = "event-type"
HEADER_TRACEPARENT = "traceparent"
REGISTRATION_TYPE = "registration"
# Records without an event id (e.g. from the original producer) get one derived from their
# position, so a redelivery of the same record is still recognised.
_POSITION_NAMESPACE = UUID("4f7a3c1e-9b2d-4d6e-8a51-0c3b7e9f2a64")
_SERDE_CONF = {"use.deprecated.format": False}

Headers = list[tuple[str, str | bytes | None]]


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


class EventCodec:
    """Knows which topic carries which event and how its value is framed."""

    def __init__(self, settings: KafkaSettings, registry: SchemaRegistryClient | None) -> None:
        self.registration_topic = settings.registration_topic
        self.sessions_topic = settings.sessions_topic
        self._registry = registry
        self._serializers: dict[str, ProtobufSerializer] = {}
        self._registration = ProtobufDeserializer(RegistrationMessage, _SERDE_CONF)
        self._session = ProtobufDeserializer(SessionRevoked, _SERDE_CONF)

    def topic_for(self, event_type: str) -> str:
        """The topic that carries ``event_type``."""
        if event_type == USER_REGISTERED:
            return self.registration_topic
        if event_type == SESSION_REVOKED:
            return self.sessions_topic
        raise ValueError(f"no topic for event type {event_type!r}")

    def _serializer(self, event_type: str) -> ProtobufSerializer:
        if self._registry is None:
            raise RuntimeError("a Schema Registry client is needed to produce")
        if event_type not in self._serializers:
            message = RegistrationMessage if event_type == USER_REGISTERED else SessionRevoked
            self._serializers[event_type] = ProtobufSerializer(message, self._registry,
                                                               _SERDE_CONF)
        return self._serializers[event_type]

    def encode(self, event: Event) -> tuple[str, bytes, bytes, Headers]:
        """Topic, key, value and headers of ``event``."""
        topic = self.topic_for(event.type)
        message: Any
        if event.type == USER_REGISTERED:
            message = RegistrationMessage(uuid=str(event.data["user_id"]), type=REGISTRATION_TYPE)
        else:
            until = datetime.fromisoformat(str(event.data["until"]))
            message = SessionRevoked(session_id=str(event.data["session_id"]),
                                     user_id=str(event.data["user_id"]),
                                     revoked_until_unix=int(until.timestamp()),
                                     reason=str(event.data.get("reason", "")))
        value = self._serializer(event.type)(message,
                                             SerializationContext(topic, MessageField.VALUE))
        assert value is not None
        headers: Headers = [
            (HEADER_EVENT_ID, str(event.id).encode()),
            (HEADER_EVENT_TYPE, event.type.encode()),
            (HEADER_TRACEPARENT,
             str(event.headers.get(HEADER_TRACEPARENT) or new_traceparent(event.id)).encode()),
        ]
        return topic, event.key.encode(), value, headers

    def decode(self, record: Record) -> Event:
        """The event carried by ``record``; :class:`PermanentEventError` if it cannot be read."""
        if record.value is None:
            raise PermanentEventError("record has no value")
        event_id = self._event_id(record)
        context = SerializationContext(record.topic, MessageField.VALUE)
        headers = {HEADER_TRACEPARENT: tp} if (tp := record.header(HEADER_TRACEPARENT)) else {}
        key = record.key.decode("utf-8", "replace") if record.key else ""
        try:
            if record.topic == self.registration_topic:
                reg = self._registration(record.value, context)
                if reg is None or reg.type != REGISTRATION_TYPE:
                    raise PermanentEventError(f"unexpected registration type {reg and reg.type!r}")
                # The original consumer trusted the key; the payload is authoritative here,
                # the key its fallback.
                return Event(type=USER_REGISTERED, key=key, id=event_id, headers=headers,
                             data={"user_id": reg.uuid or key})
            if record.topic == self.sessions_topic:
                rev = self._session(record.value, context)
                if rev is None:
                    raise PermanentEventError("empty session record")
                until = datetime.fromtimestamp(rev.revoked_until_unix, UTC)
                return Event(type=SESSION_REVOKED, key=key, id=event_id, headers=headers,
                             data={"session_id": rev.session_id, "user_id": rev.user_id,
                                   "until": until.isoformat(), "reason": rev.reason})
        except PermanentEventError:
            raise
        except Exception as exc:  # undecodable bytes: no retry will ever help
            raise PermanentEventError(f"cannot decode record: {exc}") from exc
        raise PermanentEventError(f"no event is carried on topic {record.topic!r}")

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
