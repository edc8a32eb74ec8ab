"""Expiring lots and reversals, on the fake, SQLite and PostgreSQL, with the clock injected."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from authloyalty.events import UserRegistered
from authloyalty.loyalty.consumer import LoyaltyEventHandlers
from authloyalty.loyalty.domain import (
    AccountFrozen,
    AlreadyReversed,
    HoldExpired,
    InsufficientPoints,
    LedgerEntry,
    Movement,
    NewHold,
    NotReversible,
    Principal,
    TransactionNotFound,
)
from authloyalty.loyalty.hold_service import HoldService
from authloyalty.loyalty.lots import expire_due
from authloyalty.loyalty.movements import apply_in
from authloyalty.loyalty.revocations import RevokedSessions
from authloyalty.loyalty.service import Idempotency, LedgerService, Operation
from authloyalty.platform.audit import AuditQuery
from authloyalty.platform.bus import Envelope
from authloyalty.platform.errors import Forbidden, ValidationFailed

T0 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
ADMIN = Principal(uuid4(), uuid4(), is_admin=True)


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(loyalty_uow: Callable[[], Any], clock: Clock) -> LedgerService:
    return LedgerService(loyalty_uow, clock=clock)


async def open_account(loyalty_uow: Callable[[], Any], *deposits: tuple[int, timedelta | None]
                       ) -> tuple[UUID, list[LedgerEntry]]:
    """An account with ``deposits`` (amount, lifetime from T0 or None) made at T0."""
    owner = uuid4()
    async with loyalty_uow() as uow:
        await uow.accounts.open(owner, T0)
        entries = [await apply_in(uow, Movement(
            owner, "deposit", amount, "gift", T0,
            expires_at=None if life is None else T0 + life)) for amount, life in deposits]
        await uow.commit()
    return owner, entries


async def move(loyalty_uow: Callable[[], Any], owner: UUID, kind: str, amount: int,
               at: datetime = T0) -> LedgerEntry:
    async with loyalty_uow() as uow:
        entry: LedgerEntry = await apply_in(uow, Movement(owner, kind, amount, "m", at))  # type: ignore[arg-type]
        await uow.commit()
    return entry


async def lots_of(loyalty_uow: Callable[[], Any], owner: UUID) -> list[tuple[int, int, datetime]]:
    async with loyalty_uow() as uow:
        return [(lot.amount, lot.remaining, lot.expires_at)
                for lot in await uow.lots.live(owner)]


async def assert_consistent(loyalty_uow: Callable[[], Any], owner: UUID, balance: int) -> None:
    async with loyalty_uow() as uow:
        account = await uow.accounts.get(owner)
        total = await uow.ledger.total(owner)
        live = await uow.lots.live(owner)
    assert account.balance == total == balance
    assert sum(lot.remaining for lot in live) <= account.balance


async def reverse(service: LedgerService, entry_id: int) -> LedgerEntry:
    result = await service.reverse(ADMIN, entry_id, "undo")
    assert isinstance(result, LedgerEntry)
    return result


# Refusals first.

async def test_an_expiry_in_the_past_or_on_a_withdrawal_is_refused(
        loyalty_uow: Callable[[], Any], service: LedgerService) -> None:
    owner, _ = await open_account(loyalty_uow, (10, None))
    for kind, at in (("deposit", T0), ("deposit", T0 - timedelta(days=1)),
                     ("withdrawal", T0 + timedelta(days=1))):
        with pytest.raises(ValidationFailed):
            await service.operate(Operation(ADMIN, owner, kind, 5, "x", expires_at=at))  # type: ignore[arg-type]
    await assert_consistent(loyalty_uow, owner, 10)


async def test_a_keyed_deposit_replays_its_answer_after_its_points_expired(
        loyalty_uow: Callable[[], Any], service: LedgerService, clock: Clock) -> None:
    owner, _ = await open_account(loyalty_uow, (10, None))
    op = Operation(ADMIN, owner, "deposit", 5, "promo", expires_at=T0 + timedelta(hours=1))
    key = Idempotency.of("promo-1", "admin/deposit", owner, {"amount": 5})
    first = await service.operate(op, key)
    clock.now = T0 + timedelta(hours=2)  # the retry comes after expires_at
    assert await service.operate(op, key) == first
    await assert_consistent(loyalty_uow, owner, 15)  # replayed: not applied, not refused
    with pytest.raises(ValidationFailed):  # a new request with that expiry is refused
        await service.operate(op, Idempotency.of("promo-2", "admin/deposit", owner, {}))


async def test_reversal_refusals(loyalty_uow: Callable[[], Any], service: LedgerService,
                                 clock: Clock) -> None:
    owner, (deposit, lot_deposit) = await open_account(
        loyalty_uow, (100, None), (20, timedelta(hours=1)))
    with pytest.raises(TransactionNotFound):
        await reverse(service, 10**12)
    with pytest.raises(Forbidden):
        await service.reverse(Principal(owner, uuid4(), is_admin=False), deposit.id, "mine")
    withdrawal = await move(loyalty_uow, owner, "withdrawal", 90)  # 20 of the lot, 70 others
    with pytest.raises(InsufficientPoints):  # the deposit's points are spent
        await reverse(service, deposit.id)
    with pytest.raises(InsufficientPoints):  # and so are the lot's
        await reverse(service, lot_deposit.id)
    reversal = await reverse(service, withdrawal.id)
    with pytest.raises(AlreadyReversed):
        await reverse(service, withdrawal.id)
    with pytest.raises(NotReversible):
        await reverse(service, reversal.id)
    clock.now = T0 + timedelta(hours=2)
    assert await service.expire_lots() == 1
    async with loyalty_uow() as uow:
        expiry = (await uow.ledger.page(owner, 1, None))[0]
    assert expiry.kind == "expiry"
    with pytest.raises(NotReversible):
        await reverse(service, expiry.id)
    async with loyalty_uow() as uow:
        assert await uow.accounts.set_frozen(owner, T0, 1)
        await uow.commit()
    with pytest.raises(AccountFrozen):
        await reverse(service, deposit.id)
    await assert_consistent(loyalty_uow, owner, 100)


async def test_a_withdrawal_whose_lots_all_expired_is_not_reversible(
        loyalty_uow: Callable[[], Any], service: LedgerService, clock: Clock) -> None:
    owner, _ = await open_account(loyalty_uow, (30, timedelta(hours=1)))
    withdrawal = await move(loyalty_uow, owner, "withdrawal", 30)
    clock.now = T0 + timedelta(hours=1)
    with pytest.raises(NotReversible):
        await reverse(service, withdrawal.id)
    await assert_consistent(loyalty_uow, owner, 0)


# Lots.

async def test_withdrawals_take_the_soonest_expiring_points_first_and_lasting_ones_last(
        loyalty_uow: Callable[[], Any]) -> None:
    day = timedelta(days=1)
    owner, _ = await open_account(loyalty_uow, (100, None), (30, 2 * day), (20, day))
    await move(loyalty_uow, owner, "withdrawal", 40)
    assert await lots_of(loyalty_uow, owner) == [(30, 10, T0 + 2 * day)]  # the 20 are gone
    await move(loyalty_uow, owner, "withdrawal", 60)  # 10 from the lot, 50 lasting points
    assert await lots_of(loyalty_uow, owner) == []
    await move(loyalty_uow, owner, "deposit", 5)
    await assert_consistent(loyalty_uow, owner, 55)
    async with loyalty_uow() as uow:
        account = await uow.accounts.get(owner)
    assert account.next_expiry is None  # back on the fast path


async def test_an_expired_lot_leaves_its_remainder_as_one_expiry_entry(
        loyalty_uow: Callable[[], Any], service: LedgerService, clock: Clock) -> None:
    owner, _ = await open_account(loyalty_uow, (100, None), (50, timedelta(hours=1)),
                                  (40, timedelta(hours=3)))
    await move(loyalty_uow, owner, "withdrawal", 20)  # from the first lot: 30 left
    clock.now = T0 + timedelta(hours=1)  # the moment it expires
    assert await service.expire_lots() == 1
    assert await service.expire_lots() == 0  # expired once
    async with loyalty_uow() as uow:
        expiry = (await uow.ledger.page(owner, 1, None))[0]
    assert (expiry.kind, expiry.amount, expiry.comment, expiry.balance_after, expiry.created_at
            ) == ("expiry", 30, "expired", 140, clock.now)
    assert await lots_of(loyalty_uow, owner) == [(40, 40, T0 + timedelta(hours=3))]
    await assert_consistent(loyalty_uow, owner, 140)


async def test_a_read_after_expiry_never_shows_expired_points(
        loyalty_uow: Callable[[], Any], service: LedgerService, clock: Clock) -> None:
    owner, _ = await open_account(loyalty_uow, (10, None), (50, timedelta(hours=1)),
                                  (7, timedelta(hours=5)))
    me = Principal(owner, uuid4(), is_admin=False)
    account = await service.balance(me, owner)
    assert account.balance == 67
    assert [(lot.remaining, lot.expires_at) for lot in await service.expiring(account)] == [
        (50, T0 + timedelta(hours=1)), (7, T0 + timedelta(hours=5))]
    clock.now = T0 + timedelta(hours=1, seconds=1)  # no sweep has run
    account = await service.balance(me, owner)
    assert account.balance == 17
    assert [lot.remaining for lot in await service.expiring(account)] == [7]
    page = await service.history(me, owner, 10, None)
    assert [(e.kind, e.amount, e.balance_after) for e in page.items][:1] == [("expiry", 50, 17)]
    with pytest.raises(InsufficientPoints):  # nor may they be spent
        await service.operate(Operation(me, owner, "withdrawal", 18, "too much"))
    await assert_consistent(loyalty_uow, owner, 17)


async def test_a_withdrawal_expires_what_is_due_before_it_takes_points(
        loyalty_uow: Callable[[], Any]) -> None:
    owner, _ = await open_account(loyalty_uow, (10, None), (50, timedelta(hours=1)))
    with pytest.raises(InsufficientPoints):
        await move(loyalty_uow, owner, "withdrawal", 11, T0 + timedelta(hours=1))
    entry = await move(loyalty_uow, owner, "withdrawal", 10, T0 + timedelta(hours=1))
    assert entry.balance_after == 0
    await assert_consistent(loyalty_uow, owner, 0)


async def test_held_points_do_not_expire_until_released(
        loyalty_uow: Callable[[], Any]) -> None:
    owner, _ = await open_account(loyalty_uow, (10, None), (50, timedelta(hours=1)))
    async with loyalty_uow() as uow:
        hold = await uow.holds.place(NewHold(owner, 30, "cart", T0, T0 + timedelta(days=1)))
        await uow.commit()
    later = T0 + timedelta(hours=2)
    async with loyalty_uow() as uow:
        assert [e.amount for e in await expire_due(uow, owner, later)] == [20]
        await uow.commit()
    async with loyalty_uow() as uow:
        await uow.holds.settle(owner, hold.id, later, capture=False)
        assert [e.amount for e in await expire_due(uow, owner, later)] == [30]
        await uow.commit()
    await assert_consistent(loyalty_uow, owner, 10)


async def test_a_withdrawal_never_takes_points_past_their_expiry_that_a_hold_keeps(
        loyalty_uow: Callable[[], Any], clock: Clock) -> None:
    owner, _ = await open_account(loyalty_uow, (10, None), (50, timedelta(hours=1)))
    me = Principal(owner, uuid4(), is_admin=False)
    holds = HoldService(loyalty_uow, clock=clock)
    placed = await holds.hold(me, owner, 30, "cart", 86400)
    clock.now = T0 + timedelta(hours=2)  # 20 of the lot expire; the held 30 wait
    entry = await move(loyalty_uow, owner, "withdrawal", 10, clock.now)
    assert entry.balance_after == 30  # the 10 available: the lasting points
    assert await lots_of(loyalty_uow, owner) == [(50, 30, T0 + timedelta(hours=1))]
    released = await holds.release(me, owner, placed.hold.id)
    assert (released.balance, released.available) == (0, 0)  # the lot's 30 expire now
    await assert_consistent(loyalty_uow, owner, 0)


async def test_a_capture_read_before_expiry_after_a_sweep_expired_its_points_is_refused(
        loyalty_uow: Callable[[], Any], clock: Clock) -> None:
    # The capture read its clock just before the hold's expiry, then waited for the account
    # while a sweep, at a later time, expired the lot the hold kept: one outcome, not both.
    owner, _ = await open_account(loyalty_uow, (100, None), (50, timedelta(hours=1)))
    me = Principal(owner, uuid4(), is_admin=False)
    placed = await HoldService(loyalty_uow, clock=clock).hold(me, owner, 50, "cart", 3600)
    clock.now = T0 + timedelta(hours=1, seconds=1)
    assert await LedgerService(loyalty_uow, clock=clock).expire_lots() == 1
    early = HoldService(loyalty_uow, clock=lambda: T0 + timedelta(minutes=59))
    with pytest.raises(HoldExpired):
        await early.capture(me, owner, placed.hold.id, None)
    await assert_consistent(loyalty_uow, owner, 100)  # the lot's 50 left once


async def test_a_capture_takes_its_held_points_from_the_lots_even_after_their_expiry(
        loyalty_uow: Callable[[], Any]) -> None:
    owner, _ = await open_account(loyalty_uow, (10, None), (50, timedelta(hours=1)))
    async with loyalty_uow() as uow:
        hold = await uow.holds.place(NewHold(owner, 30, "cart", T0, T0 + timedelta(days=1)))
        await uow.commit()
    later = T0 + timedelta(hours=2)  # the lot is due; 30 of it are held
    async with loyalty_uow() as uow:
        settled = await uow.holds.settle(owner, hold.id, later, capture=True)
        entry = await apply_in(uow, Movement(owner, "withdrawal", settled.captured_amount,
                                             "cart", later, hold_id=hold.id))
        await uow.commit()
    assert entry.balance_after == 10  # 20 expired, 30 captured: the lasting 10 remain
    assert await lots_of(loyalty_uow, owner) == []
    await assert_consistent(loyalty_uow, owner, 10)


async def test_the_welcome_bonus_expires_after_its_configured_lifetime(
        loyalty_uow: Callable[[], Any], service: LedgerService, clock: Clock) -> None:
    owner = uuid4()
    handlers = LoyaltyEventHandlers(loyalty_uow, RevokedSessions(), 100, clock=clock,
                                    bonus_lifetime=timedelta(days=30))
    await handlers.user_registered(Envelope(UserRegistered(owner)))
    assert await lots_of(loyalty_uow, owner) == [(100, 100, T0 + timedelta(days=30))]
    clock.now = T0 + timedelta(days=30)
    assert await service.expire_lots() == 1
    await assert_consistent(loyalty_uow, owner, 0)


# Reversals.

async def test_reversing_a_withdrawal_restores_the_same_lots_with_their_expiry(
        loyalty_uow: Callable[[], Any], service: LedgerService, clock: Clock) -> None:
    day = timedelta(days=1)
    owner, _ = await open_account(loyalty_uow, (100, None), (30, 2 * day), (20, day))
    withdrawal = await move(loyalty_uow, owner, "withdrawal", 70)  # 20 + 30 + 20 lasting
    assert await lots_of(loyalty_uow, owner) == []
    clock.now = T0 + timedelta(hours=1)
    reversal = await reverse(service, withdrawal.id)
    assert (reversal.kind, reversal.amount, reversal.reverses, reversal.balance_after) == (
        "reversal", 70, withdrawal.id, 150)
    assert await lots_of(loyalty_uow, owner) == [(20, 20, T0 + day), (30, 30, T0 + 2 * day)]
    await assert_consistent(loyalty_uow, owner, 150)
    clock.now = T0 + day
    assert await service.expire_lots() == 1  # the restored points expire when they were due
    await assert_consistent(loyalty_uow, owner, 130)


async def test_reversing_a_withdrawal_gives_back_nothing_from_an_expired_lot(
        loyalty_uow: Callable[[], Any], service: LedgerService, clock: Clock) -> None:
    owner, _ = await open_account(loyalty_uow, (100, None), (20, timedelta(hours=1)))
    withdrawal = await move(loyalty_uow, owner, "withdrawal", 50)  # 20 from the lot
    clock.now = T0 + timedelta(hours=1)
    reversal = await reverse(service, withdrawal.id)
    assert (reversal.amount, reversal.balance_after) == (30, 100)
    await assert_consistent(loyalty_uow, owner, 100)


async def test_reversing_a_deposit_takes_its_points_back_and_is_audited(
        loyalty_uow: Callable[[], Any], service: LedgerService) -> None:
    owner, (lasting, lot_deposit) = await open_account(
        loyalty_uow, (100, None), (40, timedelta(hours=1)))
    first = await reverse(service, lot_deposit.id)
    assert (first.kind, first.amount, first.reverses, first.balance_after) == (
        "reversal", 40, lot_deposit.id, 100)
    assert await lots_of(loyalty_uow, owner) == []
    key = Idempotency.of("k-1", "admin/reversal", UUID(int=lasting.id), {"comment": "undo"})
    second = await service.reverse(ADMIN, lasting.id, "undo", key)
    assert await service.reverse(ADMIN, lasting.id, "undo", key) == second  # replayed
    assert isinstance(second, LedgerEntry)
    assert second.balance_after == 0
    await assert_consistent(loyalty_uow, owner, 0)
    async with loyalty_uow() as uow:
        history = await uow.ledger.page(owner, 10, None)
        audit = await uow.audit.page(AuditQuery(target_id=owner), 10, None)
    assert [e.reverses for e in history] == [lasting.id, lot_deposit.id, None, None]
    assert [(a.record.action, dict(a.record.outcome)) for a in audit] == [
        ("reversal", {"transaction_id": second.id, "reverses": lasting.id, "amount": 100,
                      "balance_after": 0}),
        ("reversal", {"transaction_id": first.id, "reverses": lot_deposit.id, "amount": 40,
                      "balance_after": 100})]


async def test_a_deposit_whose_points_are_held_cannot_be_reversed(
        loyalty_uow: Callable[[], Any], service: LedgerService) -> None:
    owner, (deposit,) = await open_account(loyalty_uow, (100, None))
    async with loyalty_uow() as uow:
        await uow.holds.place(NewHold(owner, 1, "cart", T0, T0 + timedelta(days=1)))
        await uow.commit()
    with pytest.raises(InsufficientPoints):
        await reverse(service, deposit.id)
    await assert_consistent(loyalty_uow, owner, 100)


# Holds over lots: whatever frees held points, or reserves points, expires what is due first.

async def test_a_release_after_the_lot_expired_answers_without_the_expired_points(
        loyalty_uow: Callable[[], Any], service: LedgerService, clock: Clock) -> None:
    owner, _ = await open_account(loyalty_uow, (10, None), (50, timedelta(hours=1)))
    me = Principal(owner, uuid4(), is_admin=False)
    holds = HoldService(loyalty_uow, clock=clock)
    placed = await holds.hold(me, owner, 30, "cart", 86400)
    clock.now = T0 + timedelta(hours=2)
    assert await service.expire_lots() == 1  # the 20 not held; the held 30 wait
    released = await holds.release(me, owner, placed.hold.id)
    assert (released.balance, released.available) == (10, 10)
    async with loyalty_uow() as uow:
        history = await uow.ledger.page(owner, 10, None)
    assert [(e.kind, e.amount, e.balance_after) for e in history][:2] == [
        ("expiry", 30, 10), ("expiry", 20, 40)]
    assert await lots_of(loyalty_uow, owner) == []
    await assert_consistent(loyalty_uow, owner, 10)


async def test_the_sweep_of_expired_holds_expires_the_lot_points_they_kept(
        loyalty_uow: Callable[[], Any], clock: Clock) -> None:
    owner, _ = await open_account(loyalty_uow, (10, None), (50, timedelta(hours=1)))
    me = Principal(owner, uuid4(), is_admin=False)
    holds = HoldService(loyalty_uow, clock=clock)
    await holds.hold(me, owner, 50, "cart", 2 * 3600)
    clock.now = T0 + timedelta(hours=3)  # the lot and then the hold ran out
    assert await holds.expire_due() == 1
    async with loyalty_uow() as uow:  # straight from the store: no read has expired anything
        account = await uow.accounts.get(owner)
        latest = (await uow.ledger.page(owner, 1, None))[0]
        assert await uow.lots.due(clock.now, None, 10) == []
    assert (account.balance, account.held, account.next_expiry) == (10, 0, None)
    assert (latest.kind, latest.amount, latest.created_at) == ("expiry", 50, clock.now)
    await assert_consistent(loyalty_uow, owner, 10)


async def test_a_hold_placed_after_a_lot_expired_cannot_reserve_its_points(
        loyalty_uow: Callable[[], Any], clock: Clock) -> None:
    owner, _ = await open_account(loyalty_uow, (10, None), (50, timedelta(hours=1)))
    me = Principal(owner, uuid4(), is_admin=False)
    holds = HoldService(loyalty_uow, clock=clock)
    clock.now = T0 + timedelta(hours=1)  # due, and no sweep has run
    with pytest.raises(InsufficientPoints):
        await holds.hold(me, owner, 11, "cart", None)
    placed = await holds.hold(me, owner, 10, "cart", None)
    assert (placed.balance, placed.available) == (10, 0)
    async with loyalty_uow() as uow:
        account = await uow.accounts.get(owner)
        latest = (await uow.ledger.page(owner, 1, None))[0]
    assert (account.balance, account.held, account.next_expiry) == (10, 10, None)
    assert (latest.kind, latest.amount) == ("expiry", 50)
    await assert_consistent(loyalty_uow, owner, 10)
