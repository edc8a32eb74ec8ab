"""Two-phase holds: reserve points, then capture them (a withdrawal) or release them.

Each use case owns its transaction, like loyalty.service's: the idempotency key, the hold,
the capture's withdrawal (through :func:`loyalty.movements.apply_in`, the path of every
withdrawal) and an admin's audit record commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from authloyalty.loyalty.domain import (
    AccountNotFound,
    Hold,
    HoldOutcome,
    HoldState,
    IdempotencyClaim,
    IdempotencyKeyReused,
    IdempotencyRecord,
    LedgerEntry,
    LoyaltyUnitOfWork,
    Movement,
    NewHold,
    Principal,
)
from authloyalty.loyalty.idempotent import write_once
from authloyalty.loyalty.lots import expire_due as expire_lots
from authloyalty.loyalty.movements import apply_in
from authloyalty.loyalty.service import Idempotency, parse_cursor
from authloyalty.platform import metrics
from authloyalty.platform.audit import AuditRecord
from authloyalty.platform.clock import utcnow
from authloyalty.platform.errors import DomainError, Forbidden, ValidationFailed

DEFAULT_TTL_SECONDS = 900

_Action = Callable[[LoyaltyUnitOfWork, datetime], Awaitable[HoldOutcome]]


@dataclass(frozen=True)
class HoldPage:
    """One page of holds, newest first."""

    items: list[Hold]
    next_cursor: str | None
    now: datetime  # the moment the states were seen at (Hold.state_at)


class HoldService:
    """Holds on accounts: place, capture, release, list, and the sweep of expired ones."""

    def __init__(self, uow: Callable[[], LoyaltyUnitOfWork], *,
                 read_uow: Callable[[], LoyaltyUnitOfWork] | None = None,
                 max_ttl_seconds: int = 7 * 24 * 3600,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self._uow = uow
        self._read_uow = read_uow or uow
        self._max_ttl = max_ttl_seconds
        self._now = clock

    async def hold(self, actor: Principal, account_id: UUID, amount: int, comment: str,
                   ttl_seconds: int | None, idempotency: Idempotency | None = None
                   ) -> HoldOutcome:
        """Reserve ``amount`` of the account's available points for ``ttl_seconds``."""
        _authorize(actor, account_id)
        ttl = DEFAULT_TTL_SECONDS if ttl_seconds is None else ttl_seconds
        if not 1 <= ttl <= self._max_ttl:
            raise ValidationFailed(f"ttl_seconds: from 1 to {self._max_ttl}")

        async def place(uow: LoyaltyUnitOfWork, now: datetime) -> HoldOutcome:
            # Points of a lot that is due must not be reserved: held, they would never expire.
            await expire_lots(uow, account_id, now)
            hold = await uow.holds.place(NewHold(account_id, amount, comment, now,
                                                 now + timedelta(seconds=ttl)))
            return await _outcome(uow, hold, now)

        return await self._write(actor, account_id, "hold", place, idempotency)

    async def capture(self, actor: Principal, account_id: UUID, hold_id: int,
                      amount: int | None, idempotency: Idempotency | None = None
                      ) -> HoldOutcome:
        """Withdraw ``amount`` (all when None) of the hold's points; release the rest."""
        _authorize(actor, account_id)

        async def capture(uow: LoyaltyUnitOfWork, now: datetime) -> HoldOutcome:
            hold = await uow.holds.settle(account_id, hold_id, now, capture=True,
                                          amount=amount)
            # The withdrawal path every withdrawal takes (a frozen account refuses it, and
            # the whole capture with it).
            entry = await apply_in(uow, Movement(account_id, "withdrawal",
                                                 hold.captured_amount, hold.comment, now,
                                                 hold_id=hold.id))
            return await _outcome(uow, hold, now, entry)

        return await self._write(actor, account_id, "capture", capture, idempotency)

    async def release(self, actor: Principal, account_id: UUID, hold_id: int,
                      idempotency: Idempotency | None = None) -> HoldOutcome:
        """Give the hold's points back to the available ones (allowed on a frozen account:
        it moves no points)."""
        _authorize(actor, account_id)

        async def release(uow: LoyaltyUnitOfWork, now: datetime) -> HoldOutcome:
            hold = await uow.holds.settle(account_id, hold_id, now, capture=False)
            # The hold kept its points from expiring: those of lots now due expire here.
            await expire_lots(uow, account_id, now)
            return await _outcome(uow, hold, now)

        return await self._write(actor, account_id, "release", release, idempotency)

    async def holds(self, actor: Principal, account_id: UUID, state: HoldState | None,
                    limit: int, cursor: str | None) -> HoldPage:
        """A page of the account's holds, newest first, optionally in one state."""
        _authorize(actor, account_id)
        before = parse_cursor(cursor)
        now = self._now()
        async with self._read_uow() as uow:
            if await uow.accounts.get(account_id) is None:
                raise AccountNotFound()
            items = await uow.holds.page(account_id, state, now, limit + 1, before)
        more = len(items) > limit
        items = items[:limit]
        return HoldPage(items, str(items[-1].id) if more and items else None, now)

    async def expire_due(self, limit: int = 500) -> int:
        """Mark holds whose time ran out as expired (housekeeping: every read and write
        already treats them so), and expire the points of due lots they kept; the number of
        accounts swept."""
        now = self._now()
        async with self._read_uow() as uow:
            due = await uow.holds.due(now, limit)
        for account_id in due:  # one short transaction per account
            async with self._uow() as uow:
                await uow.holds.expire(account_id, now)
                await expire_lots(uow, account_id, now)
                await uow.commit()
        return len(due)

    async def _write(self, actor: Principal, account_id: UUID, action: str, act: _Action,
                     idempotency: Idempotency | None) -> HoldOutcome:
        once = None if idempotency is None else IdempotencyClaim(
            actor.user_id, idempotency.key, idempotency.fingerprint)
        audited = actor.is_admin and account_id != actor.user_id

        async def act_and_audit(uow: LoyaltyUnitOfWork, now: datetime) -> HoldOutcome:
            outcome = await act(uow, now)
            if audited:
                await uow.audit.add(_audit_record(actor, action, outcome, now))
            return outcome

        try:
            outcome = await write_once(self._uow, once, act_and_audit, self._now)
        except DomainError as exc:
            metrics.HOLDS.labels(action, exc.code).inc()
            raise
        if isinstance(outcome, IdempotencyRecord):
            return _replayed(outcome, once)
        metrics.HOLDS.labels(action, "success").inc()
        hold = outcome.hold
        if action == "hold":
            metrics.HOLD_POINTS.labels("held").inc(hold.amount)
        else:
            metrics.HOLD_POINTS.labels("captured").inc(hold.captured_amount)
            metrics.HOLD_POINTS.labels("released").inc(hold.amount - hold.captured_amount)
        return outcome


def _authorize(actor: Principal, account_id: UUID) -> None:
    if not actor.is_admin and actor.user_id != account_id:
        raise Forbidden("you may only hold points of your own account")


async def _outcome(uow: LoyaltyUnitOfWork, hold: Hold, now: datetime,
                   entry: LedgerEntry | None = None) -> HoldOutcome:
    account = await uow.holds.standing(hold.account_id, now)
    if account is None:  # the hold's account exists: its row is locked or was just read
        raise AccountNotFound()
    return HoldOutcome(hold, account.balance, account.available, entry)


def _replayed(stored: IdempotencyRecord, once: IdempotencyClaim | None) -> HoldOutcome:
    if once is None or stored.fingerprint != once.fingerprint \
            or not isinstance(stored.result, HoldOutcome):
        raise IdempotencyKeyReused()
    return stored.result


def _audit_record(actor: Principal, action: str, outcome: HoldOutcome,
                  at: datetime) -> AuditRecord:
    # Ids and amounts only, as for movements: the comment stays with the hold.
    facts: dict[str, int | str | None] = {
        "hold_id": outcome.hold.id, "amount": outcome.hold.amount,
        "captured_amount": outcome.hold.captured_amount, "balance": outcome.balance,
        "available": outcome.available}
    if outcome.entry is not None:
        facts["transaction_id"] = outcome.entry.id
    return AuditRecord.by_admin(actor.user_id, action, outcome.hold.account_id, facts, at)
