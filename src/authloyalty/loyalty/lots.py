"""Expiring points: lots, their consumption, their expiry, and reversals of entries.

The rules, stated once over the :class:`~authloyalty.loyalty.domain.Lots` port (so that every
backend follows them), each run with the account's row locked:

- a deposit with an expiry makes a lot of its points; withdrawals (captures included) take
  from the soonest-expiring lots first and from points that never expire last, and record
  what they took from each lot;
- once a lot's ``expires_at`` has passed, its remainder leaves the balance as an ``expiry``
  entry (comment ``expired``), except what active holds reserve: held points are counted
  against the soonest-expiring lots first, and expire when released (:func:`expire_due`);
- a reversal undoes one deposit or withdrawal once: a deposit's points are taken back from
  its own lot (or from the points that never expire), a withdrawal's go back to the lots
  they came from, with their expiry; points that came from a lot that has expired since
  are not given back (they would expire at once).

An account without lots pays for none of this: ``accounts.next_expiry`` is null, and its
movements take the ledger's one-statement path.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from authloyalty.loyalty.domain import (
    EXPIRY_COMMENT,
    Account,
    AccountFrozen,
    AccountNotFound,
    AlreadyReversed,
    InsufficientPoints,
    LedgerEntry,
    LoyaltyUnitOfWork,
    Movement,
    NotReversible,
    TransactionNotFound,
)
from authloyalty.platform import metrics
from authloyalty.platform.errors import ValidationFailed

EXPIRES_AT_RULE = "expires_at: a time in the future, on deposits only"


async def apply_with_lots(uow: LoyaltyUnitOfWork, movement: Movement) -> LedgerEntry:
    """Apply ``movement`` to an account with lots (or make a lot): expire what is due first
    (points that expired are never spent), then apply it and update the lots."""
    if movement.expires_at is not None and movement.expires_at <= movement.at:
        raise ValidationFailed(EXPIRES_AT_RULE)
    account = await _locked(uow, movement.account_id)
    # A capture's points were reserved until this very withdrawal: they stay protected.
    captured = movement.amount if movement.hold_id is not None else 0
    await _expire(uow, account, movement.at, captured)
    entry = await uow.ledger.apply(movement, with_lots=True)
    if entry.kind == "withdrawal":
        await _consume(uow, entry)
    elif movement.expires_at is not None:
        await uow.lots.add(entry, movement.expires_at)
    await uow.lots.refresh_next_expiry(movement.account_id)
    return entry


async def expire_due(uow: LoyaltyUnitOfWork, account_id: UUID, now: datetime
                     ) -> list[LedgerEntry]:
    """Expire the account's lots due by ``now`` (what active holds do not reserve); the
    ``expiry`` entries written. Cheap when nothing is due; call it after anything that frees
    held points (a release, the sweep of expired holds), in the same transaction."""
    account = await uow.lots.lock(account_id)
    if account is None:
        return []
    return await _expire(uow, account, now)


async def reverse(uow: LoyaltyUnitOfWork, entry_id: int, comment: str, at: datetime
                  ) -> tuple[LedgerEntry, LedgerEntry]:
    """Reverse the entry ``entry_id``: the reversed entry and the reversal."""
    target = await uow.lots.entry(entry_id)
    if target is None:
        raise TransactionNotFound()
    if target.kind not in ("deposit", "withdrawal"):
        raise NotReversible(f"{target.kind} entries cannot be reversed")
    account = await _locked(uow, target.account_id)
    if account.frozen_at is not None:
        raise AccountFrozen()
    if await uow.lots.reversal_of(entry_id) is not None:
        raise AlreadyReversed()
    if await _expire(uow, account, at):
        account = await _locked(uow, target.account_id)  # the balance changed
    if target.kind == "deposit":
        reversal = await _take_back(uow, account, target, comment, at)
    else:
        reversal = await _give_back(uow, target, comment, at)
    await uow.lots.refresh_next_expiry(target.account_id)
    uow.on_commit(lambda: _count("reversal", 1, abs(reversal.amount)))
    return target, reversal


async def _locked(uow: LoyaltyUnitOfWork, account_id: UUID) -> Account:
    account = await uow.lots.lock(account_id)
    if account is None:
        raise AccountNotFound()
    return account


async def _expire(uow: LoyaltyUnitOfWork, account: Account, now: datetime,
                  still_held: int = 0) -> list[LedgerEntry]:
    if account.next_expiry is None or account.next_expiry > now:
        return []
    # Holds expired by now keep nothing: they are marked so first, so that a capture that
    # read an earlier clock and waited for the account cannot take points that expire here.
    await uow.holds.expire(account.user_id, now)
    standing = await uow.holds.standing(account.user_id, now)  # only unexpired holds count
    protected = (standing.held if standing is not None else 0) + still_held
    written = []
    for lot in await uow.lots.live(account.user_id):
        if lot.expires_at > now:
            break
        kept = min(protected, lot.remaining)
        protected -= kept
        if lot.remaining > kept:
            await uow.lots.take(lot.id, lot.remaining - kept, None)
            written.append(await uow.lots.post(account.user_id, "expiry", kept - lot.remaining,
                                               EXPIRY_COMMENT, now))
    await uow.lots.refresh_next_expiry(account.user_id)
    if written:
        points = sum(abs(entry.amount) for entry in written)
        uow.on_commit(lambda: _count("expiry", len(written), points))
    return written


async def _consume(uow: LoyaltyUnitOfWork, entry: LedgerEntry) -> None:
    left = entry.amount
    for lot in await uow.lots.live(entry.account_id):
        if left == 0:
            break
        if lot.expires_at <= entry.created_at and entry.hold_id is None:
            # What is left of a lot past its expiry is kept for the active holds only: spent
            # by another withdrawal, those holds would keep points that never expire instead.
            # The available points (balance - held) never need these.
            continue
        taken = min(left, lot.remaining)
        await uow.lots.take(lot.id, taken, entry.id)
        left -= taken


async def _take_back(uow: LoyaltyUnitOfWork, account: Account, deposit: LedgerEntry,
                     comment: str, at: datetime) -> LedgerEntry:
    lot = await uow.lots.of_entry(deposit.id)
    if lot is not None:
        source = lot.remaining
    else:  # from the points that never expire
        source = account.balance - sum(x.remaining for x in await uow.lots.live(account.user_id))
    standing = await uow.holds.standing(account.user_id, at)
    available = standing.available if standing is not None else account.balance
    if min(source, available) < deposit.amount:
        raise InsufficientPoints("insufficient points: the deposit's points are spent or held")
    if lot is not None:
        await uow.lots.take(lot.id, deposit.amount, None)
    return await uow.lots.post(account.user_id, "reversal", -deposit.amount, comment, at,
                               reverses=deposit.id)


async def _give_back(uow: LoyaltyUnitOfWork, withdrawal: LedgerEntry, comment: str,
                     at: datetime) -> LedgerEntry:
    back = withdrawal.amount
    for lot, taken in await uow.lots.consumed_by(withdrawal.id):
        if lot.expires_at > at:
            await uow.lots.give_back(lot.id, taken)
        else:
            back -= taken
    if back == 0:
        raise NotReversible("its points came from lots that have expired since")
    return await uow.lots.post(withdrawal.account_id, "reversal", back, comment, at,
                               reverses=withdrawal.id)


def _count(kind: str, operations: int, points: int) -> None:
    metrics.LEDGER_OPERATIONS.labels(kind, "success").inc(operations)
    metrics.POINTS.labels(kind).inc(points)
