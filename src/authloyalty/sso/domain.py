"""sso's model, its errors, and the ports its use cases depend on."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol, Self
from uuid import UUID

from pydantic.networks import validate_email

from authloyalty.platform.audit import AuditLog
from authloyalty.platform.bus import Envelope
from authloyalty.platform.errors import DomainError, ErrorKind


def email_problem(email: str) -> str | None:
    """Why ``email`` is not acceptable, or None when it is."""
    value = email.strip()
    if len(value) > 254:
        return "must be at most 254 characters"
    try:
        validate_email(value)
    except Exception:
        return "not a valid email address"
    return None


def canonical_email(email: str) -> str:
    """The email as stored: trimmed, in Unicode NFC, so that ``josé`` typed with a precomposed
    ``é`` and with ``e`` + a combining accent are one address (as email-validator has it)."""
    return unicodedata.normalize("NFC", email.strip())


def normalise_email(email: str) -> str:
    """Emails compare case-insensitively and in Unicode NFC; this is the form they are unique
    in (NFC again after case folding, which can decompose)."""
    return unicodedata.normalize("NFC", canonical_email(email).lower())


@dataclass
class User:
    """A registered user; ``email`` keeps the spelling given at registration. Once purged
    (``purged_at``), ``email`` is empty, ``name`` and ``birthday`` are None and the password
    hash verifies nothing: only the id and the dates are left."""

    id: UUID
    email: str
    password_hash: str
    created_at: datetime
    name: str | None = None
    birthday: date | None = None
    is_admin: bool = False
    deleted_at: datetime | None = None
    purged_at: datetime | None = None

    @property
    def email_normalized(self) -> str:
        """The unique, case-folded email."""
        return normalise_email(self.email)


@dataclass
class Session:
    """A login session: one access/refresh lineage, ended by logout or refresh-token reuse."""

    id: UUID
    user_id: UUID
    created_at: datetime
    refresh_token_id: UUID
    previous_refresh_token_id: UUID | None = None
    rotated_at: datetime | None = None
    revoked_at: datetime | None = None
    revoke_reason: str | None = None
    # Where the session was opened (for the user's list of sessions) and when it was last
    # refreshed or opened: access-token use does not count (it would cost a write a request).
    user_agent: str | None = None
    ip: str | None = None
    last_used_at: datetime | None = None

    @property
    def active(self) -> bool:
        """True until the session is revoked."""
        return self.revoked_at is None


class SsoError(DomainError):
    """Base of sso's errors."""


class UserExists(SsoError):
    """The email is already registered."""

    kind = ErrorKind.CONFLICT
    code = "user_exists"
    default_message = "user already exists"


class InvalidCredentials(SsoError):
    """Unknown email or wrong password (deliberately indistinguishable)."""

    kind = ErrorKind.UNAUTHENTICATED
    code = "invalid_credentials"
    default_message = "invalid email or password"


class TokenReused(SsoError):
    """A spent refresh token was presented again; the session has been ended."""

    kind = ErrorKind.UNAUTHENTICATED
    code = "token_reused"
    default_message = "refresh token was already used; the session has been revoked"


class TooManyAttempts(SsoError):
    """Too many failed logins recently."""

    kind = ErrorKind.THROTTLED
    code = "too_many_attempts"
    default_message = "too many failed login attempts, try again later"

    def __init__(self, retry_after: int) -> None:
        super().__init__()
        self.retry_after = max(1, retry_after)


class SessionNotFound(SsoError):
    """No active session with that id among the caller's."""

    kind = ErrorKind.NOT_FOUND
    code = "session_not_found"
    default_message = "session not found"


class UserNotDeleted(SsoError):
    """Restore of a user that is not deleted."""

    kind = ErrorKind.CONFLICT
    code = "user_not_deleted"
    default_message = "user is not deleted"


class UserPurged(SsoError):
    """Restore of a deleted user whose personal data has been erased."""

    kind = ErrorKind.GONE
    code = "user_purged"
    default_message = "user was deleted and purged; it cannot be restored"


class UserIsDeleted(SsoError):
    """A change to a user who deleted the account (restore it first)."""

    kind = ErrorKind.CONFLICT
    code = "user_deleted"
    default_message = "user is deleted"

    def __init__(self, message: str, user_id: UUID) -> None:
        super().__init__(message)
        self.user_id = user_id


class UserNotFound(SsoError):
    """No user with that id."""

    kind = ErrorKind.NOT_FOUND
    code = "user_not_found"
    default_message = "user not found"


class LastAdmin(SsoError):
    """Revoking this admin's right would leave no admin."""

    kind = ErrorKind.CONFLICT
    code = "last_admin"
    default_message = "the last admin cannot lose the admin right"


@dataclass(frozen=True)
class UserQuery:
    """Which users an admin is looking for: an email prefix (matched case-insensitively,
    as ``normalise_email`` has it) or an exact id; neither means everyone."""

    email_prefix: str | None = None
    user_id: UUID | None = None


class Users(Protocol):
    """Persistence of users."""

    async def page(self, query: UserQuery, limit: int, after: UUID | None) -> list[User]:
        """Users matching ``query`` ordered by normalised email, after the user ``after``."""

    async def lock_admins(self) -> list[UUID]:
        """The ids of the admins not deleted, locked until the transaction ends (so that two
        revocations of different admins cannot both see the other one still an admin)."""

    async def add(self, user: User) -> None:
        """Insert; raise :class:`UserExists` when the normalised email is taken."""

    async def get(self, user_id: UUID) -> User | None: ...
    async def lock(self, user_id: UUID, *, exclusive: bool = False) -> User | None:
        """The user as committed now, its row locked until the transaction ends (shared, or
        ``exclusive`` before updating it): a concurrent deletion, password change or change of
        the admin right waits for the transaction, or the transaction for it."""

    async def by_email(self, email: str) -> User | None: ...
    async def set_admin(self, user_id: UUID, is_admin: bool) -> None: ...

    async def set_password_hash(self, user_id: UUID, password_hash: str) -> bool:
        """Store a new hash; False if the user is deleted (or unknown)."""

    async def mark_deleted(self, user_id: UUID, now: datetime) -> int | None:
        """Soft-delete and increment the lifecycle version; the new version, None if the user
        is already deleted or unknown."""

    async def restore(self, user_id: UUID) -> int | None:
        """Undo a soft deletion and increment the lifecycle version; the new version, None
        unless the user is deleted and not purged."""

    async def purge_deleted(self, deleted_before: datetime, now: datetime,
                            limit: int) -> list[UUID]:
        """Erase the personal data of at most ``limit`` users deleted before
        ``deleted_before`` and not purged yet, freeing their emails; the ids purged. Each user
        is purged once, however many run it at the same time."""


class Sessions(Protocol):
    """Persistence of sessions; rotation and revocation are atomic compare-and-set."""

    async def add(self, session: Session) -> None: ...
    async def get(self, session_id: UUID) -> Session | None: ...

    async def rotate(
        self, session_id: UUID, presented: UUID, successor: UUID, now: datetime
    ) -> bool:
        """Swap the current refresh token id if it is still ``presented`` and active."""

    async def rotate_for_user(
        self, session_id: UUID, user_id: UUID, presented: UUID, successor: UUID,
        now: datetime,
    ) -> bool | None:
        """:meth:`rotate`, only if the session is ``user_id``'s and that user is not deleted,
        in one step; the user's admin flag once rotated, None when nothing changed (the
        session unknown, another user's or ended, ``presented`` not its current token, the
        user deleted)."""

    async def revoke(self, session_id: UUID, reason: str, now: datetime) -> bool:
        """End the session; False if it was already ended or does not exist."""

    async def active_for_user(self, user_id: UUID) -> list[Session]:
        """The user's sessions that have not ended, newest first."""

    async def delete_for_users(self, user_ids: list[UUID]) -> int:
        """Forget every session of these users (where and with what they logged in)."""


class LoginFailures(Protocol):
    """Failed login attempts, for throttling."""

    async def record(self, email: str, client: str, at: datetime) -> None: ...

    async def for_email(self, email: str, since: datetime) -> tuple[int, datetime | None]:
        """Count and oldest time of failures for ``email`` after ``since``."""

    async def for_client(self, client: str, since: datetime) -> tuple[int, datetime | None]:
        """Count and oldest time of failures from ``client`` after ``since``."""

    async def clear_email(self, email: str) -> None: ...
    async def purge(self, before: datetime) -> int: ...


class Outbox(Protocol):
    """Events to publish once the transaction commits."""

    async def add(self, envelope: Envelope[Any]) -> None: ...


class SsoUnitOfWork(Protocol):
    """One database transaction over sso's repositories."""

    @property
    def users(self) -> Users: ...
    @property
    def sessions(self) -> Sessions: ...
    @property
    def login_failures(self) -> LoginFailures: ...
    @property
    def outbox(self) -> Outbox: ...
    @property
    def audit(self) -> AuditLog: ...

    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, *exc: object) -> None: ...
    async def commit(self) -> None: ...
