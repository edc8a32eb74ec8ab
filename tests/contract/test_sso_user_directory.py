"""Finding users and locking the admins: the fake must act like SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest

from authloyalty.sso.domain import User, UserQuery

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


def _user(email: str, *, is_admin: bool = False) -> User:
    return User(id=uuid4(), email=email, password_hash="$argon2id$x", created_at=NOW,
                is_admin=is_admin)


async def _add(sso_uow: Any, *users: User) -> None:
    async with sso_uow() as uow:
        for user in users:
            await uow.users.add(user)
        await uow.commit()


async def test_pages_by_email_prefix_in_any_case_or_by_id(sso_uow: Any) -> None:
    users = [_user(e) for e in ("Bea@example.com", "ann@example.com", "ANDY@example.com",
                                "a_b@example.com", "a%b@example.com", "a!b@example.com",
                                "axb@example.com")]
    await _add(sso_uow, *users)
    async with sso_uow() as uow:
        everyone = await uow.users.page(UserQuery(), 10, None)
        first = await uow.users.page(UserQuery(email_prefix="AN"), 1, None)
        second = await uow.users.page(UserQuery(email_prefix="an"), 1, first[0].id)
        third = await uow.users.page(UserQuery(email_prefix="An"), 1, second[0].id)
        literal = await uow.users.page(UserQuery(email_prefix="a_"), 10, None)
        percent = await uow.users.page(UserQuery(email_prefix="a%"), 10, None)
        bang = await uow.users.page(UserQuery(email_prefix="a!"), 10, None)
        by_id = await uow.users.page(UserQuery(user_id=users[0].id), 10, None)
        unknown = await uow.users.page(UserQuery(user_id=uuid4()), 10, None)
    assert [u.email for u in everyone] == sorted((u.email for u in users), key=str.lower)
    assert [u.email for u in first + second + third] == ["ANDY@example.com",
                                                          "ann@example.com"]
    assert [u.email for u in literal] == ["a_b@example.com"]
    assert [u.email for u in percent] == ["a%b@example.com"]
    assert [u.email for u in bang] == ["a!b@example.com"]
    assert [u.email for u in by_id] == ["Bea@example.com"]
    assert unknown == []


async def test_a_revocation_waits_for_a_concurrent_one(
        sso_uow: Any, request: pytest.FixtureRequest) -> None:
    if request.node.callspec.params["sso_uow"] == "fake":
        pytest.skip("the fake has no concurrent transactions")
    ann, bob = _user("ann@example.com", is_admin=True), _user("bob@example.com", is_admin=True)
    await _add(sso_uow, ann, bob)
    async with sso_uow() as first:
        assert sorted(await first.users.lock_admins()) == sorted([ann.id, bob.id])
        await first.users.set_admin(bob.id, False)

        async def second_revocation() -> list[Any]:
            async with sso_uow() as second:
                admins: list[Any] = await second.users.lock_admins()
            return admins

        waiting = asyncio.create_task(second_revocation())
        await asyncio.sleep(0.3)
        assert not waiting.done()  # held back by the first transaction's lock
        await first.commit()
    assert await asyncio.wait_for(waiting, 20) == [ann.id]
