"""The user-row locks and conditional writes that keep sessions away from deleted users;
the fake must act like SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from authloyalty.sso.domain import User

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


def new_user(email: str, *, is_admin: bool = False) -> User:
    return User(id=uuid4(), email=email, password_hash="$argon2id$x", created_at=NOW,
                is_admin=is_admin)


async def test_lock_reads_the_user_and_a_deleted_users_password_stays(
        sso_uow: Callable[[], Any]) -> None:
    user = new_user("locked@example.com", is_admin=True)
    async with sso_uow() as uow:
        await uow.users.add(user)
        await uow.commit()
    async with sso_uow() as uow:
        shared = await uow.users.lock(user.id)
        exclusive = await uow.users.lock(user.id, exclusive=True)
        assert await uow.users.lock(uuid4()) is None
        assert await uow.users.set_password_hash(user.id, "$argon2id$y")
        assert await uow.users.mark_deleted(user.id, NOW)
        assert not await uow.users.set_password_hash(user.id, "$argon2id$z")
        assert not await uow.users.set_password_hash(uuid4(), "$argon2id$z")
        await uow.commit()
    assert shared is not None
    assert exclusive is not None
    assert (shared.email, shared.is_admin, shared.deleted_at) == ("locked@example.com", True,
                                                                 None)
    async with sso_uow() as uow:
        deleted = await uow.users.lock(user.id)
    assert deleted is not None
    assert (deleted.password_hash, deleted.deleted_at) == ("$argon2id$y", NOW)


async def test_deleted_admins_are_not_among_the_locked_admins(
        sso_uow: Callable[[], Any]) -> None:
    live, gone = new_user("live-admin@example.com", is_admin=True), \
        new_user("gone-admin@example.com", is_admin=True)
    async with sso_uow() as uow:
        for user in (live, gone, new_user("plain@example.com")):
            await uow.users.add(user)
        assert await uow.users.mark_deleted(gone.id, NOW)
        await uow.commit()
    async with sso_uow() as uow:
        admins = await uow.users.lock_admins()
    assert live.id in admins
    assert gone.id not in admins
