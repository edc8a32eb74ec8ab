"""Expiries and reversals racing each other and withdrawals, settled by the database (real
concurrency on PostgreSQL: each transaction on a connection of its own)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from authloyalty.bootstrap import EmbeddedSystem
from authloyalty.loyalty.domain import InsufficientPoints, LedgerEntry, Principal
from authloyalty.loyalty.service import LedgerService, Operation
from authloyalty.platform.clock import utcnow
from tests.integration.test_concurrency import assert_ledger_consistent, registered_user


async def test_two_sweeps_at_once_expire_each_lot_once(system: EmbeddedSystem) -> None:
    admin, _ = await registered_user(system, "sweep-admin@example.com")
    admin = Principal(admin.user_id, admin.session_id, is_admin=True)
    owners = [(await registered_user(system, f"sweep-{i}@example.com"))[0] for i in range(12)]
    expires_at = utcnow() + timedelta(hours=1)
    for owner in owners:
        for amount in (5, 7):  # two lots each
            await system.loyalty.service.operate(Operation(
                admin, owner.user_id, "deposit", amount, "promo", expires_at=expires_at))
    uow = system.loyalty.service._uow
    later = expires_at + timedelta(seconds=1)
    sweeps = [LedgerService(uow, clock=lambda: later) for _ in range(2)]
    written = await asyncio.gather(*(s.expire_lots(batch=5) for s in sweeps))
    assert sum(written) == 2 * len(owners)
    for owner in owners:
        async with uow() as unit:
            expiries = [e for e in await unit.ledger.page(owner.user_id, 10, None)
                        if e.kind == "expiry"]
        assert sorted(e.amount for e in expiries) == [5, 7]
        await assert_ledger_consistent(system, owner.user_id, 100)


async def test_a_reversal_racing_a_withdrawal_of_the_same_points_lets_one_through(
        system: EmbeddedSystem) -> None:
    admin, _ = await registered_user(system, "race-admin@example.com")
    admin = Principal(admin.user_id, admin.session_id, is_admin=True)
    service = system.loyalty.service

    async def withdraw(owner: Principal) -> bool:
        try:
            await service.operate(Operation(owner, owner.user_id, "withdrawal", 120, "race"))
            return True
        except InsufficientPoints:
            return False

    async def reverse(deposit: LedgerEntry) -> bool:
        try:
            await service.reverse(admin, deposit.id, "race")
            return True
        except InsufficientPoints:
            return False

    for i in range(6):  # lasting points, then a lot, in turn
        owner, _ = await registered_user(system, f"race-{i}@example.com")
        expires_at = utcnow() + timedelta(days=1) if i % 2 else None
        deposit = await service.operate(Operation(admin, owner.user_id, "deposit", 50, "gift",
                                                  expires_at=expires_at))
        assert isinstance(deposit, LedgerEntry)
        withdrew, reversed_ = await asyncio.gather(withdraw(owner), reverse(deposit))
        assert withdrew != reversed_
        await assert_ledger_consistent(system, owner.user_id, 30 if withdrew else 100)
