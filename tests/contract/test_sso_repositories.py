"""One behaviour, three implementations: the fake must act like SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from authloyalty.events import UserRegistered
from authloyalty.platform.bus import Envelope
from authloyalty.sso.domain import Session, User, UserExists, UserQuery
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


async def test_rotation_for_a_user_checks_session_token_and_user_at_once(
        sso_uow: Callable[[], Any]) -> None:
    """A refresh's one-statement rotation happens only when the plain rotation would and the
    session's user is the one named and not deleted; otherwise nothing changes."""
    user, admin, other = (new_user(f"{n}@example.com") for n in ("r", "ra", "ro"))
    admin.is_admin = True
    first, gone, ended, deleted = (uuid4() for _ in range(4))
    sessions = {name: Session(id=uuid4(), user_id=owner.id, created_at=NOW,
                              refresh_token_id=token)
                for name, owner, token in (("user", user, first), ("admin", admin, first),
                                           ("ended", user, ended), ("deleted", other, deleted))}
    later = NOW + timedelta(minutes=1)
    async with sso_uow() as uow:
        for who in (user, admin, other):
            await uow.users.add(who)
        for session in sessions.values():
            await uow.sessions.add(session)
        await uow.sessions.revoke(sessions["ended"].id, "logout", NOW)
        await uow.users.mark_deleted(other.id, NOW)
        await uow.commit()
    async with sso_uow() as uow:
        rotate = uow.sessions.rotate_for_user
        second = uuid4()
        assert await rotate(sessions["user"].id, user.id, first, second, later) is False
        assert await rotate(sessions["admin"].id, admin.id, first, uuid4(), later) is True
        # Refused: the spent token, another user's session, an ended one, a deleted user's,
        # an unknown one.
        assert await rotate(sessions["user"].id, user.id, first, uuid4(), later) is None
        assert await rotate(sessions["user"].id, admin.id, second, uuid4(), later) is None
        assert await rotate(sessions["ended"].id, user.id, ended, uuid4(), later) is None
        assert await rotate(sessions["deleted"].id, other.id, deleted, gone, later) is None
        assert await rotate(uuid4(), user.id, first, uuid4(), later) is None
        await uow.commit()
    async with sso_uow() as uow:
        rotated = await uow.sessions.get(sessions["user"].id)
        untouched = await uow.sessions.get(sessions["deleted"].id)
        still_ended = await uow.sessions.get(sessions["ended"].id)
    assert rotated is not None
    assert untouched is not None
    assert still_ended is not None
    assert (rotated.refresh_token_id, rotated.previous_refresh_token_id, rotated.rotated_at,
            rotated.last_used_at) == (second, first, later, later)
    assert (untouched.refresh_token_id, untouched.rotated_at) == (deleted, None)
    assert (still_ended.refresh_token_id, still_ended.active) == (ended, False)


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


async def _deleted_users(sso_uow: Callable[[], Any], count: int) -> list[User]:
    """``count`` users deleted a minute apart, each with a session, the oldest first."""
    users = [new_user(f"purge-{i}-{uuid4().hex[:8]}@example.com") for i in range(count)]
    async with sso_uow() as uow:
        for i, user in enumerate(users):
            await uow.users.add(user)
            await uow.sessions.add(Session(id=uuid4(), user_id=user.id, created_at=NOW,
                                           refresh_token_id=uuid4(), user_agent="curl/8.5",
                                           ip="203.0.113.7"))
            assert await uow.users.mark_deleted(user.id, NOW + timedelta(minutes=i))
        await uow.commit()
    return users


async def test_purge_erases_the_personal_data_of_users_deleted_before_the_cutoff(
        sso_uow: Callable[[], Any]) -> None:
    old, recent = await _deleted_users(sso_uow, 2)
    kept = new_user("kept@example.com")
    purge_time = NOW + timedelta(days=400)
    async with sso_uow() as uow:
        await uow.users.add(kept)
        purged = await uow.users.purge_deleted(NOW + timedelta(seconds=30), purge_time, 500)
        assert await uow.sessions.delete_for_users(purged) == 1
        await uow.commit()
    assert purged == [old.id]
    async with sso_uow() as uow:
        gone = await uow.users.get(old.id)
        assert await uow.users.by_email(old.email) is None
        assert await uow.sessions.active_for_user(old.id) == []
        # The email is free again, in any case; the others are untouched.
        await uow.users.add(new_user(old.email.upper()))
        untouched = await uow.users.get(recent.id)
        assert await uow.users.get(kept.id) == kept
        assert len(await uow.sessions.active_for_user(recent.id)) == 1
        # Purged once: a second pass finds nobody, and the restore is refused.
        assert await uow.users.purge_deleted(NOW + timedelta(seconds=30), purge_time, 500) == []
        assert not await uow.users.restore(old.id)
        await uow.commit()
    assert gone is not None
    assert (gone.id, gone.email, gone.name, gone.birthday) == (old.id, "", None, None)
    assert old.password_hash not in gone.password_hash
    assert (gone.deleted_at, gone.purged_at, gone.created_at) == (NOW, purge_time, NOW)
    assert untouched is not None
    assert (untouched.email, untouched.name, untouched.purged_at) == (recent.email, "Ann", None)


async def test_a_purged_user_matches_no_email_search_but_its_id(
        sso_uow: Callable[[], Any]) -> None:
    [user] = await _deleted_users(sso_uow, 1)
    async with sso_uow() as uow:
        await uow.users.purge_deleted(NOW + timedelta(days=1), NOW + timedelta(days=1), 500)
        await uow.commit()
    async with sso_uow() as uow:
        by_prefix = await uow.users.page(UserQuery(email_prefix="purge-"), 10, None)
        by_id = await uow.users.page(UserQuery(user_id=user.id), 10, None)
    assert user.id not in [u.id for u in by_prefix]
    assert [(u.id, u.email) for u in by_id] == [(user.id, "")]


async def test_purges_take_batches_and_concurrent_ones_purge_each_user_once(
        sso_uow: Callable[[], Any]) -> None:
    users = await _deleted_users(sso_uow, 7)
    cutoff, now = NOW + timedelta(days=1), NOW + timedelta(days=2)

    async def purge() -> list[UUID]:
        async with sso_uow() as uow:
            ids: list[UUID] = await uow.users.purge_deleted(cutoff, now, 3)
            await uow.sessions.delete_for_users(ids)
            await uow.commit()
        return ids

    first, second = await asyncio.gather(purge(), purge())
    assert len(first) <= 3
    assert len(second) <= 3
    assert not set(first) & set(second)
    rest = await purge()
    assert await purge() == []
    everyone = first + second + rest
    assert sorted(everyone) == sorted(u.id for u in users)
    async with sso_uow() as uow:
        for user in users:
            stored = await uow.users.get(user.id)
            assert stored is not None
            assert (stored.email, stored.purged_at) == ("", now)


async def test_deletion_and_restore_return_the_next_lifecycle_version(
        sso_uow: Callable[[], Any]) -> None:
    user = new_user("versions@example.com")
    async with sso_uow() as uow:
        await uow.users.add(user)
        assert await uow.users.restore(user.id) is None  # not deleted: no new version
        assert await uow.users.mark_deleted(user.id, NOW) == 1
        assert await uow.users.mark_deleted(user.id, NOW) is None  # already deleted
        await uow.commit()
    async with sso_uow() as uow:
        assert await uow.users.restore(user.id) == 2
        assert await uow.users.mark_deleted(user.id, NOW) == 3
        assert await uow.users.mark_deleted(uuid4(), NOW) is None
        await uow.commit()
