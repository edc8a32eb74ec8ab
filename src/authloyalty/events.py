"""The integration events between the services: sso announces them, loyalty acts on them.

They are the published contract between the two, as ``rpc/`` is for gRPC, which is why they
live in neither service: each service owns its table instead (``sso/events.py``: the topic,
key and protobuf message each one leaves on; ``loyalty/events.py``: which record becomes which
event). ``name`` is the event's wire name: the outbox's ``event_type``, Kafka's ``event-type``
header, and the ``event`` label of the metrics.

Adding an event: a dataclass here, a row in sso's table, a row and a handler in loyalty's,
and their tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar
from uuid import UUID

# The ``version`` of a deletion or restore is the user's lifecycle version after it: sso
# increments it with each of them, in the same UPDATE, so it orders them where arrival order
# and whole-second times cannot (the relay retries a row while later ones go out; several
# replicas relay). 0 marks an event from an sso that had no versions (or an outbox row it left).
UNVERSIONED = 0


@dataclass(frozen=True)
class UserRegistered:
    """A user registered; loyalty opens their account with the welcome bonus, once."""

    name: ClassVar[str] = "user_registered"

    user_id: UUID


@dataclass(frozen=True)
class SessionRevoked:
    """A session ended (logout, refresh-token reuse); its access tokens are refused until
    ``until``, when the last of them expires."""

    name: ClassVar[str] = "session_revoked"

    session_id: UUID
    user_id: UUID
    until: datetime
    reason: str


@dataclass(frozen=True)
class UserDeleted:
    """A user deleted their account (restorable until purged); loyalty freezes it unless it
    has applied a newer change (``version``, see :data:`UNVERSIONED`)."""

    name: ClassVar[str] = "user_deleted"

    user_id: UUID
    at: datetime
    version: int = UNVERSIONED


@dataclass(frozen=True)
class UserRestored:
    """An admin restored a deleted user; loyalty unfreezes the account unless it has applied
    a newer change (``version``, see :data:`UNVERSIONED`)."""

    name: ClassVar[str] = "user_restored"

    user_id: UUID
    at: datetime
    version: int = UNVERSIONED
