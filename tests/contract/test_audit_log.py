"""The audit log of both services, on the fake, SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from authloyalty.platform.audit import AuditEntry, AuditQuery, AuditRecord

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
Factory = Callable[[], Any]


def record(actor: UUID | None, target: UUID, n: int = 0, **outcome: Any) -> AuditRecord:
    return AuditRecord(actor, "admin" if actor else "cli", "revoke_sessions", target,
                       outcome or {"sessions_ended": n}, NOW + timedelta(seconds=n),
                       f"req-{n}" if actor else None)


async def add_committed(uow_factory: Factory, *records: AuditRecord) -> list[int]:
    async with uow_factory() as uow:
        ids = [await uow.audit.add(r) for r in records]
        await uow.commit()
    return ids


async def page(uow_factory: Factory, query: AuditQuery = AuditQuery(), limit: int = 100,
               before: int | None = None) -> list[AuditEntry]:
    async with uow_factory() as uow:
        found: list[AuditEntry] = await uow.audit.page(query, limit, before)
    return found


async def fail_after_writing(uow_factory: Factory) -> None:
    async with uow_factory() as uow:
        await uow.audit.add(record(uuid4(), uuid4()))
        raise RuntimeError("the action failed after its record was written")


async def a_row_of_a_rolled_back_transaction_is_gone(uow_factory: Factory) -> None:
    async with uow_factory() as uow:
        await uow.audit.add(record(uuid4(), uuid4()))
    with pytest.raises(RuntimeError):
        await fail_after_writing(uow_factory)
    assert await page(uow_factory) == []


async def an_empty_log_has_no_page(uow_factory: Factory) -> None:
    assert await page(uow_factory, AuditQuery(actor_id=uuid4())) == []
    assert await page(uow_factory, before=1) == []


async def a_row_comes_back_as_written(uow_factory: Factory) -> None:
    actor, target = uuid4(), uuid4()
    written = AuditRecord(actor, "admin", "deposit", target,
                          {"amount": 10, "balance_after": 110, "transaction_id": 5}, NOW,
                          "abc-123")
    by_cli = AuditRecord(None, "cli", "create_admin", target,
                         {"result": "created", "password_reset": False}, NOW, None)
    first, second = await add_committed(uow_factory, written, by_cli)
    assert second > first
    assert await page(uow_factory) == [AuditEntry(second, by_cli), AuditEntry(first, written)]


async def rows_come_newest_first_and_a_cursor_continues(uow_factory: Factory) -> None:
    actor = uuid4()
    ids = await add_committed(uow_factory, *(record(actor, uuid4(), n) for n in range(5)))
    first = await page(uow_factory, limit=2)
    assert [e.id for e in first] == ids[::-1][:2]
    rest = await page(uow_factory, limit=10, before=first[-1].id)
    assert [e.id for e in rest] == ids[::-1][2:]
    assert [e.record.outcome["sessions_ended"] for e in rest] == [2, 1, 0]


async def filters_by_actor_and_by_target(uow_factory: Factory) -> None:
    ann, bob, target, other = uuid4(), uuid4(), uuid4(), uuid4()
    ids = await add_committed(uow_factory, record(ann, target, 1), record(bob, target, 2),
                              record(ann, other, 3), record(None, target, 4))
    assert [e.id for e in await page(uow_factory, AuditQuery(actor_id=ann))] == \
        [ids[2], ids[0]]
    assert [e.id for e in await page(uow_factory, AuditQuery(target_id=target))] == \
        [ids[3], ids[1], ids[0]]
    assert [e.id for e in await page(uow_factory, AuditQuery(ann, target))] == [ids[0]]
    assert await page(uow_factory, AuditQuery(actor_id=uuid4())) == []


CHECKS: list[Callable[[Factory], Awaitable[None]]] = [
    a_row_of_a_rolled_back_transaction_is_gone, an_empty_log_has_no_page,
    a_row_comes_back_as_written, rows_come_newest_first_and_a_cursor_continues,
    filters_by_actor_and_by_target,
]


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
async def test_sso_audit_log(sso_uow: Factory,
                             check: Callable[[Factory], Awaitable[None]]) -> None:
    await check(sso_uow)


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
async def test_loyalty_audit_log(loyalty_uow: Factory,
                                 check: Callable[[Factory], Awaitable[None]]) -> None:
    await check(loyalty_uow)
