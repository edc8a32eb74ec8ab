"""The events loyalty consumes: which topic carries which, and how a record becomes one."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from authloyalty.events import SessionRevoked, UserDeleted, UserRegistered, UserRestored
from authloyalty.platform.bus import PermanentEventError
from authloyalty.platform.kafka_codec import Incoming
from authloyalty.rpc.account.v1.account_pb2 import AccountChanged
from authloyalty.rpc.registration.v1.registration_pb2 import RegistrationMessage
from authloyalty.rpc.session.v1 import session_pb2

# The original producer's only message type; anything else is not a registration.
REGISTRATION_TYPE = "registration"


def _uuid(event: str, field: str, value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError as exc:
        raise PermanentEventError(f"{event}: missing or invalid {field}") from exc


def _registration(message: RegistrationMessage, key: str) -> UserRegistered:
    if message.type != REGISTRATION_TYPE:
        raise PermanentEventError(f"unexpected registration type {message.type!r}")
    # The original consumer trusted the key; the payload is authoritative here, the key its
    # fallback.
    return UserRegistered(_uuid(UserRegistered.name, "user_id", message.uuid or key))


def _revocation(message: session_pb2.SessionRevoked, key: str) -> SessionRevoked:
    name = SessionRevoked.name
    return SessionRevoked(
        session_id=_uuid(name, "session_id", message.session_id),
        user_id=_uuid(name, "user_id", message.user_id),
        until=datetime.fromtimestamp(message.revoked_until_unix, UTC),
        reason=message.reason)


def _account_change(message: AccountChanged, key: str) -> UserDeleted | UserRestored:
    kinds: dict[int, type[UserDeleted | UserRestored]] = {
        AccountChanged.DELETED: UserDeleted, AccountChanged.RESTORED: UserRestored}
    kind = kinds.get(message.change)
    if kind is None:
        raise PermanentEventError(f"unknown account change {message.change}")
    return kind(_uuid(kind.name, "user_id", message.user_id),
                datetime.fromtimestamp(message.changed_at_unix, UTC),
                version=message.version)  # 0 when an sso from before versions sent it


LOYALTY_EVENTS = (
    Incoming(topic=lambda kafka: kafka.registration_topic, message=RegistrationMessage,
             to_event=_registration),
    Incoming(topic=lambda kafka: kafka.sessions_topic, message=session_pb2.SessionRevoked,
             to_event=_revocation),
    Incoming(topic=lambda kafka: kafka.accounts_topic, message=AccountChanged,
             to_event=_account_change),
)
