"""Soft deletion and restore of users, against the in-memory unit of work."""

from __future__ import annotations

import logging
from datetime import date
from uuid import uuid4

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from authloyalty.events import SessionRevoked, UserDeleted, UserRestored
from authloyalty.platform.errors import Forbidden, InvalidToken
from authloyalty.sso.domain import (
    InvalidCredentials,
    UserExists,
    UserNotDeleted,
    UserNotFound,
    UserPurged,
)
from authloyalty.sso.service import AuthService, Origin, Registration
from authloyalty.sso.settings import SsoSettings
from tests.fakes import FakeSsoStore
from tests.unit.test_auth_service import Clock, make_service

PASSWORD = "long enough"


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


# --- the purge of deleted users' personal data ----------------------------------------------

DAY = 86400.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def retaining(store: FakeSsoStore, clock: Clock) -> AuthService:
    """A service keeping deleted users' data for one day."""
    return make_service(store, clock, deletion_retention_days=1)


def purged_count() -> float:
    return REGISTRY.get_sample_value("authloyalty_users_purged_total") or 0.0


async def test_the_purge_erases_a_deleted_user_after_the_window_and_frees_the_email(
    retaining: AuthService, store: FakeSsoStore, clock: Clock,
    caplog: pytest.LogCaptureFixture
) -> None:
    admin = await retaining.register(Registration("root@example.com", PASSWORD),
                                     is_admin=True)
    user = await retaining.register(Registration("Erase.Me@example.com", PASSWORD, "Ann",
                                                 date(1990, 5, 17)))
    await retaining.delete_account(user.tokens.access_token, PASSWORD, Origin("x"))
    before = purged_count()
    clock.advance(DAY - 1)
    assert await retaining.purge_deleted_users() == 0
    clock.advance(2)
    outbox = len(store.state.outbox)
    with caplog.at_level(logging.DEBUG):
        assert await retaining.purge_deleted_users() == 1
    assert await retaining.purge_deleted_users() == 0
    assert purged_count() == before + 1
    assert "purged the personal data of 1 deleted user" in caplog.text
    assert "erase.me" not in caplog.text.lower()
    assert len(store.state.outbox) == outbox  # no event

    with pytest.raises(UserPurged):
        await retaining.restore_user(admin.tokens.access_token, user.user_id)
    with pytest.raises(InvalidCredentials):
        await retaining.login("erase.me@example.com", PASSWORD, "x")
    profile = await retaining.profile(user.user_id)
    assert (profile.email, profile.name, profile.birthday) == ("", None, None)
    assert profile.deleted_at is not None
    assert profile.purged_at == clock.now
    again = await retaining.register(Registration("erase.me@EXAMPLE.com", "another one"))
    assert again.user_id != user.user_id
    await retaining.login("erase.me@example.com", "another one", "x")


async def test_a_purge_pass_empties_the_backlog_a_batch_at_a_time(
    retaining: AuthService, store: FakeSsoStore, clock: Clock
) -> None:
    for i in range(5):
        issued = await retaining.register(Registration(f"batch{i}@example.com", PASSWORD))
        await retaining.delete_account(issued.tokens.access_token, PASSWORD, Origin("x"))
    restored_later = await retaining.register(Registration("alive@example.com", PASSWORD))
    clock.advance(DAY + 1)
    assert await retaining.purge_deleted_users(batch=2) == 5
    assert [u.email for u in store.state.users.values()
            if u.purged_at is None] == ["alive@example.com"]
    assert store.state.users[restored_later.user_id].deleted_at is None


def test_the_retention_window_must_be_positive_and_may_be_fractional() -> None:
    assert SsoSettings().deletion_retention_days == 365
    assert SsoSettings.model_validate(
        {"deletion_retention_days": "0.5"}).deletion_retention_days == 0.5
    for bad in (0, -1, "soon", 1e12):
        with pytest.raises(ValidationError):
            SsoSettings.model_validate({"deletion_retention_days": bad})


async def test_each_deletion_and_restore_announces_the_next_lifecycle_version(
    service: AuthService, store: FakeSsoStore
) -> None:
    admin = await service.register(Registration("root@example.com", PASSWORD), is_admin=True)
    user = await service.register(Registration("again@example.com", PASSWORD))
    await service.delete_account(user.tokens.access_token, PASSWORD, Origin("x"))
    await service.restore_user(admin.tokens.access_token, user.user_id)
    back = await service.login("again@example.com", PASSWORD, "x")
    await service.delete_account(back.tokens.access_token, PASSWORD, Origin("x"))
    changes = [(type(e.event), e.event.version) for e in store.state.outbox
               if isinstance(e.event, UserDeleted | UserRestored)]
    # Loyalty orders the changes by these versions, whatever order they arrive in.
    assert changes == [(UserDeleted, 1), (UserRestored, 2), (UserDeleted, 3)]
