"""The events sso publishes: the topic, key and protobuf message of each one."""

from __future__ import annotations

from collections.abc import Callable

from authloyalty.events import SessionRevoked, UserDeleted, UserRegistered, UserRestored
from authloyalty.platform.kafka_codec import Outgoing, OutgoingTable
from authloyalty.rpc.account.v1.account_pb2 import AccountChanged
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


def _account_change(change: AccountChanged.Change,
                    ) -> Callable[[UserDeleted | UserRestored], AccountChanged]:
    def to_message(event: UserDeleted | UserRestored) -> AccountChanged:
        return AccountChanged(user_id=str(event.user_id), change=change,
                              changed_at_unix=int(event.at.timestamp()),
                              version=event.version)
    return to_message


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
    # One topic, one message type for the account lifecycle, keyed by user. The key does not
    # keep a deletion and its restore in order (the relay retries a failed row while later
    # ones go out, and several replicas relay): loyalty orders them by ``version``.
    Outgoing(UserDeleted, topic=lambda kafka: kafka.accounts_topic,
             key=lambda e: str(e.user_id), message=AccountChanged,
             to_message=_account_change(AccountChanged.DELETED)),
    Outgoing(UserRestored, topic=lambda kafka: kafka.accounts_topic,
             key=lambda e: str(e.user_id), message=AccountChanged,
             to_message=_account_change(AccountChanged.RESTORED)),
)
