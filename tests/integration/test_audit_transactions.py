"""An admin action and its audit record commit together or not at all, on SQLite and on
PostgreSQL (where deposits are otherwise group-committed, loyalty.coalesce)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from authloyalty.bootstrap import EmbeddedSystem
from authloyalty.loyalty.domain import InsufficientPoints, LedgerEntry, Principal
from authloyalty.loyalty.service import Idempotency, Operation
from authloyalty.platform.audit import AuditEntry, AuditQuery
from authloyalty.sso.service import IssuedTokens, Registration

ADMIN = Principal(user_id=uuid4(), session_id=uuid4(), is_admin=True)


class CommitLost(Exception):
    """The database went away at the commit."""


def losing_the_commit(make_uow: Callable[[], Any], seen: list[AuditEntry]
                      ) -> Callable[[], Any]:
    """Units of work whose commit fails once the action and its audit row are written (the
    row, read in the same transaction, is put in ``seen``)."""
    def make() -> Any:
        uow = make_uow()

        async def commit() -> None:
            seen.extend(await uow.audit.page(AuditQuery(), 10, None))
            raise CommitLost()

        uow.commit = commit
        return uow
    return make


async def audit_rows(make_uow: Callable[[], Any], target: UUID) -> list[AuditEntry]:
    async with make_uow() as uow:
        found: list[AuditEntry] = await uow.audit.page(AuditQuery(target_id=target), 100, None)
    return found


async def open_account(system: EmbeddedSystem) -> UUID:
    account = uuid4()
    async with system.loyalty.service._uow() as uow:
        assert await uow.accounts.open(account, datetime.now(UTC))
        await uow.commit()
    return account


async def register(system: EmbeddedSystem, email: str, *, admin: bool = False) -> IssuedTokens:
    return await system.sso.service.register(Registration(email, "long enough"), is_admin=admin)


# --- failures first -------------------------------------------------------------------------

async def test_a_revocation_whose_commit_fails_leaves_neither_the_change_nor_its_row(
        system: EmbeddedSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    service = system.sso.service
    root = await register(system, "root@example.com", admin=True)
    other = await register(system, "other@example.com", admin=True)
    seen: list[AuditEntry] = []
    monkeypatch.setattr(service, "_uow", losing_the_commit(service._uow, seen))
    with pytest.raises(CommitLost):
        await service.set_admin_right(root.tokens.access_token, other.user_id, False)
    monkeypatch.undo()
    # The row was written in the action's transaction, and went with it.
    assert [(e.record.action, e.record.target_id) for e in seen] == [
        ("revoke_admin", other.user_id)]
    assert (await service.get_user(other.user_id)).is_admin
    assert await audit_rows(service._uow, other.user_id) == []
    await service.authenticate(other.tokens.access_token)  # the session did not end


async def test_an_admin_deposit_whose_commit_fails_leaves_no_entry_and_no_row(
        system: EmbeddedSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    service = system.loyalty.service
    account = await open_account(system)
    seen: list[AuditEntry] = []
    monkeypatch.setattr(service._audited_movements, "_uow",
                        losing_the_commit(service._uow, seen))
    with pytest.raises(CommitLost):
        await service.operate(Operation(ADMIN, account, "deposit", 10, "bonus"))
    monkeypatch.undo()
    assert [(e.record.action, e.record.outcome["amount"]) for e in seen] == [("deposit", 10)]
    assert (await service.balance(ADMIN, account)).balance == 0
    assert await audit_rows(service._uow, account) == []


async def test_a_refused_admin_withdrawal_writes_no_row(system: EmbeddedSystem) -> None:
    service = system.loyalty.service
    account = await open_account(system)
    with pytest.raises(InsufficientPoints):
        await service.operate(Operation(ADMIN, account, "withdrawal", 1, "too much"))
    assert await audit_rows(service._uow, account) == []


# --- the actions at work --------------------------------------------------------------------

async def test_an_admin_deposit_and_its_row_appear_together(system: EmbeddedSystem) -> None:
    service = system.loyalty.service
    account = await open_account(system)
    entry = await service.operate(Operation(ADMIN, account, "deposit", 10, "private words"))
    assert isinstance(entry, LedgerEntry)
    [row] = await audit_rows(service._uow, account)
    assert (row.record.actor_id, row.record.actor_kind, row.record.action) == (
        ADMIN.user_id, "admin", "deposit")
    assert row.record.outcome == {"amount": 10, "balance_after": 10,
                                  "transaction_id": entry.id}
    assert row.record.at == entry.created_at


async def test_a_replayed_admin_deposit_adds_no_second_row(system: EmbeddedSystem) -> None:
    service = system.loyalty.service
    account = await open_account(system)
    once = Idempotency.of("key-1", "admin/deposit", account, {"amount": 5})
    first = await service.operate(Operation(ADMIN, account, "deposit", 5, "x"), once)
    again = await service.operate(Operation(ADMIN, account, "deposit", 5, "x"), once)
    assert first == again
    assert len(await audit_rows(service._uow, account)) == 1


async def test_an_admin_spending_their_own_points_is_no_admin_action(
        system: EmbeddedSystem) -> None:
    service = system.loyalty.service
    own = await open_account(system)
    admin = Principal(user_id=own, session_id=uuid4(), is_admin=True)
    await service.operate(Operation(admin, own, "deposit", 5, "to self"))  # audited
    await service.operate(Operation(admin, own, "withdrawal", 2, "spent"))  # as any user
    assert [e.record.action for e in await audit_rows(service._uow, own)] == ["deposit"]
