"""loyalty's use cases and event handlers against the in-memory unit of work."""

from __future__ import annotations

import asyncio
from uuid import UUID, uuid4

import pytest

from authloyalty.events import SessionRevoked, UserRegistered
from authloyalty.loyalty.consumer import LoyaltyEventHandlers
from authloyalty.loyalty.domain import (
    AccountNotFound,
    IdempotencyKeyReused,
    InsufficientPoints,
    LedgerEntry,
    Principal,
)
from authloyalty.loyalty.revocations import RevokedSessions
from authloyalty.loyalty.service import Idempotency, LedgerService, Operation
from authloyalty.platform.bus import Envelope
from authloyalty.platform.errors import Forbidden, ValidationFailed
from tests.fakes import FakeLoyaltyStore


@pytest.fixture
def store() -> FakeLoyaltyStore:
    return FakeLoyaltyStore()


@pytest.fixture
def service(store: FakeLoyaltyStore) -> LedgerService:
    return LedgerService(store.uow)


@pytest.fixture
def handlers(store: FakeLoyaltyStore) -> LoyaltyEventHandlers:
    return LoyaltyEventHandlers(store.uow, RevokedSessions(), welcome_bonus=100)


def user(user_id: UUID | None = None, admin: bool = False) -> Principal:
    return Principal(user_id=user_id or uuid4(), session_id=uuid4(), is_admin=admin)


def registered(user_id: UUID) -> Envelope[UserRegistered]:
    return Envelope(UserRegistered(user_id))


async def test_welcome_bonus_is_credited_once_even_when_redelivered(
    handlers: LoyaltyEventHandlers, service: LedgerService, store: FakeLoyaltyStore
) -> None:
    owner = user()
    event = registered(owner.user_id)
    await handlers.user_registered(event)
    await handlers.user_registered(event)
    # Same registration under a new event id (e.g. re-sent by an operator): still one bonus.
    await handlers.user_registered(registered(owner.user_id))
    assert (await service.balance(owner, owner.user_id)).balance == 100
    page = await service.history(owner, owner.user_id, 10, None)
    assert [(e.kind, e.amount, e.comment) for e in page.items] == [
        ("deposit", 100, "registration")]


async def test_withdrawal_and_insufficient_points_change_nothing(
    handlers: LoyaltyEventHandlers, service: LedgerService, store: FakeLoyaltyStore
) -> None:
    owner = user()
    await handlers.user_registered(registered(owner.user_id))
    await service.operate(Operation(owner, owner.user_id, "withdrawal", 60, "tea"))
    with pytest.raises(InsufficientPoints):
        await service.operate(Operation(owner, owner.user_id, "withdrawal", 41, "cake"))
    assert (await service.balance(owner, owner.user_id)).balance == 40
    assert len(store.state.ledger) == 2


async def test_rights(handlers: LoyaltyEventHandlers, service: LedgerService) -> None:
    owner, other, admin = user(), user(), user(admin=True)
    await handlers.user_registered(registered(owner.user_id))
    with pytest.raises(Forbidden):
        await service.operate(Operation(owner, owner.user_id, "deposit", 5, "gift"))
    with pytest.raises(Forbidden):
        await service.operate(Operation(other, owner.user_id, "withdrawal", 5, "x"))
    with pytest.raises(Forbidden):
        await service.balance(other, owner.user_id)
    await service.operate(Operation(admin, owner.user_id, "deposit", 5, "gift"))
    assert (await service.balance(admin, owner.user_id)).balance == 105
    with pytest.raises(AccountNotFound):
        await service.operate(Operation(admin, uuid4(), "deposit", 5, "gift"))


async def test_idempotent_replay_and_key_reuse(
    handlers: LoyaltyEventHandlers, service: LedgerService
) -> None:
    owner = user()
    await handlers.user_registered(registered(owner.user_id))
    op = Operation(owner, owner.user_id, "withdrawal", 10, "tea")
    key = Idempotency.of("k-1", "w", owner.user_id, {"amount": 10, "comment": "tea"})
    first = await service.operate(op, key)
    again = await service.operate(op, key)
    assert isinstance(first, LedgerEntry)
    assert (first.kind, first.amount, first.comment, first.balance_after) == (
        "withdrawal", 10, "tea", 90)
    assert again == first
    assert (await service.balance(owner, owner.user_id)).balance == 90
    other_body = Idempotency.of("k-1", "w", owner.user_id, {"amount": 11, "comment": "tea"})
    with pytest.raises(IdempotencyKeyReused):
        await service.operate(op, other_body)


async def test_parallel_replays_apply_once(
    handlers: LoyaltyEventHandlers, service: LedgerService
) -> None:
    owner = user()
    await handlers.user_registered(registered(owner.user_id))
    op = Operation(owner, owner.user_id, "withdrawal", 7, "tea")
    key = Idempotency.of("k-2", "w", owner.user_id, {"amount": 7})
    replies = await asyncio.gather(*(service.operate(op, key) for _ in range(10)))
    assert len(set(replies)) == 1
    assert (await service.balance(owner, owner.user_id)).balance == 93


async def test_history_pages_newest_first(
    handlers: LoyaltyEventHandlers, service: LedgerService
) -> None:
    owner = user()
    await handlers.user_registered(registered(owner.user_id))
    for amount in (1, 2, 3):
        await service.operate(Operation(owner, owner.user_id, "withdrawal", amount, "x"))
    first = await service.history(owner, owner.user_id, 2, None)
    assert [e.amount for e in first.items] == [3, 2]
    assert first.next_cursor is not None
    rest = await service.history(owner, owner.user_id, 2, first.next_cursor)
    assert [e.amount for e in rest.items] == [1, 100]
    assert rest.next_cursor is None
    with pytest.raises(ValidationFailed):
        await service.history(owner, owner.user_id, 2, "abc")


async def test_session_revocation_is_remembered_and_rebuilt(store: FakeLoyaltyStore) -> None:
    from datetime import UTC, datetime, timedelta

    revoked = RevokedSessions()
    handlers = LoyaltyEventHandlers(store.uow, revoked, 100)
    sid = uuid4()
    until = datetime.now(UTC) + timedelta(minutes=15)
    await handlers.session_revoked(Envelope(SessionRevoked(sid, uuid4(), until, "logout")))
    assert sid in revoked
    fresh = RevokedSessions()
    assert await LoyaltyEventHandlers(store.uow, fresh, 100).load_revocations() == 1
    assert sid in fresh
