"""A hold's capture racing its expiry (the sweeps of holds and of lots, and reads), and a
withdrawal's reversal racing a withdrawal of the points it gives back: settled by the database
(real concurrency on PostgreSQL: each transaction on a connection of its own)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from uuid import UUID

from authloyalty.bootstrap import EmbeddedSystem
from authloyalty.loyalty.domain import (
    HoldExpired,
    HoldOutcome,
    InsufficientPoints,
    LedgerEntry,
    Principal,
)
from authloyalty.loyalty.hold_service import HoldService
from authloyalty.loyalty.service import LedgerService, Operation
from authloyalty.platform.clock import utcnow
from tests.integration.test_concurrency import assert_ledger_consistent, registered_user


async def _admin(system: EmbeddedSystem, email: str) -> Principal:
    admin, _ = await registered_user(system, email)
    return Principal(admin.user_id, admin.session_id, is_admin=True)


async def _history(system: EmbeddedSystem, owner: UUID) -> list[LedgerEntry]:
    async with system.loyalty.service._uow() as uow:
        entries: list[LedgerEntry] = await uow.ledger.page(owner, 50, None)
    return entries


async def test_a_capture_racing_its_holds_expiry_has_one_outcome(
        system: EmbeddedSystem) -> None:
    admin = await _admin(system, "expiry-admin@example.com")
    uow = system.loyalty.service._uow
    t0 = utcnow()
    expiry = t0 + timedelta(hours=1)
    ledger_at_t0, holds_at_t0 = LedgerService(uow, clock=lambda: t0), HoldService(
        uow, clock=lambda: t0)
    users, holds = [], []
    for i in range(10):  # even: the hold keeps lot points expiring with it; odd: lasting ones
        user, _ = await registered_user(system, f"expiry-{i}@example.com")
        if i % 2 == 0:
            await ledger_at_t0.operate(Operation(admin, user.user_id, "deposit", 50, "promo",
                                                 expires_at=expiry))
        placed = await holds_at_t0.hold(user, user.user_id, 50, "cart", 3600)
        assert placed.hold.expires_at == expiry
        users.append(user)
        holds.append(placed.hold.id)
    # The captures read their clock just before the expiry; the sweeps and reads just after.
    early = HoldService(uow, clock=lambda: expiry - timedelta(milliseconds=1))
    late = expiry + timedelta(seconds=1)
    late_ledger, late_holds = LedgerService(uow, clock=lambda: late), HoldService(
        uow, clock=lambda: late)
    captures = [early.capture(u, u.user_id, h, None) for u, h in zip(users, holds, strict=True)]
    expiries = [late_ledger.expire_lots(batch=2), late_holds.expire_due(limit=3),
                late_holds.expire_due(), *(late_ledger.balance(u, u.user_id) for u in users)]
    # Half the captures start before the sweeps, half after.
    half = len(captures) // 2
    outcomes = await asyncio.gather(*captures[:half], *expiries, *captures[half:],
                                    return_exceptions=True)
    outcomes = outcomes[:half] + outcomes[half + len(expiries):] + outcomes[half:][:len(expiries)]
    for i, (user, outcome) in enumerate(zip(users, outcomes, strict=False)):
        assert isinstance(outcome, HoldOutcome | HoldExpired), outcome
        account = await late_ledger.balance(user, user.user_id)
        kinds = [e.kind for e in await _history(system, user.user_id)]
        with_lot = i % 2 == 0  # 100 lasting points, and 50 of a lot held or 50 lasting held
        if isinstance(outcome, HoldOutcome):  # captured: its points left once
            assert kinds.count("withdrawal") == 1
            assert "expiry" not in kinds
            assert account.balance == (100 if with_lot else 50)
        else:  # expired: no withdrawal; the lot's points expired once, lasting ones available
            assert "withdrawal" not in kinds
            assert kinds.count("expiry") == (1 if with_lot else 0)
            assert account.balance == 100
        assert (account.held, account.available) == (0, account.balance)
        await assert_ledger_consistent(system, user.user_id, account.balance)
    assert all(not isinstance(o, Exception) for o in outcomes[len(users):])


async def test_a_withdrawals_reversal_racing_a_withdrawal_of_the_points_it_gives_back(
        system: EmbeddedSystem) -> None:
    admin = await _admin(system, "give-back-admin@example.com")
    service = system.loyalty.service

    async def attempt(call: Awaitable[object]) -> bool:
        try:
            await call
            return True
        except InsufficientPoints:
            return False

    for i in range(6):  # lasting points, then a lot, in turn
        user, _ = await registered_user(system, f"give-back-{i}@example.com")
        expires_at = utcnow() + timedelta(days=1) if i % 2 else None
        await service.operate(Operation(admin, user.user_id, "deposit", 50, "gift",
                                        expires_at=expires_at))
        spent = await service.operate(Operation(user, user.user_id, "withdrawal", 120, "tv"))
        assert isinstance(spent, LedgerEntry)
        # 30 left: the next withdrawal of 100 passes only with the 120 given back first.
        reversed_, withdrew = await asyncio.gather(
            attempt(service.reverse(admin, spent.id, "returned")),
            attempt(service.operate(Operation(user, user.user_id, "withdrawal", 100, "tv"))))
        assert reversed_  # a reversal of a withdrawal always gives back
        await assert_ledger_consistent(system, user.user_id, 50 if withdrew else 150)
