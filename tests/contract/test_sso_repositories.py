"""One behaviour, three implementations: the fake must act like SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from authloyalty.events import UserRegistered
from authloyalty.platform.bus import Envelope
from authloyalty.sso.domain import Session, User, UserExists
from tests.contract.conftest import Factory

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)


def new_user(email: str) -> User:
    return User(id=uuid4(), email=email, password_hash="$argon2id$x", created_at=NOW,
                name="Ann", birthday=date(1990, 5, 17))


async def test_users_round_trip_and_case_insensitive_uniqueness(
        sso_uow: Callable[[], Any]) -> None:
    user = new_user("Ann@Example.com")
    async with sso_uow() as uow:
        await uow.users.add(user)
        await uow.commit()
    async with sso_uow() as uow:
        with pytest.raises(UserExists):
            await uow.users.add(new_user("ann@EXAMPLE.com"))
        # The transaction stays usable after the conflict.
        found = await uow.users.by_email("ANN@example.com")
        await uow.users.set_admin(user.id, True)
        await uow.commit()
    assert found is not None
    assert (found.id, found.email, found.name, found.birthday, found.created_at) == (
        user.id, "Ann@Example.com", "Ann", date(1990, 5, 17), NOW)
    async with sso_uow() as uow:
        again = await uow.users.get(user.id)
        assert await uow.users.get(uuid4()) is None
    assert again is not None
    assert again.is_admin


async def test_uncommitted_work_is_rolled_back(sso_uow: Callable[[], Any]) -> None:
    user = new_user("rollback@example.com")
    async with sso_uow() as uow:
        await uow.users.add(user)
    async with sso_uow() as uow:
        assert await uow.users.get(user.id) is None


async def test_session_rotation_is_compare_and_set(sso_uow: Callable[[], Any]) -> None:
    user = new_user("s@example.com")
    first, second, third = uuid4(), uuid4(), uuid4()
    session = Session(id=uuid4(), user_id=user.id, created_at=NOW, refresh_token_id=first)
    async with sso_uow() as uow:
        await uow.users.add(user)
        await uow.sessions.add(session)
        assert await uow.sessions.rotate(session.id, first, second, NOW)
        assert not await uow.sessions.rotate(session.id, first, third, NOW)
        await uow.commit()
    async with sso_uow() as uow:
        stored = await uow.sessions.get(session.id)
        assert stored is not None
        assert (stored.refresh_token_id, stored.previous_refresh_token_id) == (second, first)
        assert await uow.sessions.revoke(session.id, "logout", NOW)
        assert not await uow.sessions.revoke(session.id, "logout", NOW)
        assert not await uow.sessions.rotate(session.id, second, third, NOW)
        await uow.commit()
    async with sso_uow() as uow:
        ended = await uow.sessions.get(session.id)
    assert ended is not None
    assert not ended.active
    assert ended.revoke_reason == "logout"


async def test_sessions_keep_their_origin_and_list_newest_first(
        sso_uow: Callable[[], Any]) -> None:
    user = new_user("origin@example.com")
    older = Session(id=uuid4(), user_id=user.id, created_at=NOW, refresh_token_id=uuid4(),
                    user_agent="curl/8.5", ip="203.0.113.7", last_used_at=NOW)
    newer = Session(id=uuid4(), user_id=user.id, created_at=NOW + timedelta(seconds=1),
                    refresh_token_id=uuid4())
    later = NOW + timedelta(minutes=5)
    async with sso_uow() as uow:
        await uow.users.add(user)
        await uow.sessions.add(older)
        await uow.sessions.add(newer)
        assert await uow.sessions.rotate(older.id, older.refresh_token_id, uuid4(), later)
        await uow.commit()
    async with sso_uow() as uow:
        listed = await uow.sessions.active_for_user(user.id)
    assert [s.id for s in listed] == [newer.id, older.id]
    assert (listed[1].user_agent, listed[1].ip, listed[1].last_used_at) == (
        "curl/8.5", "203.0.113.7", later)
    assert (listed[0].user_agent, listed[0].ip, listed[0].last_used_at) == (None, None, None)


async def test_soft_deletion_and_restore_are_conditional(sso_uow: Callable[[], Any]) -> None:
    user = new_user("deleted@example.com")
    later = NOW + timedelta(minutes=1)
    async with sso_uow() as uow:
        await uow.users.add(user)
        assert not await uow.users.restore(user.id)  # not deleted
        assert await uow.users.mark_deleted(user.id, later)
        assert not await uow.users.mark_deleted(user.id, NOW)  # already deleted: kept
        assert not await uow.users.mark_deleted(uuid4(), NOW)
        await uow.commit()
    async with sso_uow() as uow:
        deleted = await uow.users.by_email("DELETED@example.com")
        # The email stays taken while the user is deleted.
        with pytest.raises(UserExists):
            await uow.users.add(new_user("deleted@example.com"))
        assert await uow.users.restore(user.id)
        assert not await uow.users.restore(user.id)
        await uow.commit()
    async with sso_uow() as uow:
        restored = await uow.users.get(user.id)
    assert deleted is not None
    assert (deleted.deleted_at, deleted.purged_at) == (later, None)
    assert restored is not None
    assert restored.deleted_at is None


async def test_login_failures_window(sso_uow: Callable[[], Any]) -> None:
    async with sso_uow() as uow:
        for minutes in (1, 2, 20):
            await uow.login_failures.record("F@example.com", "1.2.3.4", NOW - timedelta(
                minutes=minutes))
        await uow.login_failures.record("other@example.com", "1.2.3.4", NOW)
        await uow.commit()
    since = NOW - timedelta(minutes=15)
    async with sso_uow() as uow:
        assert await uow.login_failures.for_email("f@example.com", since) == (
            2, NOW - timedelta(minutes=2))
        assert (await uow.login_failures.for_client("1.2.3.4", since))[0] == 3
        await uow.login_failures.clear_email("f@EXAMPLE.com")
        assert (await uow.login_failures.for_email("f@example.com", since))[0] == 0
        assert await uow.login_failures.purge(NOW - timedelta(minutes=1)) == 0
        assert await uow.login_failures.purge(NOW + timedelta(seconds=1)) == 1
        await uow.commit()


async def test_outbox_holds_committed_events_in_order_and_never_rolled_back_ones(
        sso_uow: Factory) -> None:
    first, second, dropped = (Envelope(UserRegistered(uuid4())) for _ in range(3))
    async with sso_uow() as uow:
        await uow.outbox.add(first)
        await uow.outbox.add(second)
        await uow.commit()
    async with sso_uow() as uow:  # ends without commit: rolled back
        await uow.outbox.add(dropped)
    assert await sso_uow.outbox_event_ids() == [first.id, second.id]
