"""sso's and loyalty's event tables against each other: every event sso publishes reaches
loyalty as the same typed event, on the wire the original producer used."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from authloyalty.events import SessionRevoked, UserDeleted, UserRegistered, UserRestored
from authloyalty.loyalty.consumer import LoyaltyEventHandlers
from authloyalty.loyalty.events import LOYALTY_EVENTS
from authloyalty.loyalty.revocations import RevokedSessions
from authloyalty.platform.bus import Envelope, PermanentEventError, event_from_payload
from authloyalty.platform.kafka_codec import EventDecoder, EventEncoder, Record, frame
from authloyalty.platform.settings import KafkaSettings
from authloyalty.rpc.account.v1.account_pb2 import AccountChanged
from authloyalty.rpc.registration.v1.registration_pb2 import RegistrationMessage
from authloyalty.sso.events import SSO_EVENTS
from tests.fakes import FakeLoyaltyStore

SETTINGS = KafkaSettings(registration_topic="reg-t", sessions_topic="sess-t",
                         accounts_topic="acc-t")
USER, SESSION = uuid4(), uuid4()
# One of each event sso publishes; a new event needs an example here (the test below fails
# until it has one).
EXAMPLES: list[Any] = [
    UserRegistered(USER),
    SessionRevoked(SESSION, USER, datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC), "logout"),
    UserDeleted(USER, datetime(2030, 1, 2, 3, 4, 6, tzinfo=UTC), version=3),
    UserRestored(USER, datetime(2030, 1, 2, 3, 4, 7, tzinfo=UTC), version=4),
]


def record(topic: str, key: bytes | None, value: bytes, headers: Any = (),
           offset: int = 7) -> Record:
    return Record(topic=topic, partition=0, offset=offset, key=key, value=value,
                  headers=list(headers))


@pytest.fixture
def encoder() -> EventEncoder:
    registry = SchemaRegistryClient.new_client({"url": f"mock://tables-{uuid4().hex}"})
    return EventEncoder(SETTINGS, SSO_EVENTS, registry)


def test_every_published_event_has_an_example() -> None:
    assert {row.event for row in SSO_EVENTS.rows} == {type(e) for e in EXAMPLES}


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.name)
def test_every_published_event_reaches_loyalty_as_itself(encoder: EventEncoder,
                                                         event: Any) -> None:
    sent = Envelope(event, headers={"traceparent": f"00-{'1' * 32}-{'2' * 16}-01"})
    topic, key, value, headers = encoder.encode(sent)
    assert key == str(USER).encode()
    assert dict(headers) == {"event-id": str(sent.id).encode(),
                             "event-type": event.name.encode(),
                             "traceparent": sent.headers["traceparent"].encode()}
    received = EventDecoder(SETTINGS, LOYALTY_EVENTS).decode(record(topic, key, value, headers))
    assert (received.event, received.id, dict(received.headers)) == (
        event, sent.id, dict(sent.headers))


def test_an_account_change_from_an_older_sso_reads_as_unversioned() -> None:
    # What an sso from before lifecycle versions sends: no field 4.
    value = frame(1, AccountChanged(user_id=str(USER), change=AccountChanged.RESTORED,
                                    changed_at_unix=1_900_000_000))
    received = EventDecoder(SETTINGS, LOYALTY_EVENTS).decode(
        record("acc-t", str(USER).encode(), value))
    assert received.event == UserRestored(USER, datetime.fromtimestamp(1_900_000_000, UTC))
    assert received.event.version == 0


def test_an_outbox_row_written_before_versions_loads_as_unversioned() -> None:
    at = datetime(2030, 1, 2, 3, 4, 6, tzinfo=UTC)
    payload = {"user_id": str(USER), "at": at.isoformat()}  # no "version"
    assert event_from_payload(UserDeleted, payload) == UserDeleted(USER, at, version=0)


def test_topics_come_from_the_settings(encoder: EventEncoder) -> None:
    assert [encoder.topic_for(e) for e in EXAMPLES] == ["reg-t", "sess-t", "acc-t", "acc-t"]
    assert encoder.fan_out_topics() == {"sess-t"}  # revocations go to every partition


def test_a_traceparent_is_made_up_when_none_came_along(encoder: EventEncoder) -> None:
    sent = Envelope(UserRegistered(USER))
    headers = dict(encoder.encode(sent)[3])
    assert headers["traceparent"].startswith(f"00-{sent.id.hex}-".encode())


def go_style(user_id: str, kind: str = "registration") -> bytes:
    """Bytes exactly as the original Go producer framed them: no event id, schema id 1."""
    payload = RegistrationMessage(uuid=user_id, type=kind).SerializeToString()
    return b"\x00" + struct.pack(">I", 1) + b"\x00" + payload


def test_the_original_producers_records_are_read_with_a_positional_id() -> None:
    decoder = EventDecoder(SETTINGS, LOYALTY_EVENTS)
    first = decoder.decode(record("reg-t", str(USER).encode(), go_style(str(USER))))
    again = decoder.decode(record("reg-t", str(USER).encode(), go_style(str(USER))))
    assert first.event == UserRegistered(USER)
    assert first.id == again.id  # the same record redelivered is recognised
    # The payload is authoritative; the key is only its fallback.
    assert decoder.decode(record("reg-t", str(USER).encode(), go_style(""))).event == \
        UserRegistered(USER)


@pytest.mark.parametrize(("topic", "value"), [
    ("reg-t", go_style("not-a-uuid")),
    ("reg-t", go_style(str(USER), kind="deletion")),
    ("reg-t", b"\x07not protobuf at all"),
    ("elsewhere", go_style(str(USER))),
])
def test_unreadable_records_are_permanent_errors(topic: str, value: bytes) -> None:
    with pytest.raises(PermanentEventError):
        EventDecoder(SETTINGS, LOYALTY_EVENTS).decode(record(topic, b"bad-uuid", value))


def test_loyalty_handles_every_event_it_reads() -> None:
    handlers = LoyaltyEventHandlers(FakeLoyaltyStore().uow, RevokedSessions(), 100)
    assert set(handlers.by_event()) == {type(e) for e in EXAMPLES}


def test_every_event_name_is_unique() -> None:
    names = [row.event.name for row in SSO_EVENTS.rows]
    assert len(set(names)) == len(names)
    assert [SSO_EVENTS.event_type(n) for n in names] == [row.event for row in SSO_EVENTS.rows]
