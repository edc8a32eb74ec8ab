"""Races settled by the database, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from uuid import UUID

import pytest

from authloyalty.bootstrap import EmbeddedSystem
from authloyalty.events import UserRegistered
from authloyalty.loyalty.domain import InsufficientPoints, Principal
from authloyalty.loyalty.service import Idempotency, Operation
from authloyalty.platform.bus import Envelope
from authloyalty.platform.errors import InvalidToken
from authloyalty.sso.domain import InvalidCredentials, TokenReused
from authloyalty.sso.service import IssuedTokens, Origin, Registration


async def registered_user(system: EmbeddedSystem, email: str) -> tuple[Principal, str]:
    issued = await system.sso.service.register(Registration(email, "long enough"))
    assert await system.sso.relay.run_once() >= 1
    claims = await system.loyalty.authenticator.principal(issued.tokens.access_token)
    return claims, issued.tokens.refresh_token


async def assert_ledger_consistent(system: EmbeddedSystem, account: UUID, balance: int) -> None:
    async with system.loyalty.service._uow() as uow:  # the invariant, read straight from SQL
        stored = await uow.accounts.get(account)
        total = await uow.ledger.total(account)
    assert stored is not None
    assert stored.balance == total == balance


async def test_fifty_parallel_withdrawals_on_one_account(system: EmbeddedSystem) -> None:
    owner, _ = await registered_user(system, "race@example.com")

    async def withdraw() -> bool:
        try:
            await system.loyalty.service.operate(
                Operation(owner, owner.user_id, "withdrawal", 3, "race"))
            return True
        except InsufficientPoints:
            return False

    results = await asyncio.gather(*(withdraw() for _ in range(50)))
    assert sum(results) == 33  # 100 // 3
    await assert_ledger_consistent(system, owner.user_id, 1)


async def test_parallel_replays_of_one_idempotency_key_apply_once(
        system: EmbeddedSystem) -> None:
    owner, _ = await registered_user(system, "idem@example.com")
    op = Operation(owner, owner.user_id, "withdrawal", 10, "once")
    key = Idempotency.of("retry-1", "w", owner.user_id, {"amount": 10})
    replies = await asyncio.gather(
        *(system.loyalty.service.operate(op, key) for _ in range(20)))
    assert len(set(replies)) == 1
    await assert_ledger_consistent(system, owner.user_id, 90)


async def test_duplicate_and_parallel_event_delivery_credits_one_bonus(
        system: EmbeddedSystem) -> None:
    owner, _ = await registered_user(system, "dup@example.com")
    again = Envelope(UserRegistered(owner.user_id))
    results = await asyncio.gather(*(system.bus.publish([again]) for _ in range(10)))
    assert all(r == [None] for r in results)
    await assert_ledger_consistent(system, owner.user_id, 100)


async def test_parallel_refreshes_yield_one_successor_then_the_session_ends(
        system: EmbeddedSystem) -> None:
    _, refresh = await registered_user(system, "refresh@example.com")
    results = await asyncio.gather(*(system.sso.service.refresh(refresh) for _ in range(10)),
                                   return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert losers
    assert all(isinstance(r, TokenReused) for r in losers)
    with pytest.raises(InvalidToken):  # the winner's tokens die with the session
        await system.sso.service.authenticate(winners[0].tokens.access_token)
    # Loyalty hears of it through the outbox as well.
    await system.sso.relay.run_once()
    with pytest.raises(InvalidToken):
        await system.loyalty.authenticator.principal(winners[0].tokens.access_token)


async def test_a_login_racing_the_account_deletion_leaves_no_working_token(
        system: EmbeddedSystem) -> None:
    service = system.sso.service
    for attempt in range(12):  # rounds: each interleaves the two requests differently
        email = f"leaving-{attempt}@example.com"
        issued = await service.register(Registration(email, "long enough"))
        deleted, logged_in = await asyncio.gather(
            service.delete_account(issued.tokens.access_token, "long enough", Origin("a")),
            service.login(email, "long enough", "b"), return_exceptions=True)
        assert deleted is None
        assert isinstance(logged_in, IssuedTokens | InvalidCredentials), logged_in
        await system.sso.relay.run_once()  # loyalty hears of the ended sessions
        for tokens in (issued, logged_in):
            if isinstance(tokens, IssuedTokens):
                with pytest.raises(InvalidToken):
                    await service.authenticate(tokens.tokens.access_token)
                with pytest.raises(InvalidToken):
                    await system.loyalty.authenticator.principal(tokens.tokens.access_token)
                with pytest.raises(InvalidToken):
                    await service.refresh(tokens.tokens.refresh_token)
        async with service._uow() as uow:  # straight from SQL: nothing left open
            assert await uow.sessions.active_for_user(issued.user_id) == []


async def test_migrations_are_idempotent(system: EmbeddedSystem) -> None:
    from authloyalty.platform.migrations import current_revision, head_revision

    await system.migrate()
    assert await current_revision("sso", system.sso.engine) == head_revision("sso") \
        == "sso_0006"
    assert await current_revision("loyalty", system.loyalty.engine) \
        == head_revision("loyalty") == "loyalty_0007"
