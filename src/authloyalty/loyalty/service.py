"""loyalty's use cases; each owns its transaction."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from authloyalty.loyalty.domain import (
    Account,
    AccountNotFound,
    AccountReads,
    HoldOutcome,
    IdempotencyClaim,
    IdempotencyKeyReused,
    IdempotencyRecord,
    InsufficientPoints,
    Kind,
    LedgerEntry,
    Lot,
    LoyaltyUnitOfWork,
    Movement,
    MovementResult,
    Movements,
    Owner,
    OwnerDirectory,
    OwnerUnavailable,
    Principal,
)
from authloyalty.loyalty.idempotent import write_once
from authloyalty.loyalty.lots import EXPIRES_AT_RULE, expire_due
from authloyalty.loyalty.lots import reverse as reverse_entry
from authloyalty.loyalty.movements import UnitOfWorkAccountReads, UnitOfWorkMovements
from authloyalty.platform import metrics
from authloyalty.platform.audit import AuditPage, AuditQuery, AuditRecord, read_page
from authloyalty.platform.clock import utcnow
from authloyalty.platform.errors import Forbidden, ValidationFailed

log = logging.getLogger(__name__)
_CURSOR = re.compile(r"[0-9]{1,18}")  # ASCII digits only, always within a 64-bit id


@dataclass(frozen=True)
class Idempotency:
    """An ``Idempotency-Key`` and a fingerprint of the request it came with."""

    key: str
    fingerprint: str

    @classmethod
    def of(cls, key: str, operation: str, account_id: UUID, body: dict[str, Any]
           ) -> Idempotency:
        """Fingerprint the operation, the target account and the body."""
        canonical = json.dumps([operation, str(account_id), body], sort_keys=True,
                               separators=(",", ":"))
        return cls(key=key, fingerprint=hashlib.sha256(canonical.encode()).hexdigest())


@dataclass(frozen=True)
class Operation:
    """A deposit or withdrawal on ``account_id`` asked for by ``actor``."""

    actor: Principal
    account_id: UUID
    kind: Kind
    amount: int
    comment: str
    # A deposit's points expire then (in the future); None: never.
    expires_at: datetime | None = None


@dataclass(frozen=True)
class AccountView:
    """An account as an admin sees it: with its owner, when sso can tell."""

    account: Account
    owner: Owner | None
    owner_status: str  # "ok" | "not_found" | "unavailable"


@dataclass(frozen=True)
class Page:
    """One page of history, newest first."""

    items: list[LedgerEntry]
    next_cursor: str | None


class LedgerService:
    """Balances, history, deposits and withdrawals."""

    def __init__(self, uow: Callable[[], LoyaltyUnitOfWork], *, idempotency_ttl_hours: int = 24,
                 owners: OwnerDirectory | None = None,
                 read_uow: Callable[[], LoyaltyUnitOfWork] | None = None,
                 accounts: AccountReads | None = None, movements: Movements | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self._uow = uow
        # Balance and history reads may come from a replica (a few ms behind); writes and the
        # idempotency check never do.
        self._read_uow = read_uow or uow
        # The ports of the two hottest requests; bootstrap picks their adapters (plain, or
        # coalesced on PostgreSQL), the plain ones by default.
        self._accounts = accounts or UnitOfWorkAccountReads(self._read_uow)
        self._movements = movements or UnitOfWorkMovements(uow)
        # An admin's movement and its audit record share one transaction: never coalesced.
        self._audited_movements = UnitOfWorkMovements(uow)
        self._owners = owners
        self._ttl = timedelta(hours=idempotency_ttl_hours)
        self._now = clock

    @staticmethod
    def _authorize_read(actor: Principal, account_id: UUID) -> None:
        if not actor.is_admin and actor.user_id != account_id:
            raise Forbidden("you may only see your own account")

    async def balance(self, actor: Principal, account_id: UUID) -> Account:
        """The account, for its owner or an admin; ``held`` counts only unexpired holds."""
        self._authorize_read(actor, account_id)
        account = await self._accounts.get(account_id)
        if account is not None and _expiry_due(account, self._now()):
            account = await self._expire_now(account_id)
        next_expiry = None if account is None else account.next_expiry
        if account is not None and account.held:
            # Some holds may have expired unswept: balance and active holds, read together.
            async with self._read_uow() as uow:
                account = await uow.holds.standing(account_id, self._now())
        if account is None:
            raise AccountNotFound()
        # holds.standing does not read next_expiry: the account's, as read above
        return account if account.next_expiry == next_expiry else replace(
            account, next_expiry=next_expiry)

    async def account_view(self, actor: Principal, account_id: UUID,
                           access_token: str) -> AccountView:
        """The balance (always) and the owner's details (when sso answers in time); sso is
        asked with the actor's ``access_token``."""
        account = await self.balance(actor, account_id)
        if self._owners is None:
            return AccountView(account, None, "unavailable")
        try:
            owner = await self._owners.owner(account_id, access_token)
        except OwnerUnavailable as exc:
            log.warning("owner of %s unavailable: %s", account_id, exc)
            return AccountView(account, None, "unavailable")
        return AccountView(account, owner, "ok" if owner else "not_found")

    async def history(self, actor: Principal, account_id: UUID, limit: int,
                      cursor: str | None) -> Page:
        """A page of the account's movements, newest first."""
        self._authorize_read(actor, account_id)
        before = _parse_cursor(cursor)
        async with self._read_uow() as uow:
            account = await uow.accounts.get(account_id)
        if account is None:
            raise AccountNotFound()
        if _expiry_due(account, self._now()):
            await self._expire_now(account_id)
        async with self._read_uow() as uow:
            items = await uow.ledger.page(account_id, limit + 1, before)
        more = len(items) > limit
        items = items[:limit]
        return Page(items, str(items[-1].id) if more and items else None)

    async def operate(self, op: Operation, idempotency: Idempotency | None = None
                      ) -> MovementResult:
        """Apply ``op`` and return the entry it wrote; with a key, at most once per key (a
        repeat returns the first result)."""
        self._authorize_operation(op)
        movement = Movement(op.account_id, op.kind, op.amount, op.comment, self._now(),
                            expires_at=op.expires_at)
        # Whether expires_at is still ahead is checked when the deposit applies (loyalty.lots):
        # a retry with the key of a deposit made earlier replays it, even once it has passed.
        if op.expires_at is not None and op.kind != "deposit":
            raise ValidationFailed(EXPIRES_AT_RULE)
        once = None if idempotency is None else IdempotencyClaim(
            op.actor.user_id, idempotency.key, idempotency.fingerprint)
        try:
            if _needs_admin_right(op):
                outcome = await self._audited_movements.apply(
                    movement, once, audit=lambda entry: _audit_record(op, entry))
            else:
                outcome = await self._movements.apply(movement, once)
        except InsufficientPoints:
            metrics.LEDGER_OPERATIONS.labels(op.kind, "insufficient_points").inc()
            raise
        if isinstance(outcome, IdempotencyRecord):
            return _replayed(outcome, once)
        operations, points = _SUCCESS_METRICS[op.kind]
        operations.inc()
        points.inc(op.amount)
        return outcome

    @staticmethod
    def _authorize_operation(op: Operation) -> None:
        if op.actor.is_admin:
            return
        if op.kind == "deposit":
            raise Forbidden("only admins can deposit points")
        if op.account_id != op.actor.user_id:
            raise Forbidden("you may only withdraw from your own account")

    async def audit(self, actor: Principal, query: AuditQuery, limit: int,
                    cursor: str | None) -> AuditPage:
        """A page of the audit log of admin actions, newest first (admins only)."""
        if not actor.is_admin:
            raise Forbidden("admin rights required")
        _parse_cursor(cursor)  # refused before any database work
        async with self._read_uow() as uow:
            return await read_page(uow.audit, query, limit, cursor)

    async def expiring(self, account: Account, limit: int = 5) -> list[Lot]:
        """The account's next lots to expire (none without a read for an account without
        lots)."""
        if account.next_expiry is None:
            return []
        async with self._read_uow() as uow:
            return await uow.lots.expiring(account.user_id, self._now(), limit)

    async def reverse(self, actor: Principal, entry_id: int, comment: str,
                      idempotency: Idempotency | None = None) -> MovementResult:
        """Reverse a deposit or withdrawal (admins only, audited); with a key, at most once
        per key. The reversal entry."""
        if not actor.is_admin:
            raise Forbidden("admin rights required")
        once = None if idempotency is None else IdempotencyClaim(
            actor.user_id, idempotency.key, idempotency.fingerprint)
        async def act(uow: LoyaltyUnitOfWork, now: datetime) -> LedgerEntry:
            target, reversal = await reverse_entry(uow, entry_id, comment, now)
            await uow.audit.add(AuditRecord.by_admin(
                actor.user_id, "reversal", target.account_id, {
                    "transaction_id": reversal.id, "reverses": target.id,
                    "amount": reversal.amount, "balance_after": reversal.balance_after},
                now))
            return reversal

        outcome = await write_once(self._uow, once, act, self._now)
        if isinstance(outcome, IdempotencyRecord):
            return _replayed(outcome, once)
        return outcome

    async def expire_lots(self, batch: int = 500) -> int:
        """Expire the lots due by now, one short transaction per account (several processes
        may sweep at once: each account's row lock lets one expire a lot); the number of
        expiry entries written."""
        now, after, written = self._now(), None, 0
        while True:
            async with self._uow() as uow:
                due = await uow.lots.due(now, after, batch)
            for account_id in due:
                async with self._uow() as uow:
                    written += len(await expire_due(uow, account_id, now))
                    await uow.commit()
            if len(due) < batch:
                return written
            after = due[-1]

    async def _expire_now(self, account_id: UUID) -> Account | None:
        # A read never shows points that have expired: what the sweep has not reached yet
        # expires here (only accounts with due lots pay for it).
        async with self._uow() as uow:
            await expire_due(uow, account_id, self._now())
            account = await uow.accounts.get(account_id)
            await uow.commit()
        return account

    async def purge_idempotency_keys(self) -> int:
        """Forget keys older than their time to live."""
        async with self._uow() as uow:
            removed = await uow.idempotency.purge(self._now() - self._ttl)
            await uow.commit()
        return removed


def _replayed(stored: IdempotencyRecord, once: IdempotencyClaim | None) -> MovementResult:
    """The answer stored under the key, for the same request; a key used for another request
    (or for a hold) is refused."""
    if once is None or stored.fingerprint != once.fingerprint \
            or isinstance(stored.result, HoldOutcome):
        raise IdempotencyKeyReused()
    return stored.result


def _expiry_due(account: Account, now: datetime) -> bool:
    return account.next_expiry is not None and account.next_expiry <= now


def _needs_admin_right(op: Operation) -> bool:
    """An admin action, audited: a deposit, or a movement on someone else's account (an
    admin spending their own points acts as any user does)."""
    return op.actor.is_admin and (op.kind == "deposit" or op.account_id != op.actor.user_id)


def _audit_record(op: Operation, entry: LedgerEntry) -> AuditRecord:
    # Ids and amounts only: the comment is business data and stays in the ledger.
    return AuditRecord.by_admin(op.actor.user_id, op.kind, op.account_id, {
        "amount": entry.amount, "balance_after": entry.balance_after,
        "transaction_id": entry.id}, entry.created_at)


# Resolved once: looking a labelled child up costs more than counting.
_SUCCESS_METRICS = {kind: (metrics.LEDGER_OPERATIONS.labels(kind, "success"),
                           metrics.POINTS.labels(kind))
                    for kind in ("deposit", "withdrawal")}


def _parse_cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    if not _CURSOR.fullmatch(cursor):
        raise ValidationFailed("cursor: not a cursor returned by this API")
    return int(cursor)


# Holds' pages take the same cursors as history's (loyalty.hold_service).
parse_cursor = _parse_cursor
