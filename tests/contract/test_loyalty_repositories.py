"""One behaviour, three implementations: the fake must act like SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from authloyalty.loyalty.domain import (
    AccountFrozen,
    AccountNotFound,
    IdempotencyRecord,
    InsufficientPoints,
    KeyTaken,
    LedgerEntry,
    Movement,
)

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


async def test_accounts_open_once_and_never_go_negative(loyalty_uow: Callable[[], Any]) -> None:
    owner = uuid4()
    async with loyalty_uow() as uow:
        assert await uow.accounts.open(owner, NOW)
        assert not await uow.accounts.open(owner, NOW)
        await uow.ledger.apply(Movement(owner, "deposit", 100, "registration", NOW))
        entry = await uow.ledger.apply(Movement(owner, "withdrawal", 60, "tea", NOW))
        assert (entry.balance_after, entry.account_id, entry.created_at) == (40, owner, NOW)
        with pytest.raises(InsufficientPoints):
            await uow.ledger.apply(Movement(owner, "withdrawal", 41, "cake", NOW))
        with pytest.raises(AccountNotFound):
            await uow.ledger.apply(Movement(uuid4(), "deposit", 5, "gift", NOW))
        await uow.commit()
    async with loyalty_uow() as uow:
        account = await uow.accounts.get(owner)
        assert await uow.accounts.get(uuid4()) is None
        total = await uow.ledger.total(owner)
        entries = await uow.ledger.page(owner, 10, None)
    assert account is not None
    assert (account.balance, account.created_at) == (40, NOW)
    # every change is one entry, and nothing was written for the refusals
    assert total == 40
    assert [(e.kind, e.amount, e.balance_after) for e in entries] == [
        ("withdrawal", 60, 40), ("deposit", 100, 100)]


async def test_a_frozen_account_refuses_movements_and_keeps_its_balance(
        loyalty_uow: Callable[[], Any]) -> None:
    owner = uuid4()
    async with loyalty_uow() as uow:
        assert not await uow.accounts.set_frozen(owner, NOW, 1)  # no account yet
        assert await uow.accounts.open(owner, NOW)
        await uow.ledger.apply(Movement(owner, "deposit", 100, "registration", NOW))
        assert await uow.accounts.set_frozen(owner, NOW, 1)
        await uow.commit()
    for kind in ("deposit", "withdrawal"):
        async with loyalty_uow() as uow:
            with pytest.raises(AccountFrozen):
                await uow.ledger.apply(Movement(owner, kind, 1, "frozen", NOW))
    async with loyalty_uow() as uow:
        frozen = await uow.accounts.get(owner)
        assert await uow.accounts.set_frozen(owner, None, 2)
        entry = await uow.ledger.apply(Movement(owner, "withdrawal", 1, "thawed", NOW))
        await uow.commit()
    assert frozen is not None
    assert (frozen.balance, frozen.state, frozen.frozen_at) == (100, "frozen", NOW)
    assert entry.balance_after == 99


async def test_a_lifecycle_change_applies_only_over_an_older_version(
        loyalty_uow: Callable[[], Any]) -> None:
    owner = uuid4()
    async with loyalty_uow() as uow:
        assert await uow.accounts.open(owner, NOW)
        assert await uow.accounts.set_frozen(owner, None, 2)  # the restore came first
        assert not await uow.accounts.set_frozen(owner, NOW, 1)  # its deletion, late
        assert not await uow.accounts.set_frozen(owner, NOW, 2)  # the same version again
        assert not await uow.accounts.set_frozen(owner, NOW, 0)  # unversioned, too late
        await uow.commit()
    async with loyalty_uow() as uow:
        active = await uow.accounts.get(owner)
        assert await uow.accounts.set_frozen(owner, NOW, 3)
        await uow.commit()
    async with loyalty_uow() as uow:
        frozen = await uow.accounts.get(owner)
    assert active is not None
    assert frozen is not None
    assert (active.state, frozen.state, frozen.frozen_at) == ("active", "frozen", NOW)


async def test_unversioned_changes_apply_in_arrival_order_until_a_versioned_one(
        loyalty_uow: Callable[[], Any]) -> None:
    owner = uuid4()
    states: list[tuple[bool, str | None]] = []
    async with loyalty_uow() as uow:
        assert await uow.accounts.open(owner, NOW)
        for frozen_at, version in ((NOW, 0), (None, 0), (NOW, 0), (None, 1), (NOW, 0)):
            applied = await uow.accounts.set_frozen(owner, frozen_at, version)
            account = await uow.accounts.get(owner)
            states.append((applied, account.state if account else None))
        await uow.commit()
    assert states == [(True, "frozen"), (True, "active"), (True, "frozen"), (True, "active"),
                      (False, "active")]


async def test_ledger_pages_newest_first_and_sums(loyalty_uow: Callable[[], Any]) -> None:
    owner, other = uuid4(), uuid4()
    async with loyalty_uow() as uow:
        await uow.accounts.open(owner, NOW)
        await uow.accounts.open(other, NOW)
        first = await uow.ledger.apply(Movement(owner, "deposit", 100, "registration", NOW))
        await uow.ledger.apply(Movement(other, "deposit", 5, "x", NOW))
        second = await uow.ledger.apply(Movement(owner, "withdrawal", 30, "tea", NOW))
        await uow.commit()
    assert second.id > first.id
    async with loyalty_uow() as uow:
        page = await uow.ledger.page(owner, 10, None)
        older = await uow.ledger.page(owner, 10, second.id)
        total = await uow.ledger.total(owner)
    assert [(e.kind, e.amount, e.balance_after, e.comment) for e in page] == [
        ("withdrawal", 30, 70, "tea"), ("deposit", 100, 100, "registration")]
    assert [e.id for e in older] == [first.id]
    assert page[0].created_at == NOW
    assert total == 70


async def test_idempotency_keys(loyalty_uow: Callable[[], Any]) -> None:
    caller = uuid4()
    entry = LedgerEntry(7, uuid4(), "withdrawal", 30, "tea ☕", 70,
                        datetime(2030, 5, 1, 12, 0, 0, 123456, tzinfo=UTC))
    record = IdempotencyRecord(caller, "key-1", "f" * 64, entry, NOW)
    async with loyalty_uow() as uow:
        await uow.idempotency.add(record)
        with pytest.raises(KeyTaken):
            await uow.idempotency.add(record)
        await uow.commit()
    async with loyalty_uow() as uow:
        assert await uow.idempotency.get(caller, "key-1") == record
        assert await uow.idempotency.get(uuid4(), "key-1") is None
        assert await uow.idempotency.purge(NOW) == 0
        assert await uow.idempotency.purge(NOW + timedelta(seconds=1)) == 1
        await uow.commit()


async def test_inbox_and_revocations(loyalty_uow: Callable[[], Any]) -> None:
    event_id, sid = uuid4(), uuid4()
    async with loyalty_uow() as uow:
        assert await uow.inbox.add(event_id, "user_registered", NOW)
        assert not await uow.inbox.add(event_id, "user_registered", NOW)
        await uow.revocations.add(sid, NOW + timedelta(minutes=15))
        await uow.revocations.add(sid, NOW + timedelta(minutes=15))
        await uow.revocations.add(uuid4(), NOW - timedelta(minutes=1))
        await uow.commit()
    async with loyalty_uow() as uow:
        assert await uow.revocations.active(NOW) == [(sid, NOW + timedelta(minutes=15))]
        assert await uow.revocations.purge(NOW) == 1
        await uow.commit()
