"""loyalty's model, its errors, and the ports its use cases depend on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, Self
from uuid import UUID

from authloyalty.platform.audit import AuditLog
from authloyalty.platform.errors import DomainError, ErrorKind

Kind = Literal["deposit", "withdrawal"]
REGISTRATION_COMMENT = "registration"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    user_id: UUID
    session_id: UUID
    is_admin: bool


@dataclass(frozen=True)
class Account:
    """A user's points account; ``balance`` equals the sum of its ledger entries."""

    user_id: UUID
    balance: int
    created_at: datetime
    # Set while the user is deleted: no movement until restored.
    frozen_at: datetime | None = None

    @property
    def state(self) -> Literal["active", "frozen"]:
        """``frozen`` while the user is deleted, else ``active``."""
        return "active" if self.frozen_at is None else "frozen"


@dataclass(frozen=True)
class LedgerEntry:
    """One movement of points; ``id`` orders an account's history."""

    id: int
    account_id: UUID
    kind: Kind
    amount: int
    comment: str
    balance_after: int
    created_at: datetime


@dataclass(frozen=True)
class Movement:
    """A deposit or withdrawal of ``amount`` points on ``account_id`` at ``at``.

    **The ledger rule**, stated here once: a movement applies only if the balance stays at or
    above zero (otherwise nothing changes: :class:`InsufficientPoints`), and every applied
    movement is exactly one ledger entry carrying the balance after it, so that a balance
    always equals the signed sum of its entries. Concurrent movements are arbitrated by the
    database, so that is where the rule is enforced (:meth:`Ledger.apply`, one statement).
    """

    account_id: UUID
    kind: Kind
    amount: int
    comment: str
    at: datetime

    @property
    def delta(self) -> int:
        """What the movement adds to the balance."""
        return self.amount if self.kind == "deposit" else -self.amount


@dataclass(frozen=True)
class LegacyReply:
    """An answer stored as HTTP status and body by a version that stored answers instead of
    results; such keys replay those bytes until they expire (``idempotency_ttl_hours``)."""

    status: int
    body: bytes


# What a movement request comes to, first time or replayed: the entry it wrote.
MovementResult = LedgerEntry | LegacyReply


@dataclass(frozen=True)
class IdempotencyClaim:
    """A caller's ``Idempotency-Key`` and the fingerprint of the request it came with."""

    caller_id: UUID
    key: str
    fingerprint: str


@dataclass(frozen=True)
class IdempotencyRecord:
    """The result of the request ``fingerprint`` sent by ``caller`` under ``key``."""

    caller_id: UUID
    key: str
    fingerprint: str
    result: MovementResult
    created_at: datetime


@dataclass(frozen=True)
class Owner:
    """What sso knows about an account's owner (shown to admins)."""

    user_id: UUID
    email: str
    name: str | None
    birthday: str | None
    is_admin: bool


class OwnerUnavailable(Exception):
    """sso could not be asked in time."""


class OwnerDirectory(Protocol):
    """Looks up account owners in sso."""

    async def owner(self, user_id: UUID, access_token: str) -> Owner | None:
        """The owner, asked for with the caller's ``access_token`` (sso answers only a caller
        who may see that user); None if sso has no such user; :class:`OwnerUnavailable` if sso
        is down or refuses."""


class LoyaltyError(DomainError):
    """Base of loyalty's errors."""


class AccountNotFound(LoyaltyError):
    """No account (yet) for that user."""

    kind = ErrorKind.NOT_FOUND
    code = "account_not_found"
    default_message = "account not found"


class AccountFrozen(LoyaltyError):
    """The account's user is deleted: no deposit or withdrawal until restored."""

    kind = ErrorKind.CONFLICT
    code = "account_frozen"
    default_message = "account is frozen: its user is deleted"


class InsufficientPoints(LoyaltyError):
    """The withdrawal would make the balance negative; nothing changed."""

    kind = ErrorKind.CONFLICT
    code = "insufficient_points"
    default_message = "insufficient points: the balance cannot go below zero"


class IdempotencyKeyReused(LoyaltyError):
    """The Idempotency-Key was already used for a different request."""

    kind = ErrorKind.CONFLICT
    code = "idempotency_key_reused"
    default_message = "Idempotency-Key was already used with a different request"


class KeyTaken(Exception):
    """Another transaction stored the same idempotency key first."""


class Accounts(Protocol):
    """Persistence of accounts; balances change only through :meth:`Ledger.apply`."""

    async def get(self, user_id: UUID) -> Account | None: ...

    async def open(self, user_id: UUID, now: datetime) -> bool:
        """Create the account with a zero balance unless it exists; True if created."""

    async def set_frozen(self, user_id: UUID, frozen_at: datetime | None, version: int) -> bool:
        """Freeze (a time) or unfreeze (None) the account as of lifecycle ``version``, unless
        it has applied that version or a newer one; an unversioned change (0) applies only
        while no versioned one has. False if nothing changed (or there is no account)."""


class AccountReads(Protocol):
    """The port of balance reads: single accounts, each read on its own (an adapter may
    serve concurrent reads with one query)."""

    async def get(self, user_id: UUID) -> Account | None: ...


class Movements(Protocol):
    """The port of deposits and withdrawals: each movement a transaction of its own (an
    adapter may commit concurrent movements of different accounts together)."""

    async def apply(self, movement: Movement, once: IdempotencyClaim | None = None
                    ) -> LedgerEntry | IdempotencyRecord:
        """The new entry; with ``once``, stored under that key in the same transaction, or,
        when the key holds a record already, that record and nothing applied.
        :class:`AccountNotFound` or :class:`InsufficientPoints` (nothing changed) otherwise."""


class Ledger(Protocol):
    """The append-only history of movements."""

    async def apply(self, movement: Movement) -> LedgerEntry:
        """Apply the movement under the ledger rule (see :class:`Movement`) and return its
        entry; :class:`AccountNotFound` or :class:`InsufficientPoints` and nothing changed."""

    async def page(self, account_id: UUID, limit: int, before_id: int | None
                   ) -> list[LedgerEntry]:
        """Newest first, ids below ``before_id``."""

    async def total(self, account_id: UUID) -> int:
        """Signed sum of the account's movements (deposits minus withdrawals)."""


class IdempotencyKeys(Protocol):
    """Stored results of idempotent requests."""

    async def get(self, caller_id: UUID, key: str) -> IdempotencyRecord | None: ...

    async def add(self, record: IdempotencyRecord) -> None:
        """Store; raise :class:`KeyTaken` if the key exists."""

    async def purge(self, before: datetime) -> int: ...


class Inbox(Protocol):
    """Ids of events already processed."""

    async def add(self, event_id: UUID, event_type: str, now: datetime) -> bool:
        """Record the event; False if it was processed before."""


class Revocations(Protocol):
    """Sessions whose access tokens must be refused until ``until``."""

    async def add(self, session_id: UUID, until: datetime) -> None: ...
    async def active(self, now: datetime) -> list[tuple[UUID, datetime]]: ...
    async def purge(self, before: datetime) -> int: ...


class LoyaltyUnitOfWork(Protocol):
    """One database transaction over loyalty's repositories."""

    @property
    def accounts(self) -> Accounts: ...
    @property
    def ledger(self) -> Ledger: ...
    @property
    def idempotency(self) -> IdempotencyKeys: ...
    @property
    def inbox(self) -> Inbox: ...
    @property
    def revocations(self) -> Revocations: ...
    @property
    def audit(self) -> AuditLog: ...

    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, *exc: object) -> None: ...
    async def commit(self) -> None: ...
