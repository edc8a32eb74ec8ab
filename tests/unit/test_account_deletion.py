"""Soft deletion and restore of users, against the in-memory unit of work."""

from __future__ import annotations

from uuid import uuid4

import pytest

from authloyalty.events import SessionRevoked
from authloyalty.platform.errors import Forbidden, InvalidToken
from authloyalty.sso.domain import (
    InvalidCredentials,
    UserExists,
    UserNotDeleted,
    UserNotFound,
    UserPurged,
)
from authloyalty.sso.service import AuthService, Origin, Registration
from tests.fakes import FakeSsoStore
from tests.unit.test_auth_service import Clock, make_service

PASSWORD = "long enough"


@pytest.fixture
def store() -> FakeSsoStore:
    return FakeSsoStore()


@pytest.fixture
def service(store: FakeSsoStore) -> AuthService:
    return make_service(store, Clock())


async def test_deletion_ends_every_session_in_its_commit_and_refuses_login(
    service: AuthService, store: FakeSsoStore
) -> None:
    first = await service.register(Registration("del@example.com", PASSWORD))
    second = await service.login("del@example.com", PASSWORD, "x")
    await service.delete_account(first.tokens.access_token, PASSWORD, Origin("x"))
    assert store.state.users[first.user_id].deleted_at is not None
    for issued in (first, second):
        with pytest.raises(InvalidToken):
            await service.authenticate(issued.tokens.access_token)
    revoked = [e.event for e in store.state.outbox if isinstance(e.event, SessionRevoked)]
    assert sorted(e.reason for e in revoked) == ["account_deleted"] * 2
    with pytest.raises(InvalidCredentials):
        await service.login("del@example.com", PASSWORD, "x")
    with pytest.raises(UserExists):
        await service.register(Registration("DEL@example.com", PASSWORD))


async def test_a_wrong_password_deletes_nothing_and_counts_as_a_failed_login(
    service: AuthService, store: FakeSsoStore
) -> None:
    issued = await service.register(Registration("keep@example.com", PASSWORD))
    with pytest.raises(InvalidCredentials):
        await service.delete_account(issued.tokens.access_token, "wrong one", Origin("x"))
    assert store.state.users[issued.user_id].deleted_at is None
    assert len(store.state.failures) == 1
    await service.authenticate(issued.tokens.access_token)


async def test_restore_by_an_admin_brings_the_login_back(service: AuthService) -> None:
    admin = await service.register(Registration("root@example.com", PASSWORD), is_admin=True)
    user = await service.register(Registration("back@example.com", PASSWORD))
    token = admin.tokens.access_token
    with pytest.raises(UserNotDeleted):
        await service.restore_user(token, user.user_id)
    await service.delete_account(user.tokens.access_token, PASSWORD, Origin("x"))
    other = await service.register(Registration("other@example.com", PASSWORD))
    with pytest.raises(Forbidden):
        await service.restore_user(other.tokens.access_token, user.user_id)
    with pytest.raises(UserNotFound):
        await service.restore_user(token, uuid4())
    await service.restore_user(token, user.user_id)
    await service.login("back@example.com", PASSWORD, "x")


async def test_a_purged_user_cannot_be_restored(
    service: AuthService, store: FakeSsoStore
) -> None:
    admin = await service.register(Registration("root@example.com", PASSWORD), is_admin=True)
    user = await service.register(Registration("gone@example.com", PASSWORD))
    await service.delete_account(user.tokens.access_token, PASSWORD, Origin("x"))
    store.state.users[user.user_id].purged_at = store.state.users[user.user_id].deleted_at
    with pytest.raises(UserPurged):
        await service.restore_user(admin.tokens.access_token, user.user_id)
