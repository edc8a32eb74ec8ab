"""Coalesced balance reads and group-committed movements on a real PostgreSQL: concurrent
requests share statements, yet each gets the answer a transaction of its own would give."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from authloyalty.bootstrap import EmbeddedSystem, build_embedded, loyalty_database
from authloyalty.loyalty.domain import (
    AccountNotFound,
    InsufficientPoints,
    LedgerEntry,
    Movement,
    Principal,
)
from authloyalty.loyalty.movements import (
    CoalescedAccountReads,
    CoalescedMovements,
    UnitOfWorkMovements,
)
from authloyalty.loyalty.service import Idempotency, Operation
from authloyalty.platform.database import InvalidValue, PgDatabase
from tests.conftest import FAST_ARGON2, settings_for

ADMIN = Principal(user_id=uuid4(), session_id=uuid4(), is_admin=True)


def owner(account: UUID) -> Principal:
    """The account's owner, a user like any other."""
    return Principal(user_id=account, session_id=uuid4(), is_admin=False)



async def _system(tmp_path: Path, pg_url: str, coalesce: bool) -> EmbeddedSystem:
    settings = settings_for(tmp_path, pg_url, sso={"argon2": FAST_ARGON2.model_dump()},
                            loyalty={"coalesce": coalesce})
    system = build_embedded(settings)
    await system.migrate()
    return system


@pytest.fixture
async def system(tmp_path: Path, pg_url: str) -> AsyncIterator[EmbeddedSystem]:
    built = await _system(tmp_path, pg_url, coalesce=True)
    try:
        yield built
    finally:
        await built.stop()


async def open_accounts(system: EmbeddedSystem, balances: list[int]) -> list[UUID]:
    ids = [uuid4() for _ in balances]
    now = datetime.now(UTC)
    async with system.loyalty.service._uow() as uow:
        for user_id in ids:
            assert await uow.accounts.open(user_id, now)
        await uow.commit()
    for user_id, balance in zip(ids, balances, strict=True):
        if balance:
            await system.loyalty.service.operate(
                Operation(ADMIN, user_id, "deposit", balance, "opening"))
    return ids


async def ledger_of(system: EmbeddedSystem, account: UUID) -> tuple[int, int, int]:
    """(stored balance, sum of the ledger, number of entries), straight from SQL."""
    async with system.loyalty.service._uow() as uow:
        stored = await uow.accounts.get(account)
        total = await uow.ledger.total(account)
        entries = await uow.ledger.page(account, 1000, None)
    assert stored is not None
    return stored.balance, total, len(entries)


def coalescers(system: EmbeddedSystem) -> tuple[CoalescedAccountReads, CoalescedMovements]:
    reads, movements = system.loyalty.coalescers
    assert isinstance(reads, CoalescedAccountReads)
    assert isinstance(movements, CoalescedMovements)
    return reads, movements


async def test_concurrent_movements_commit_together_with_one_answer_each(
        system: EmbeddedSystem) -> None:
    rich, poor, busy = await open_accounts(system, [1_000, 5, 100])
    unknown = uuid4()
    service = system.loyalty.service
    _, movements = coalescers(system)
    before = movements.batches.batches

    def op(account: UUID, kind: str, amount: int) -> Operation:
        # Owners withdraw (coalesced); a deposit is an admin's, audited in a transaction of
        # its own, outside the batches.
        actor = ADMIN if kind == "deposit" else owner(account)
        return Operation(actor, account, kind, amount, f"{kind} {amount}")  # type: ignore[arg-type]

    ops = ([op(rich, "withdrawal", 1) for _ in range(3)] + [op(poor, "withdrawal", 6)]
           + [op(unknown, "withdrawal", 1), op(unknown, "deposit", 1)]
           + [op(busy, "withdrawal", 30) for _ in range(5)])
    results = await asyncio.gather(*(service.operate(o) for o in ops),
                                   return_exceptions=True)

    # rich: three ordered withdrawals; poor: refused; unknown: not found, for both kinds
    assert [r.balance_after for r in results[:3]] == [999, 998, 997]  # type: ignore[union-attr]
    assert isinstance(results[3], InsufficientPoints)
    assert isinstance(results[4], AccountNotFound)
    assert isinstance(results[5], AccountNotFound)
    # busy: 100 points, five withdrawals of 30 in submission order: three pass, two refused
    assert [r.balance_after for r in results[6:9]] == [70, 40, 10]  # type: ignore[union-attr]
    assert all(isinstance(r, InsufficientPoints) for r in results[9:])
    # far fewer statements than requests: the busy account's five need five batches, the
    # others ride along
    assert movements.batches.batches - before == 5
    assert await ledger_of(system, rich) == (997, 997, 4)
    assert await ledger_of(system, poor) == (5, 5, 1)  # nothing written for the refusal
    assert await ledger_of(system, busy) == (10, 10, 4)


async def test_concurrent_balance_reads_share_one_query(system: EmbeddedSystem) -> None:
    ids = await open_accounts(system, [10, 20, 30])
    reads, _ = coalescers(system)
    before = reads.batches.batches
    owners = [Principal(user_id=i, session_id=uuid4(), is_admin=False) for i in ids]
    accounts = await asyncio.gather(
        *(system.loyalty.service.balance(o, o.user_id) for o in owners * 4),
        system.loyalty.service.balance(ADMIN, uuid4()), return_exceptions=True)
    assert [a.balance for a in accounts[:12]] == [10, 20, 30] * 4  # type: ignore[union-attr]
    assert isinstance(accounts[12], AccountNotFound)
    assert reads.batches.batches - before == 1


async def test_movements_with_an_idempotency_key_keep_their_own_transaction(
        system: EmbeddedSystem) -> None:
    (account,) = await open_accounts(system, [50])
    _, movements = coalescers(system)
    before = movements.batches.batches
    operation = Operation(ADMIN, account, "withdrawal", 10, "once")
    key = Idempotency.of("k-1", "w", account, {"amount": 10})
    replies = await asyncio.gather(
        *(system.loyalty.service.operate(operation, key) for _ in range(5)))
    assert len(set(replies)) == 1
    assert movements.batches.batches == before
    assert await ledger_of(system, account) == (40, 40, 2)


async def test_two_processes_batching_the_same_accounts_in_opposite_orders_never_deadlock(
        system: EmbeddedSystem) -> None:
    ids = await open_accounts(system, [10_000] * 200)
    target = loyalty_database(system.settings)
    first, second = PgDatabase(target), PgDatabase(target)  # two pools: two "processes"
    a = CoalescedMovements(first, keyed=UnitOfWorkMovements(system.loyalty.service._uow))
    b = CoalescedMovements(second, keyed=UnitOfWorkMovements(system.loyalty.service._uow))
    now = datetime.now(UTC)
    try:
        for _ in range(10):
            await asyncio.wait_for(asyncio.gather(
                *(a.apply(Movement(i, "withdrawal", 1, "a", now)) for i in ids),
                *(b.apply(Movement(i, "withdrawal", 1, "b", now)) for i in reversed(ids))),
                timeout=30)
    finally:
        await first.dispose()
        await second.dispose()
    for account in ids:
        assert await ledger_of(system, account) == (10_000 - 20, 10_000 - 20, 21)


async def test_coalescing_off_gives_the_same_answers(tmp_path: Path, pg_url: str) -> None:
    system = await _system(tmp_path, pg_url, coalesce=False)
    try:
        assert system.loyalty.coalescers == []
        (account,) = await open_accounts(system, [100])
        results = await asyncio.gather(*(system.loyalty.service.operate(
            Operation(ADMIN, account, "withdrawal", 30, "w")) for _ in range(5)),
            return_exceptions=True)
        assert sum(isinstance(r, LedgerEntry) for r in results) == 3
        assert sum(isinstance(r, InsufficientPoints) for r in results) == 2
        assert await ledger_of(system, account) == (10, 10, 4)
    finally:
        await system.stop()


async def test_a_statement_one_request_poisons_fails_only_that_request(
        system: EmbeddedSystem) -> None:
    # Below the HTTP validation (which refuses NUL first): a value PostgreSQL itself refuses
    # fails the coalesced statement, and only its sender may see that.
    users = await open_accounts(system, [100] * 13)
    service = system.loyalty.service
    _, movements = coalescers(system)
    for _round in range(3):
        comments = ["spent"] * 13
        comments[5] = "a\x00b"
        results = await asyncio.gather(*(service.operate(
            Operation(owner(user), user, "withdrawal", 1, comment))
            for user, comment in zip(users, comments, strict=True)), return_exceptions=True)
        assert isinstance(results[5], InvalidValue)
        assert all(isinstance(r, LedgerEntry)
                   for i, r in enumerate(results) if i != 5), results
    assert movements.batches._split_runs._value.get() > 0  # they did share a statement
    for index, user in enumerate(users):
        expected = 100 if index == 5 else 97
        assert await ledger_of(system, user) == (expected, expected, 1 if index == 5 else 4)
