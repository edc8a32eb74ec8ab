"""The ledger's two ports, one behaviour: the plain adapters (a unit of work per request) on
the fake, SQLite and PostgreSQL, and the coalesced adapters on PostgreSQL, answer alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from authloyalty.bootstrap import loyalty_database
from authloyalty.loyalty.domain import (
    AccountNotFound,
    AccountReads,
    IdempotencyClaim,
    IdempotencyRecord,
    InsufficientPoints,
    LedgerEntry,
    Movement,
    Movements,
)
from authloyalty.loyalty.movements import (
    CoalescedAccountReads,
    CoalescedMovements,
    UnitOfWorkAccountReads,
    UnitOfWorkMovements,
)
from authloyalty.loyalty.uow import SqlLoyaltyUnitOfWork
from authloyalty.platform.database import PgDatabase
from authloyalty.platform.engines import create_engine
from authloyalty.platform.migrations import upgrade
from tests.conftest import settings_for
from tests.fakes import FakeLoyaltyStore

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


@dataclass
class Ports:
    """One pair of adapters and the units of work behind them (to set up and to check)."""

    uow: Callable[[], Any]
    accounts: AccountReads
    movements: Movements


@pytest.fixture(params=["plain-fake", "plain-sqlite", "plain-postgres", "coalesced-postgres"])
async def ports(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ports]:
    """The ledger's ports through each adapter on each database it runs on."""
    adapter, backend = request.param.split("-")
    if backend == "fake":
        store = FakeLoyaltyStore()
        yield Ports(store.uow, UnitOfWorkAccountReads(store.uow),
                    UnitOfWorkMovements(store.uow))
        return
    url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    target = loyalty_database(settings_for(tmp_path, url))
    engine = create_engine(target)
    await upgrade("loyalty", engine, target)
    from authloyalty.platform.database import open_database

    database = PgDatabase(target) if backend == "postgres" else open_database(target, engine)

    def uow() -> SqlLoyaltyUnitOfWork:
        return SqlLoyaltyUnitOfWork(database)

    plain = UnitOfWorkMovements(uow)
    closers: list[CoalescedAccountReads | CoalescedMovements] = []
    if adapter == "coalesced":
        reads = CoalescedAccountReads(database)
        movements = CoalescedMovements(database, keyed=plain)
        closers = [reads, movements]
        built = Ports(uow, reads, movements)
    else:
        built = Ports(uow, UnitOfWorkAccountReads(uow), plain)
    try:
        yield built
    finally:
        for closer in closers:
            await closer.aclose()
        await database.dispose()
        await engine.dispose()


async def opened(ports: Ports, *balances: int) -> list[UUID]:
    ids = [uuid4() for _ in balances]
    async with ports.uow() as uow:
        for user_id, balance in zip(ids, balances, strict=True):
            assert await uow.accounts.open(user_id, NOW)
            if balance:
                await uow.ledger.apply(Movement(user_id, "deposit", balance, "opening", NOW))
        await uow.commit()
    return ids


async def ledger_of(ports: Ports, account: UUID) -> tuple[int, int, int]:
    """(stored balance, signed sum of the ledger, number of entries)."""
    async with ports.uow() as uow:
        stored = await uow.accounts.get(account)
        total = await uow.ledger.total(account)
        entries = await uow.ledger.page(account, 1000, None)
    assert stored is not None
    return stored.balance, total, len(entries)


def withdrawal(account: UUID, amount: int, comment: str = "tea") -> Movement:
    return Movement(account, "withdrawal", amount, comment, NOW)


async def test_reads_see_committed_balances(ports: Ports) -> None:
    rich, poor = await opened(ports, 100, 0)
    accounts = await asyncio.gather(ports.accounts.get(rich), ports.accounts.get(poor),
                                    ports.accounts.get(uuid4()), ports.accounts.get(rich))
    assert [a.balance if a else None for a in accounts] == [100, 0, None, 100]
    assert accounts[0] is not None
    assert accounts[0].created_at == NOW


async def test_a_movement_is_one_entry_and_a_refusal_changes_nothing(ports: Ports) -> None:
    (account,) = await opened(ports, 100)
    entry = await ports.movements.apply(withdrawal(account, 60, "coffee ☕"))
    assert isinstance(entry, LedgerEntry)
    assert (entry.account_id, entry.kind, entry.amount, entry.comment, entry.balance_after,
            entry.created_at) == (account, "withdrawal", 60, "coffee ☕", 40, NOW)
    with pytest.raises(InsufficientPoints):
        await ports.movements.apply(withdrawal(account, 41))
    with pytest.raises(AccountNotFound):
        await ports.movements.apply(Movement(uuid4(), "deposit", 1, "gift", NOW))
    deposit = await ports.movements.apply(Movement(account, "deposit", 5, "gift", NOW))
    assert isinstance(deposit, LedgerEntry)
    assert deposit.id > entry.id
    assert await ledger_of(ports, account) == (45, 45, 3)


async def test_concurrent_movements_of_one_account_never_overdraw(ports: Ports) -> None:
    (account,) = await opened(ports, 100)
    results = await asyncio.gather(*(ports.movements.apply(withdrawal(account, 30))
                                     for _ in range(5)), return_exceptions=True)
    entries = [r for r in results if isinstance(r, LedgerEntry)]
    assert sorted(e.balance_after for e in entries) == [10, 40, 70]
    assert sum(isinstance(r, InsufficientPoints) for r in results) == 2
    assert await ledger_of(ports, account) == (10, 10, 4)


async def test_a_keyed_movement_applies_once_and_returns_its_record(ports: Ports) -> None:
    (account,) = await opened(ports, 50)
    once = IdempotencyClaim(account, "k-1", "f" * 64)
    outcomes = await asyncio.gather(*(ports.movements.apply(withdrawal(account, 10), once)
                                      for _ in range(5)))
    entries = [o for o in outcomes if isinstance(o, LedgerEntry)]
    records = [o for o in outcomes if isinstance(o, IdempotencyRecord)]
    assert len(entries) == 1
    assert len(records) == 4
    assert all(r.result == entries[0] and r.fingerprint == "f" * 64 for r in records)
    assert await ledger_of(ports, account) == (40, 40, 2)
