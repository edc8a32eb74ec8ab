"""In-memory units of work for fast use-case tests; kept honest by tests/contract."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Self
from uuid import UUID

from authloyalty.loyalty.domain import (
    Account,
    AccountFrozen,
    AccountNotFound,
    CaptureExceedsHold,
    EntryKind,
    HeldPointsInTheWay,
    Hold,
    HoldExpired,
    HoldNotActive,
    HoldNotFound,
    HoldState,
    IdempotencyRecord,
    InsufficientPoints,
    KeyTaken,
    LedgerEntry,
    Lot,
    LotsInvolved,
    Movement,
    NewHold,
)
from authloyalty.platform.audit import AuditEntry, AuditQuery, AuditRecord
from authloyalty.platform.bus import Envelope
from authloyalty.sso.domain import Session, User, UserExists, UserQuery, normalise_email


@dataclass
class SsoState:
    """Everything sso's fake database holds."""

    users: dict[UUID, User] = field(default_factory=dict)
    sessions: dict[UUID, Session] = field(default_factory=dict)
    failures: list[tuple[str, str, datetime]] = field(default_factory=list)
    outbox: list[Envelope[Any]] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    # users.lifecycle_version (User does not carry it); absent means 0.
    lifecycle_versions: dict[UUID, int] = field(default_factory=dict)


def _user_out(user: User) -> User:
    """A copy as the SQL repository returns it: a purged user's placeholder email blanked."""
    return replace(user, email="") if user.purged_at is not None else copy.copy(user)


class FakeUsers:
    def __init__(self, state: SsoState) -> None:
        self._s = state

    async def page(self, query: UserQuery, limit: int, after: UUID | None) -> list[User]:
        found = sorted(self._s.users.values(), key=lambda u: u.email_normalized)
        if query.user_id is not None:
            found = [u for u in found if u.id == query.user_id]
        if query.email_prefix is not None:
            prefix = normalise_email(query.email_prefix)
            found = [u for u in found
                     if u.email_normalized.startswith(prefix) and u.purged_at is None]
        if after is not None:
            anchor = self._s.users.get(after)
            found = [u for u in found
                     if anchor is not None and u.email_normalized > anchor.email_normalized]
        return [_user_out(u) for u in found[:limit]]

    async def lock_admins(self) -> list[UUID]:
        return sorted(u.id for u in self._s.users.values()
                      if u.is_admin and u.deleted_at is None)

    async def add(self, user: User) -> None:
        if any(u.email_normalized == user.email_normalized for u in self._s.users.values()):
            raise UserExists()
        self._s.users[user.id] = copy.copy(user)

    async def get(self, user_id: UUID) -> User | None:
        user = self._s.users.get(user_id)
        return _user_out(user) if user else None

    async def lock(self, user_id: UUID, *, exclusive: bool = False) -> User | None:
        return await self.get(user_id)  # transactions of the fake are serial already

    async def by_email(self, email: str) -> User | None:
        wanted = normalise_email(email)
        for user in self._s.users.values():
            if user.email_normalized == wanted:
                return _user_out(user)
        return None

    async def set_admin(self, user_id: UUID, is_admin: bool) -> None:
        if user_id in self._s.users:
            self._s.users[user_id].is_admin = is_admin

    async def set_password_hash(self, user_id: UUID, password_hash: str) -> bool:
        user = self._s.users.get(user_id)
        if user is None or user.deleted_at is not None:
            return False
        user.password_hash = password_hash
        return True

    async def mark_deleted(self, user_id: UUID, now: datetime) -> int | None:
        user = self._s.users.get(user_id)
        if user is None or user.deleted_at is not None:
            return None
        user.deleted_at = now
        return self._next_version(user_id)

    async def restore(self, user_id: UUID) -> int | None:
        user = self._s.users.get(user_id)
        if user is None or user.deleted_at is None or user.purged_at is not None:
            return None
        user.deleted_at = None
        return self._next_version(user_id)

    def _next_version(self, user_id: UUID) -> int:
        version = self._s.lifecycle_versions.get(user_id, 0) + 1
        self._s.lifecycle_versions[user_id] = version
        return version

    async def purge_deleted(self, deleted_before: datetime, now: datetime,
                            limit: int) -> list[UUID]:
        due = sorted((u for u in self._s.users.values() if u.purged_at is None
                      and u.deleted_at is not None and u.deleted_at < deleted_before),
                     key=lambda u: u.deleted_at or now)[:limit]
        for user in due:
            user.email = f"purged:{user.id}"
            user.password_hash = "!purged"
            user.name, user.birthday, user.purged_at = None, None, now
        return [u.id for u in due]


class FakeSessions:
    def __init__(self, state: SsoState) -> None:
        self._s = state

    async def add(self, session: Session) -> None:
        self._s.sessions[session.id] = copy.copy(session)

    async def get(self, session_id: UUID) -> Session | None:
        session = self._s.sessions.get(session_id)
        return copy.copy(session) if session else None

    async def rotate(self, session_id: UUID, presented: UUID, successor: UUID,
                     now: datetime) -> bool:
        session = self._s.sessions.get(session_id)
        if session is None or not session.active or session.refresh_token_id != presented:
            return False
        self._s.sessions[session_id] = replace(
            session, refresh_token_id=successor, previous_refresh_token_id=presented,
            rotated_at=now, last_used_at=now)
        return True

    async def rotate_for_user(self, session_id: UUID, user_id: UUID, presented: UUID,
                              successor: UUID, now: datetime) -> bool | None:
        session, user = self._s.sessions.get(session_id), self._s.users.get(user_id)
        if session is None or session.user_id != user_id or user is None \
                or user.deleted_at is not None:
            return None
        return user.is_admin if await self.rotate(session_id, presented, successor, now) \
            else None

    async def revoke(self, session_id: UUID, reason: str, now: datetime) -> bool:
        session = self._s.sessions.get(session_id)
        if session is None or not session.active:
            return False
        self._s.sessions[session_id] = replace(session, revoked_at=now, revoke_reason=reason)
        return True


    async def active_for_user(self, user_id: UUID) -> list[Session]:
        found = [copy.copy(s) for s in self._s.sessions.values()
                 if s.user_id == user_id and s.active]
        return sorted(found, key=lambda s: (s.created_at, s.id), reverse=True)

    async def delete_for_users(self, user_ids: list[UUID]) -> int:
        gone = [s for s in self._s.sessions.values() if s.user_id in user_ids]
        for session in gone:
            del self._s.sessions[session.id]
        return len(gone)


class FakeLoginFailures:
    def __init__(self, state: SsoState) -> None:
        self._s = state

    async def record(self, email: str, client: str, at: datetime) -> None:
        self._s.failures.append((normalise_email(email), client[:64], at))

    def _window(self, index: int, value: str, since: datetime) -> tuple[int, datetime | None]:
        times = [f[2] for f in self._s.failures if f[index] == value and f[2] > since]
        return len(times), min(times) if times else None

    async def for_email(self, email: str, since: datetime) -> tuple[int, datetime | None]:
        return self._window(0, normalise_email(email), since)

    async def for_client(self, client: str, since: datetime) -> tuple[int, datetime | None]:
        return self._window(1, client[:64], since)

    async def clear_email(self, email: str) -> None:
        wanted = normalise_email(email)
        self._s.failures = [f for f in self._s.failures if f[0] != wanted]

    async def purge(self, before: datetime) -> int:
        kept = [f for f in self._s.failures if f[2] >= before]
        removed = len(self._s.failures) - len(kept)
        self._s.failures = kept
        return removed


class FakeOutbox:
    def __init__(self, state: SsoState) -> None:
        self._s = state

    async def add(self, envelope: Envelope[Any]) -> None:
        self._s.outbox.append(envelope)


class FakeAuditLog:
    """Either service's audit log: rows in a list, ids counting from 1."""

    def __init__(self, entries: list[AuditEntry]) -> None:
        self._entries = entries

    async def add(self, record: AuditRecord) -> int:
        new_id = self._entries[-1].id + 1 if self._entries else 1
        self._entries.append(AuditEntry(new_id, record))
        return new_id

    async def page(self, query: AuditQuery, limit: int, before_id: int | None
                   ) -> list[AuditEntry]:
        found = [e for e in reversed(self._entries)
                 if (query.actor_id is None or e.record.actor_id == query.actor_id)
                 and (query.target_id is None or e.record.target_id == query.target_id)
                 and (before_id is None or e.id < before_id)]
        return found[:limit]


class _FakeUnitOfWork:
    """Snapshot on enter, publish on commit; a lock serialises transactions like SQLite."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.committed = False
        self._on_commit: list[Any] = []

    def on_commit(self, callback: Any) -> None:
        self._on_commit.append(callback)

    async def __aenter__(self) -> Self:
        await self._store.lock.acquire()
        self._work = copy.deepcopy(self._store.state)
        self._bind(self._work)
        return self

    def _bind(self, state: Any) -> None:
        raise NotImplementedError

    async def __aexit__(self, *exc: object) -> None:
        self._on_commit.clear()
        self._store.lock.release()

    async def commit(self) -> None:
        self._store.state = self._work
        self._work = copy.deepcopy(self._work)
        self._bind(self._work)
        self.committed = True
        callbacks, self._on_commit = self._on_commit, []
        for callback in callbacks:
            callback()


class FakeSsoStore:
    """The shared 'database' of fake sso units of work."""

    def __init__(self) -> None:
        self.state = SsoState()
        self.lock = asyncio.Lock()

    def uow(self) -> FakeSsoUnitOfWork:
        return FakeSsoUnitOfWork(self)


class FakeSsoUnitOfWork(_FakeUnitOfWork):
    def _bind(self, state: SsoState) -> None:
        self.users = FakeUsers(state)
        self.sessions = FakeSessions(state)
        self.login_failures = FakeLoginFailures(state)
        self.outbox = FakeOutbox(state)
        self.audit = FakeAuditLog(state.audit)


@dataclass
class LoyaltyState:
    """Everything loyalty's fake database holds."""

    accounts: dict[UUID, Account] = field(default_factory=dict)
    ledger: list[LedgerEntry] = field(default_factory=list)
    keys: dict[tuple[UUID, str], IdempotencyRecord] = field(default_factory=dict)
    inbox: set[UUID] = field(default_factory=set)
    revocations: dict[UUID, datetime] = field(default_factory=dict)
    audit: list[AuditEntry] = field(default_factory=list)
    # accounts.lifecycle_version (Account does not carry it); absent means 0.
    lifecycle_versions: dict[UUID, int] = field(default_factory=dict)
    holds: dict[int, Hold] = field(default_factory=dict)
    lots: dict[int, Lot] = field(default_factory=dict)
    # lot_consumptions: per withdrawal, (lot id, points taken)
    consumptions: dict[int, list[tuple[int, int]]] = field(default_factory=dict)


class FakeAccounts:
    def __init__(self, state: LoyaltyState) -> None:
        self._s = state

    async def get(self, user_id: UUID) -> Account | None:
        return self._s.accounts.get(user_id)

    async def open(self, user_id: UUID, now: datetime) -> bool:
        if user_id in self._s.accounts:
            return False
        self._s.accounts[user_id] = Account(user_id, 0, now)
        return True

    async def set_frozen(self, user_id: UUID, frozen_at: datetime | None, version: int) -> bool:
        account = self._s.accounts.get(user_id)
        if account is None or self._s.lifecycle_versions.get(user_id, 0) >= max(version, 1):
            return False
        self._s.accounts[user_id] = replace(account, frozen_at=frozen_at)
        self._s.lifecycle_versions[user_id] = version
        return True


def _expire_holds(state: LoyaltyState, account_id: UUID, now: datetime) -> int:
    freed = 0
    for hold in list(state.holds.values()):
        if hold.account_id == account_id and hold.state == "held" and hold.expires_at <= now:
            state.holds[hold.id] = replace(hold, state="expired")
            freed += hold.amount
    if freed:
        account = state.accounts[account_id]
        state.accounts[account_id] = replace(account, held=account.held - freed)
    return freed


class FakeLedger:
    def __init__(self, state: LoyaltyState) -> None:
        self._s = state

    async def apply(self, movement: Movement, *, with_lots: bool = False) -> LedgerEntry:
        account = self._s.accounts.get(movement.account_id)
        if not with_lots and (movement.expires_at is not None or (
                account is not None and account.frozen_at is None
                and account.next_expiry is not None)):
            raise LotsInvolved()
        try:
            return self._apply(movement)
        except HeldPointsInTheWay:
            if not _expire_holds(self._s, movement.account_id, movement.at):
                raise
            return self._apply(movement)

    def _apply(self, movement: Movement) -> LedgerEntry:
        # The ledger rule (domain.Movement), as the fake database's single writer enforces it.
        account = self._s.accounts.get(movement.account_id)
        if account is None:
            raise AccountNotFound()
        if account.frozen_at is not None:
            raise AccountFrozen()
        balance = account.balance + movement.delta
        if balance < 0:
            raise InsufficientPoints()
        if movement.delta < 0 and balance - account.held < 0:
            raise HeldPointsInTheWay() if account.held else InsufficientPoints()
        self._s.accounts[movement.account_id] = replace(account, balance=balance)
        entry = LedgerEntry(len(self._s.ledger) + 1, movement.account_id, movement.kind,
                            movement.amount, movement.comment, balance, movement.at,
                            hold_id=movement.hold_id)
        self._s.ledger.append(entry)
        return entry

    async def page(self, account_id: UUID, limit: int, before_id: int | None
                   ) -> list[LedgerEntry]:
        mine = [e for e in reversed(self._s.ledger) if e.account_id == account_id
                and (before_id is None or e.id < before_id)]
        return mine[:limit]

    async def total(self, account_id: UUID) -> int:
        return sum(_signed(self._s, e) for e in self._s.ledger if e.account_id == account_id)


def _signed(state: LoyaltyState, entry: LedgerEntry) -> int:
    if entry.kind == "reversal" and entry.reverses is not None:  # the other way
        undone = state.ledger[entry.reverses - 1]
        return -entry.amount if undone.kind == "deposit" else entry.amount
    return entry.amount if entry.kind == "deposit" else -entry.amount


class FakeLots:
    """Lots beside the fake ledger; the rules are loyalty.lots', as for SQL."""

    def __init__(self, state: LoyaltyState) -> None:
        self._s = state

    async def lock(self, account_id: UUID) -> Account | None:
        return self._s.accounts.get(account_id)  # transactions of the fake are serial already

    async def add(self, entry: LedgerEntry, expires_at: datetime) -> None:
        lot_id = len(self._s.lots) + 1
        self._s.lots[lot_id] = Lot(lot_id, entry.account_id, entry.id, entry.amount,
                                   entry.amount, expires_at)

    async def live(self, account_id: UUID) -> list[Lot]:
        return sorted((lot for lot in self._s.lots.values()
                       if lot.account_id == account_id and lot.remaining > 0),
                      key=lambda lot: (lot.expires_at, lot.id))

    async def take(self, lot_id: int, amount: int, entry_id: int | None) -> None:
        lot = self._s.lots[lot_id]
        assert 0 < amount <= lot.remaining  # the table's checks
        self._s.lots[lot_id] = replace(lot, remaining=lot.remaining - amount)
        if entry_id is not None:
            self._s.consumptions.setdefault(entry_id, []).append((lot_id, amount))

    async def give_back(self, lot_id: int, amount: int) -> None:
        lot = self._s.lots[lot_id]
        assert lot.remaining + amount <= lot.amount
        self._s.lots[lot_id] = replace(lot, remaining=lot.remaining + amount)

    async def consumed_by(self, entry_id: int) -> list[tuple[Lot, int]]:
        taken = [(self._s.lots[lot_id], amount)
                 for lot_id, amount in self._s.consumptions.get(entry_id, [])]
        return sorted(taken, key=lambda pair: (pair[0].expires_at, pair[0].id))

    async def of_entry(self, entry_id: int) -> Lot | None:
        return next((lot for lot in self._s.lots.values() if lot.entry_id == entry_id), None)

    async def refresh_next_expiry(self, account_id: UUID) -> None:
        live = await self.live(account_id)
        account = self._s.accounts[account_id]
        self._s.accounts[account_id] = replace(
            account, next_expiry=min((lot.expires_at for lot in live), default=None))

    async def post(self, account_id: UUID, kind: EntryKind, delta: int, comment: str,
                   at: datetime, reverses: int | None = None) -> LedgerEntry:
        account = self._s.accounts[account_id]
        if account.balance + delta < 0:
            raise InsufficientPoints()
        self._s.accounts[account_id] = replace(account, balance=account.balance + delta)
        entry = LedgerEntry(len(self._s.ledger) + 1, account_id, kind, abs(delta), comment,
                            account.balance + delta, at, reverses=reverses)
        self._s.ledger.append(entry)
        return entry

    async def entry(self, entry_id: int) -> LedgerEntry | None:
        return self._s.ledger[entry_id - 1] if 0 < entry_id <= len(self._s.ledger) else None

    async def reversal_of(self, entry_id: int) -> int | None:
        return next((e.id for e in self._s.ledger if e.reverses == entry_id), None)

    async def expiring(self, account_id: UUID, now: datetime, limit: int) -> list[Lot]:
        return [lot for lot in await self.live(account_id) if lot.expires_at > now][:limit]

    async def due(self, now: datetime, after: UUID | None, limit: int) -> list[UUID]:
        return sorted(a.user_id for a in self._s.accounts.values()
                      if a.next_expiry is not None and a.next_expiry <= now
                      and (after is None or a.user_id > after))[:limit]


class FakeHolds:
    def __init__(self, state: LoyaltyState) -> None:
        self._s = state

    async def place(self, new: NewHold) -> Hold:
        try:
            self._reserve(new)
        except HeldPointsInTheWay:
            if not _expire_holds(self._s, new.account_id, new.at):
                raise
            self._reserve(new)
        hold = Hold(len(self._s.holds) + 1, new.account_id, new.amount, 0, new.comment, "held",
                    new.expires_at, new.at)
        self._s.holds[hold.id] = hold
        return hold

    def _reserve(self, new: NewHold) -> None:
        account = self._s.accounts.get(new.account_id)
        if account is None:
            raise AccountNotFound()
        if account.frozen_at is not None:
            raise AccountFrozen()
        if account.balance - account.held - new.amount < 0:
            raise HeldPointsInTheWay() if account.held else InsufficientPoints()
        self._s.accounts[new.account_id] = replace(account, held=account.held + new.amount)

    async def settle(self, account_id: UUID, hold_id: int, now: datetime, *, capture: bool,
                     amount: int | None = None) -> Hold:
        hold = await self.get(account_id, hold_id)
        if hold is None:
            raise HoldNotFound()
        seen = hold.state_at(now)
        if seen == "expired":
            raise HoldExpired()
        if seen != "held":
            raise HoldNotActive()
        if capture and amount is not None and amount > hold.amount:
            raise CaptureExceedsHold()
        settled = replace(hold, state="captured" if capture else "released",
                          captured_amount=(hold.amount if amount is None else amount)
                          if capture else 0)
        self._s.holds[hold_id] = settled
        account = self._s.accounts[account_id]
        self._s.accounts[account_id] = replace(account, held=account.held - hold.amount)
        return settled

    async def expire(self, account_id: UUID, now: datetime) -> int:
        return _expire_holds(self._s, account_id, now) if account_id in self._s.accounts else 0

    async def due(self, now: datetime, limit: int) -> list[UUID]:
        due = {h.account_id for h in self._s.holds.values()
               if h.state == "held" and h.expires_at <= now}
        return sorted(due)[:limit]

    async def get(self, account_id: UUID, hold_id: int) -> Hold | None:
        hold = self._s.holds.get(hold_id)
        return hold if hold is not None and hold.account_id == account_id else None

    async def page(self, account_id: UUID, state: HoldState | None, now: datetime,
                   limit: int, before_id: int | None) -> list[Hold]:
        mine = [h for h in sorted(self._s.holds.values(), key=lambda h: -h.id)
                if h.account_id == account_id and (before_id is None or h.id < before_id)
                and (state is None or h.state_at(now) == state)]
        return mine[:limit]

    async def standing(self, account_id: UUID, now: datetime) -> Account | None:
        account = self._s.accounts.get(account_id)
        if account is None:
            return None
        return replace(account, held=sum(
            h.amount for h in self._s.holds.values()
            if h.account_id == account_id and h.state_at(now) == "held"))


class FakeIdempotencyKeys:
    def __init__(self, state: LoyaltyState) -> None:
        self._s = state

    async def get(self, caller_id: UUID, key: str) -> IdempotencyRecord | None:
        return self._s.keys.get((caller_id, key))

    async def add(self, record: IdempotencyRecord) -> None:
        if (record.caller_id, record.key) in self._s.keys:
            raise KeyTaken
        self._s.keys[(record.caller_id, record.key)] = record

    async def purge(self, before: datetime) -> int:
        old = [k for k, r in self._s.keys.items() if r.created_at < before]
        for k in old:
            del self._s.keys[k]
        return len(old)


class FakeInbox:
    def __init__(self, state: LoyaltyState) -> None:
        self._s = state

    async def add(self, event_id: UUID, event_type: str, now: datetime) -> bool:
        if event_id in self._s.inbox:
            return False
        self._s.inbox.add(event_id)
        return True


class FakeRevocations:
    def __init__(self, state: LoyaltyState) -> None:
        self._s = state

    async def add(self, session_id: UUID, until: datetime) -> None:
        self._s.revocations.setdefault(session_id, until)

    async def active(self, now: datetime) -> list[tuple[UUID, datetime]]:
        return [(s, u) for s, u in self._s.revocations.items() if u > now]

    async def purge(self, before: datetime) -> int:
        old = [s for s, u in self._s.revocations.items() if u < before]
        for s in old:
            del self._s.revocations[s]
        return len(old)


class FakeLoyaltyStore:
    """The shared 'database' of fake loyalty units of work."""

    def __init__(self) -> None:
        self.state = LoyaltyState()
        self.lock = asyncio.Lock()

    def uow(self) -> FakeLoyaltyUnitOfWork:
        return FakeLoyaltyUnitOfWork(self)


class FakeLoyaltyUnitOfWork(_FakeUnitOfWork):
    def _bind(self, state: LoyaltyState) -> None:
        self.accounts = FakeAccounts(state)
        self.ledger = FakeLedger(state)
        self.holds = FakeHolds(state)
        self.lots = FakeLots(state)
        self.idempotency = FakeIdempotencyKeys(state)
        self.inbox = FakeInbox(state)
        self.revocations = FakeRevocations(state)
        self.audit = FakeAuditLog(state.audit)
