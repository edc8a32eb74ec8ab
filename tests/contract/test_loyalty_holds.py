"""Holds behave alike on the fake, SQLite and PostgreSQL: repository and use cases."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from authloyalty.loyalty.domain import (
    AccountFrozen,
    CaptureExceedsHold,
    HoldExpired,
    HoldNotActive,
    HoldNotFound,
    IdempotencyKeyReused,
    InsufficientPoints,
    Movement,
    NewHold,
    Principal,
)
from authloyalty.loyalty.hold_service import HoldService
from authloyalty.loyalty.service import Idempotency, LedgerService, Operation

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


async def _account(loyalty_uow: Callable[[], Any], points: int = 100) -> UUID:
    owner = uuid4()
    async with loyalty_uow() as uow:
        await uow.accounts.open(owner, NOW)
        await uow.ledger.apply(Movement(owner, "deposit", points, "registration", NOW))
        await uow.commit()
    return owner


async def test_a_hold_refuses_more_than_the_available_points_and_a_frozen_account(
        loyalty_uow: Callable[[], Any]) -> None:
    owner = await _account(loyalty_uow)
    async with loyalty_uow() as uow:
        await uow.holds.place(NewHold(owner, 60, "cart", NOW, NOW + MINUTE))
        with pytest.raises(InsufficientPoints):
            await uow.holds.place(NewHold(owner, 41, "cart 2", NOW, NOW + MINUTE))
        with pytest.raises(InsufficientPoints):
            await uow.ledger.apply(Movement(owner, "withdrawal", 41, "tea", NOW))
        entry = await uow.ledger.apply(Movement(owner, "withdrawal", 40, "tea", NOW))
        deposit = await uow.ledger.apply(Movement(owner, "deposit", 5, "gift", NOW))
        assert await uow.accounts.set_frozen(owner, NOW, 1)
        with pytest.raises(AccountFrozen):
            await uow.holds.place(NewHold(owner, 1, "frozen", NOW, NOW + MINUTE))
        await uow.commit()
    async with loyalty_uow() as uow:
        account = await uow.holds.standing(owner, NOW)
        total = await uow.ledger.total(owner)
    assert (entry.balance_after, deposit.balance_after) == (60, 65)
    assert account is not None
    assert (account.balance, account.held, account.available, total) == (65, 60, 5, 65)


async def test_an_expired_hold_frees_its_points_before_any_sweep(
        loyalty_uow: Callable[[], Any]) -> None:
    owner = await _account(loyalty_uow)
    later = NOW + 2 * MINUTE
    async with loyalty_uow() as uow:
        hold = await uow.holds.place(NewHold(owner, 60, "cart", NOW, NOW + MINUTE))
        await uow.commit()
    async with loyalty_uow() as uow:
        before = await uow.holds.standing(owner, NOW)
        after = await uow.holds.standing(owner, later)
        assert await uow.holds.due(later, 10) == [owner]
        listed = [h.state_at(later) for h in await uow.holds.page(owner, "expired", later,
                                                                     10, None)]
    async with loyalty_uow() as uow:  # a withdrawal releases the expired hold itself
        entry = await uow.ledger.apply(Movement(owner, "withdrawal", 100, "all", later))
        await uow.commit()
    async with loyalty_uow() as uow:
        stored = await uow.holds.get(owner, hold.id)
        left = await uow.holds.standing(owner, later)
        due = await uow.holds.due(later, 10)
    assert before is not None
    assert after is not None
    assert left is not None
    assert (before.available, after.available, after.held) == (40, 100, 0)
    assert listed == ["expired"]
    assert entry.balance_after == 0
    assert stored is not None
    assert stored.state == "expired"
    assert (left.balance, left.held, due) == (0, 0, [])


async def test_settling_a_hold_once_and_the_refusals(loyalty_uow: Callable[[], Any]) -> None:
    owner, other = await _account(loyalty_uow), await _account(loyalty_uow)
    async with loyalty_uow() as uow:
        kept = await uow.holds.place(NewHold(owner, 30, "a", NOW, NOW + MINUTE))
        gone = await uow.holds.place(NewHold(owner, 20, "b", NOW, NOW + MINUTE))
        late = await uow.holds.place(NewHold(owner, 10, "c", NOW, NOW + MINUTE))
        await uow.commit()
    async with loyalty_uow() as uow:
        with pytest.raises(CaptureExceedsHold):
            await uow.holds.settle(owner, kept.id, NOW, capture=True, amount=31)
        captured = await uow.holds.settle(owner, kept.id, NOW, capture=True, amount=25)
        released = await uow.holds.settle(owner, gone.id, NOW, capture=False)
        with pytest.raises(HoldNotActive):
            await uow.holds.settle(owner, kept.id, NOW, capture=False)
        with pytest.raises(HoldNotFound):
            await uow.holds.settle(other, late.id, NOW, capture=False)
        with pytest.raises(HoldNotFound):
            await uow.holds.settle(owner, 10**12, NOW, capture=False)
        with pytest.raises(HoldExpired):
            await uow.holds.settle(owner, late.id, NOW + MINUTE, capture=True)
        await uow.commit()
    async with loyalty_uow() as uow:
        account = await uow.holds.standing(owner, NOW)
        states = [(h.id, h.state, h.captured_amount)
                  for h in await uow.holds.page(owner, None, NOW, 10, None)]
        second = await uow.holds.page(owner, None, NOW, 10, late.id)
    assert (captured.state, captured.captured_amount, released.state) == (
        "captured", 25, "released")
    assert account is not None
    assert (account.balance, account.held) == (100, 10)
    assert states == [(late.id, "held", 0), (gone.id, "released", 0),
                      (kept.id, "captured", 25)]
    assert [h.id for h in second] == [gone.id, kept.id]


async def test_use_cases_capture_release_replay_and_keep_the_history_summing(
        loyalty_uow: Callable[[], Any]) -> None:
    owner = await _account(loyalty_uow)
    clock = Clock()
    holds = HoldService(loyalty_uow, clock=clock)
    ledger = LedgerService(loyalty_uow, clock=clock)
    user = Principal(owner, uuid4(), is_admin=False)
    key = Idempotency.of("k1", "me/hold", owner, {"amount": 70})
    placed = await holds.hold(user, owner, 70, "cart", None, key)
    assert await holds.hold(user, owner, 70, "cart", None, key) == placed  # replayed
    with pytest.raises(IdempotencyKeyReused):
        await holds.hold(user, owner, 70, "cart", None,
                         Idempotency.of("k1", "me/hold", owner, {"amount": 71}))
    with pytest.raises(InsufficientPoints):
        await ledger.operate(Operation(user, owner, "withdrawal", 31, "tea"))
    assert (placed.balance, placed.available, placed.hold.expires_at) == (
        100, 30, NOW + timedelta(seconds=900))
    capture_key = Idempotency.of("k2", "me/capture", owner, {"hold_id": placed.hold.id})
    captured = await holds.capture(user, owner, placed.hold.id, 50, capture_key)
    assert await holds.capture(user, owner, placed.hold.id, 50, capture_key) == captured
    assert captured.entry is not None
    assert (captured.entry.amount, captured.entry.hold_id, captured.balance,
            captured.available) == (50, placed.hold.id, 50, 50)
    with pytest.raises(HoldNotActive):
        await holds.release(user, owner, placed.hold.id)
    short = await holds.hold(user, owner, 50, "short", 60)
    clock.now = NOW + 2 * MINUTE
    with pytest.raises(HoldExpired):
        await holds.capture(user, owner, short.hold.id, None)
    assert (await ledger.balance(user, owner)).available == 50
    assert await holds.expire_due() == 1
    async with loyalty_uow() as uow:
        total = await uow.ledger.total(owner)
        history = await uow.ledger.page(owner, 10, None)
    assert total == sum(e.amount if e.kind == "deposit" else -e.amount for e in history) == 50
    page = await holds.holds(user, owner, "expired", 10, None)
    assert [h.id for h in page.items] == [short.hold.id]


async def test_parallel_captures_releases_holds_and_withdrawals_one_winner_never_negative(
        loyalty_uow: Callable[[], Any]) -> None:
    owner = await _account(loyalty_uow)
    clock = Clock()
    holds = HoldService(loyalty_uow, clock=clock)
    ledger = LedgerService(loyalty_uow, clock=clock)
    user = Principal(owner, uuid4(), is_admin=False)
    placed = await holds.hold(user, owner, 40, "cart", None)
    settles = [holds.capture(user, owner, placed.hold.id, None) if i % 2 else
               holds.release(user, owner, placed.hold.id) for i in range(8)]
    outcomes = await asyncio.gather(*settles, return_exceptions=True)
    assert sum(not isinstance(o, Exception) for o in outcomes) == 1
    assert all(isinstance(o, HoldNotActive) for o in outcomes if isinstance(o, Exception))
    balance = (await ledger.balance(user, owner)).balance
    racers = [holds.hold(user, owner, 7, "race", None) if i % 2 else
              ledger.operate(Operation(user, owner, "withdrawal", 7, "race"))
              for i in range(20)]
    raced = await asyncio.gather(*racers, return_exceptions=True)
    assert all(isinstance(o, InsufficientPoints) for o in raced if isinstance(o, Exception))
    account = await ledger.balance(user, owner)
    wins = sum(not isinstance(o, Exception) for o in raced)
    assert wins == balance // 7
    assert account.available == balance - 7 * wins >= 0
