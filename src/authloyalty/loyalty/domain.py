"""loyalty's model, its errors, and the ports its use cases depend on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, Self
from uuid import UUID

from authloyalty.platform.audit import AuditLog
from authloyalty.platform.errors import DomainError, ErrorKind

Kind = Literal["deposit", "withdrawal"]
# Every kind of ledger entry: movements, plus what lots and admins do to them.
EntryKind = Literal["deposit", "withdrawal", "expiry", "reversal"]
REGISTRATION_COMMENT = "registration"
EXPIRY_COMMENT = "expired"


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
    # Points reserved by holds. As stored (accounts.held) it may still count holds that have
    # expired without being swept; LedgerService.balance answers only the active ones.
    held: int = 0
    # The soonest expiry of the account's lots with points left; None: it has none (then
    # nothing about it ever expires, and its movements take the fast path).
    next_expiry: datetime | None = None

    @property
    def available(self) -> int:
        """What withdrawals and new holds may take: the balance less the held points."""
        return max(self.balance - self.held, 0)

    @property
    def state(self) -> Literal["active", "frozen"]:
        """``frozen`` while the user is deleted, else ``active``."""
        return "active" if self.frozen_at is None else "frozen"


@dataclass(frozen=True)
class LedgerEntry:
    """One movement of points; ``id`` orders an account's history."""

    id: int
    account_id: UUID
    kind: EntryKind
    amount: int
    comment: str
    balance_after: int
    created_at: datetime
    # The hold a capture settled (its withdrawal); None otherwise.
    hold_id: int | None = None
    # The entry a reversal undoes; None otherwise.
    reverses: int | None = None


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
    # Set on the withdrawal of a capture: the hold it settles.
    hold_id: int | None = None
    # A deposit's points expire then (a lot); None: they never do.
    expires_at: datetime | None = None

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

HoldState = Literal["held", "captured", "released", "expired"]


@dataclass(frozen=True)
class Hold:
    """Points reserved on an account until captured, released or expired.

    ``state`` is as stored; a hold stored as ``held`` whose ``expires_at`` has passed is
    expired (:meth:`state_at`): its points are available again whether or not a sweep has
    marked it so."""

    id: int
    account_id: UUID
    amount: int
    captured_amount: int
    comment: str
    state: HoldState
    expires_at: datetime
    created_at: datetime

    def state_at(self, now: datetime) -> HoldState:
        """The state as seen at ``now``."""
        if self.state == "held" and self.expires_at <= now:
            return "expired"
        return self.state


@dataclass(frozen=True)
class HoldOutcome:
    """What a hold, capture or release came to: the hold after it, the capture's withdrawal,
    and the account's balance and available points right after it (stored for replays)."""

    hold: Hold
    balance: int
    available: int
    entry: LedgerEntry | None = None


# Everything an idempotency key may stand for.
StoredResult = LedgerEntry | HoldOutcome | LegacyReply


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
    result: StoredResult
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


class HeldPointsInTheWay(InsufficientPoints):
    """Insufficient available points on an account that holds some: some of those holds may
    have expired unswept, so releasing them may let the request through."""


class HoldNotFound(LoyaltyError):
    """No such hold on that account."""

    kind = ErrorKind.NOT_FOUND
    code = "hold_not_found"
    default_message = "hold not found"


class HoldNotActive(LoyaltyError):
    """The hold was captured, released or swept as expired already."""

    kind = ErrorKind.CONFLICT
    code = "hold_not_active"
    default_message = "hold is no longer held"


class HoldExpired(LoyaltyError):
    """The hold's time ran out: its points are available again."""

    kind = ErrorKind.CONFLICT
    code = "hold_expired"
    default_message = "hold has expired: its points are available again"


class CaptureExceedsHold(LoyaltyError):
    """A capture of more points than the hold reserved."""

    kind = ErrorKind.INVALID
    code = "validation_error"
    default_message = "amount: more than the hold's amount"


class IdempotencyKeyReused(LoyaltyError):
    """The Idempotency-Key was already used for a different request."""

    kind = ErrorKind.CONFLICT
    code = "idempotency_key_reused"
    default_message = "Idempotency-Key was already used with a different request"


class TransactionNotFound(LoyaltyError):
    """No ledger entry with that id."""

    kind = ErrorKind.NOT_FOUND
    code = "transaction_not_found"
    default_message = "transaction not found"


class AlreadyReversed(LoyaltyError):
    """The entry was reversed before: an entry is reversed at most once."""

    kind = ErrorKind.CONFLICT
    code = "already_reversed"
    default_message = "transaction was already reversed"


class NotReversible(LoyaltyError):
    """Expiries and reversals are final; so is a withdrawal whose points all came from lots
    that have expired since."""

    kind = ErrorKind.CONFLICT
    code = "not_reversible"
    default_message = "transaction cannot be reversed"


class LotsInvolved(Exception):
    """The movement's account has lots (or the movement makes one): it must take the path
    that handles them (:func:`authloyalty.loyalty.lots.apply_with_lots`); nothing changed."""


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

    async def apply(self, movement: Movement, *, with_lots: bool = False) -> LedgerEntry:
        """Apply the movement under the ledger rule (see :class:`Movement`) and return its
        entry; :class:`AccountNotFound` or :class:`InsufficientPoints` and nothing changed.
        Unless ``with_lots`` (the caller handles lots), :class:`LotsInvolved` for a movement
        on an account with lots, or one that makes a lot."""

    async def page(self, account_id: UUID, limit: int, before_id: int | None
                   ) -> list[LedgerEntry]:
        """Newest first, ids below ``before_id``."""

    async def total(self, account_id: UUID) -> int:
        """Signed sum of the account's movements (deposits minus withdrawals)."""


@dataclass(frozen=True)
class Lot:
    """Points of one deposit that expire at ``expires_at``; ``remaining`` are left."""

    id: int
    account_id: UUID
    entry_id: int
    amount: int
    remaining: int
    expires_at: datetime


class Lots(Protocol):
    """Expiring lots and the entries that change them (expiries, reversals). The rules live
    in :mod:`authloyalty.loyalty.lots`; every change runs after :meth:`lock`."""

    async def lock(self, account_id: UUID) -> Account | None:
        """The account, its row locked until the transaction ends."""

    async def add(self, entry: LedgerEntry, expires_at: datetime) -> None:
        """A lot of the deposit ``entry``'s points."""

    async def live(self, account_id: UUID) -> list[Lot]:
        """The account's lots with points left, soonest expiry (then oldest) first."""

    async def take(self, lot_id: int, amount: int, entry_id: int | None) -> None:
        """Remove ``amount`` points from the lot; recorded as consumed by ``entry_id``."""

    async def give_back(self, lot_id: int, amount: int) -> None:
        """Return ``amount`` points to the lot."""

    async def consumed_by(self, entry_id: int) -> list[tuple[Lot, int]]:
        """The lots ``entry_id`` took points from, and how many from each."""

    async def of_entry(self, entry_id: int) -> Lot | None:
        """The lot the deposit ``entry_id`` made."""

    async def refresh_next_expiry(self, account_id: UUID) -> None:
        """Store the soonest expiry of the account's lots with points left (or None)."""

    async def post(self, account_id: UUID, kind: EntryKind, delta: int, comment: str,
                   at: datetime, reverses: int | None = None) -> LedgerEntry:
        """Add ``delta`` to the balance and append its entry (amount ``abs(delta)``);
        :class:`InsufficientPoints` if the balance would go below zero."""

    async def entry(self, entry_id: int) -> LedgerEntry | None: ...

    async def reversal_of(self, entry_id: int) -> int | None:
        """The id of the entry that reversed ``entry_id``."""

    async def expiring(self, account_id: UUID, now: datetime, limit: int) -> list[Lot]:
        """The next lots to expire after ``now`` with points left, soonest first."""

    async def due(self, now: datetime, after: UUID | None, limit: int) -> list[UUID]:
        """Accounts whose next expiry is at or before ``now``, by id after ``after``."""


@dataclass(frozen=True)
class NewHold:
    """A hold to place: ``amount`` points of ``account_id`` from ``at`` until ``expires_at``."""

    account_id: UUID
    amount: int
    comment: str
    at: datetime
    expires_at: datetime


class Holds(Protocol):
    """Holds on accounts; each change keeps ``accounts.held`` the sum of the account's holds
    stored as ``held``, in the same transaction. Every method locks the account row before
    its holds (one order: no deadlock with movements)."""

    async def place(self, new: NewHold) -> Hold:
        """Reserve the points if the account's available points suffice (its expired holds
        released first when they are in the way).
        :class:`AccountNotFound`, :class:`AccountFrozen` or :class:`InsufficientPoints`."""

    async def settle(self, account_id: UUID, hold_id: int, now: datetime, *, capture: bool,
                     amount: int | None = None) -> Hold:
        """Capture ``amount`` points (all when None; the rest released) or release the hold,
        if it is held and unexpired at ``now``; the hold after it (the capture's withdrawal
        is applied by the caller, through the movements' path). :class:`CaptureExceedsHold`,
        :class:`HoldNotFound`, :class:`HoldNotActive`,
        :class:`HoldExpired`."""

    async def expire(self, account_id: UUID, now: datetime) -> int:
        """Mark the account's holds expired by ``now`` as such; the points freed."""

    async def due(self, now: datetime, limit: int) -> list[UUID]:
        """Accounts with holds expired by ``now`` but not marked so (the sweep's work)."""

    async def get(self, account_id: UUID, hold_id: int) -> Hold | None: ...

    async def page(self, account_id: UUID, state: HoldState | None, now: datetime,
                   limit: int, before_id: int | None) -> list[Hold]:
        """Newest first, ids below ``before_id``, in ``state`` as seen at ``now``."""

    async def standing(self, account_id: UUID, now: datetime) -> Account | None:
        """The account with ``held`` counting only holds unexpired at ``now`` (one read)."""


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
    def holds(self) -> Holds: ...
    @property
    def lots(self) -> Lots: ...
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
    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this transaction has committed (never if it rolls back)."""
