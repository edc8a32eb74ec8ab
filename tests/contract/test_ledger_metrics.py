"""What the ledger's metrics count: holds by outcome and their points, expiries and reversals
once each, when their transaction commits (on the fake, SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from authloyalty.loyalty.domain import HoldNotActive, InsufficientPoints, Movement
from authloyalty.loyalty.hold_service import HoldService
from authloyalty.loyalty.lots import expire_due
from authloyalty.loyalty.movements import apply_in
from authloyalty.loyalty.service import Idempotency, LedgerService
from tests.contract.test_loyalty_lots import ADMIN, T0, Clock, open_account


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Counts:
    """The change of some samples since this object was made."""

    def __init__(self, *samples: tuple[str, dict[str, str]]) -> None:
        self._samples = samples
        self._before = [sample(name, **labels) for name, labels in samples]

    def delta(self) -> list[float]:
        return [sample(name, **labels) - before
                for (name, labels), before in zip(self._samples, self._before, strict=True)]


EXPIRIES = (("authloyalty_ledger_operations_total", {"kind": "expiry", "outcome": "success"}),
            ("authloyalty_points_total", {"kind": "expiry"}))


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_an_expiry_is_counted_once_and_only_when_committed(
        loyalty_uow: Callable[[], Any], clock: Clock) -> None:
    owner, _ = await open_account(loyalty_uow, (10, None), (40, timedelta(hours=1)))
    counts = Counts(*EXPIRIES)
    later = T0 + timedelta(hours=2)
    async with loyalty_uow() as uow:  # expired, then rolled back: nothing happened
        assert len(await expire_due(uow, owner, later)) == 1
    assert counts.delta() == [0, 0]
    async with loyalty_uow() as uow:  # a withdrawal refused after expiring the lot
        with pytest.raises(InsufficientPoints):
            await apply_in(uow, Movement(owner, "withdrawal", 30, "m", later))
    assert counts.delta() == [0, 0]
    clock.now = later
    service = LedgerService(loyalty_uow, clock=clock)
    assert await service.expire_lots() == 1
    assert await service.expire_lots() == 0  # swept again: nothing more expires
    assert counts.delta() == [1, 40]


async def test_holds_are_counted_by_outcome_with_their_points(
        loyalty_uow: Callable[[], Any], clock: Clock) -> None:
    owner, _ = await open_account(loyalty_uow, (100, None))
    holds = HoldService(loyalty_uow, clock=clock)
    counts = Counts(
        ("authloyalty_holds_total", {"action": "hold", "outcome": "success"}),
        ("authloyalty_holds_total", {"action": "hold", "outcome": "insufficient_points"}),
        ("authloyalty_holds_total", {"action": "capture", "outcome": "success"}),
        ("authloyalty_holds_total", {"action": "capture", "outcome": "hold_not_active"}),
        ("authloyalty_hold_points_total", {"action": "held"}),
        ("authloyalty_hold_points_total", {"action": "captured"}),
        ("authloyalty_hold_points_total", {"action": "released"}))
    key = Idempotency.of("cart-1", "hold", owner, {"amount": 30})
    placed = await holds.hold(ADMIN, owner, 30, "cart", 600, key)
    assert await holds.hold(ADMIN, owner, 30, "cart", 600, key) == placed  # a replay counts once
    with pytest.raises(InsufficientPoints):
        await holds.hold(ADMIN, owner, 80, "too much", 600)
    await holds.capture(ADMIN, owner, placed.hold.id, 10)
    with pytest.raises(HoldNotActive):
        await holds.capture(ADMIN, owner, placed.hold.id, None)
    assert counts.delta() == [1, 1, 1, 1, 30, 10, 20]


async def test_a_reversal_is_counted_with_its_points(
        loyalty_uow: Callable[[], Any], clock: Clock) -> None:
    owner, (deposit,) = await open_account(loyalty_uow, (25, None))
    counts = Counts(("authloyalty_ledger_operations_total",
                     {"kind": "reversal", "outcome": "success"}),
                    ("authloyalty_points_total", {"kind": "reversal"}))
    key = Idempotency.of("undo-1", "admin/reversal", owner, {})
    service = LedgerService(loyalty_uow, clock=clock)
    first = await service.reverse(ADMIN, deposit.id, "undo", key)
    assert await service.reverse(ADMIN, deposit.id, "undo", key) == first
    assert counts.delta() == [1, 25]
