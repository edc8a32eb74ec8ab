"""The events sso publishes: the topic, key and protobuf message of each one."""

from __future__ import annotations

from authloyalty.events import SessionRevoked, UserRegistered
from authloyalty.platform.kafka_codec import Outgoing, OutgoingTable
from authloyalty.rpc.registration.v1.registration_pb2 import RegistrationMessage
from authloyalty.rpc.session.v1 import session_pb2

# The original producer's only message type, which its consumers check.
REGISTRATION_TYPE = "registration"


def _registration(event: UserRegistered) -> RegistrationMessage:
    return RegistrationMessage(uuid=str(event.user_id), type=REGISTRATION_TYPE)


def _revocation(event: SessionRevoked) -> session_pb2.SessionRevoked:
    return session_pb2.SessionRevoked(session_id=str(event.session_id),
                                      user_id=str(event.user_id),
                                      revoked_until_unix=int(event.until.timestamp()),
                                      reason=event.reason)


SSO_EVENTS = OutgoingTable(
    Outgoing(UserRegistered, topic=lambda kafka: kafka.registration_topic,
             key=lambda e: str(e.user_id), message=RegistrationMessage,
             to_message=_registration),
    # Every loyalty replica reads every partition of the sessions topic
    # (platform/kafka_reader.py), so a revocation is written to all of them: one partition
    # without a leader then delays no logout.
    Outgoing(SessionRevoked, topic=lambda kafka: kafka.sessions_topic,
             key=lambda e: str(e.user_id), message=session_pb2.SessionRevoked,
             to_message=_revocation, every_partition=True),
)
