"""Requests racing an account deletion, a password change or an admin-right revocation,
made deterministic: the other request runs between the password check and the session
opening, where a concurrent one can land."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from authloyalty.platform.errors import InvalidToken
from authloyalty.sso.domain import InvalidCredentials, LastAdmin, UserIsDeleted
from authloyalty.sso.service import AuthService, IssuedTokens, Origin, Registration
from tests.fakes import FakeSsoStore

PASSWORD = "long enough"
NEW_PASSWORD = "another long one"


def after_next_verification(service: AuthService, monkeypatch: pytest.MonkeyPatch,
                            action: Callable[[], Awaitable[object]]) -> None:
    """Run ``action`` once, right after the next password verification."""
    verify = service._hasher.verify
    pending = [action]

    async def verify_then_act(password_hash: str | None, password: str) -> bool:
        ok = await verify(password_hash, password)
        if pending:
            await pending.pop()()
        return ok

    monkeypatch.setattr(service._hasher, "verify", verify_then_act)


async def assert_no_token_works(service: AuthService, *issued: IssuedTokens) -> None:
    for tokens in issued:
        with pytest.raises(InvalidToken):
            await service.authenticate(tokens.tokens.access_token)
        with pytest.raises(InvalidToken):
            await service.refresh(tokens.tokens.refresh_token)


def active_sessions(store: FakeSsoStore) -> list[object]:
    return [s for s in store.state.sessions.values() if s.active]


async def test_a_login_racing_the_deletion_is_refused_and_leaves_no_session(
    service: AuthService, store: FakeSsoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await service.register(Registration("race@example.com", PASSWORD))
    after_next_verification(service, monkeypatch, lambda: service.delete_account(
        first.tokens.access_token, PASSWORD, Origin("a")))
    with pytest.raises(InvalidCredentials):
        await service.login("race@example.com", PASSWORD, "b")
    assert store.state.users[first.user_id].deleted_at is not None
    assert active_sessions(store) == []
    await assert_no_token_works(service, first)


async def test_a_password_change_racing_the_deletion_opens_no_session(
    service: AuthService, store: FakeSsoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await service.register(Registration("change@example.com", PASSWORD))
    second = await service.login("change@example.com", PASSWORD, "b")
    after_next_verification(service, monkeypatch, lambda: service.delete_account(
        second.tokens.access_token, PASSWORD, Origin("b")))
    with pytest.raises(InvalidToken):
        await service.change_password(first.tokens.access_token, PASSWORD, NEW_PASSWORD,
                                      Origin("a"))
    assert active_sessions(store) == []
    await assert_no_token_works(service, first, second)
    with pytest.raises(InvalidCredentials):
        await service.login("change@example.com", NEW_PASSWORD, "a")


async def test_a_login_racing_a_password_change_does_not_succeed_with_the_old_password(
    service: AuthService, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await service.register(Registration("pw@example.com", PASSWORD))
    after_next_verification(service, monkeypatch, lambda: service.change_password(
        first.tokens.access_token, PASSWORD, NEW_PASSWORD, Origin("a")))
    with pytest.raises(InvalidCredentials):
        await service.login("pw@example.com", PASSWORD, "b")
    await service.login("pw@example.com", NEW_PASSWORD, "b")


async def test_two_password_changes_at_once_with_the_old_password_let_one_through(
    service: AuthService, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await service.register(Registration("twice@example.com", PASSWORD))
    second = await service.login("twice@example.com", PASSWORD, "b")
    after_next_verification(service, monkeypatch, lambda: service.change_password(
        second.tokens.access_token, PASSWORD, NEW_PASSWORD, Origin("b")))
    with pytest.raises(InvalidCredentials):
        await service.change_password(first.tokens.access_token, PASSWORD, "a third password",
                                      Origin("a"))
    await service.login("twice@example.com", NEW_PASSWORD, "a")


async def test_a_login_racing_the_revocation_of_the_admin_right_gets_no_admin_claim(
    service: AuthService, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = await service.register(Registration("root@example.com", PASSWORD), is_admin=True)
    other = await service.register(Registration("other@example.com", PASSWORD), is_admin=True)
    after_next_verification(service, monkeypatch, lambda: service.set_admin_right(
        root.tokens.access_token, other.user_id, False))
    issued = await service.login("other@example.com", PASSWORD, "b")
    assert not (await service.authenticate(issued.tokens.access_token)).admin


async def test_the_session_of_a_deleted_user_cannot_be_refreshed(
    service: AuthService, store: FakeSsoStore
) -> None:
    issued = await service.register(Registration("stale@example.com", PASSWORD))
    # What a login racing the deletion could leave behind: a deleted user, a live session.
    store.state.users[issued.user_id].deleted_at = store.state.users[issued.user_id].created_at
    with pytest.raises(InvalidToken):
        await service.refresh(issued.tokens.refresh_token)


async def test_deleted_admins_do_not_count_and_the_last_live_admin_cannot_leave(
    service: AuthService, store: FakeSsoStore
) -> None:
    root = await service.register(Registration("root@example.com", PASSWORD), is_admin=True)
    second = await service.register(Registration("second@example.com", PASSWORD),
                                    is_admin=True)
    await service.delete_account(second.tokens.access_token, PASSWORD, Origin("b"))
    with pytest.raises(LastAdmin):
        await service.set_admin_right(root.tokens.access_token, root.user_id, False)
    with pytest.raises(LastAdmin):
        await service.delete_account(root.tokens.access_token, PASSWORD, Origin("a"))
    assert store.state.users[root.user_id].is_admin
    assert store.state.users[root.user_id].deleted_at is None
    await service.authenticate(root.tokens.access_token)


async def test_admin_create_for_a_deleted_user_says_so_and_changes_nothing(
    service: AuthService, store: FakeSsoStore
) -> None:
    await service.register(Registration("root@example.com", PASSWORD), is_admin=True)
    for email, is_admin in (("gone-admin@example.com", True), ("gone@example.com", False)):
        issued = await service.register(Registration(email, PASSWORD), is_admin=is_admin)
        await service.delete_account(issued.tokens.access_token, PASSWORD, Origin("a"))
        with pytest.raises(UserIsDeleted) as refused:
            await service.make_admin(email, NEW_PASSWORD, reset_password=True)
        assert "deleted" in refused.value.message
        assert f"/auth/admin/users/{issued.user_id}/restore" in refused.value.message
        user = store.state.users[issued.user_id]
        assert (user.is_admin, user.deleted_at is not None) == (is_admin, True)
        with pytest.raises(InvalidCredentials):
            await service.login(email, NEW_PASSWORD, "a")
