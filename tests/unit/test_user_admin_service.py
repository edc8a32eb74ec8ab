"""User administration use cases over the fake store: rights, the last admin, events."""

from __future__ import annotations

from uuid import uuid4

import pytest

from authloyalty.events import SessionRevoked
from authloyalty.platform.errors import Forbidden, InvalidToken, ValidationFailed
from authloyalty.sso.domain import LastAdmin, UserNotFound
from authloyalty.sso.service import AuthService, IssuedTokens, Registration
from tests.fakes import FakeSsoStore


async def _admin(service: AuthService, email: str) -> IssuedTokens:
    await service.make_admin(email, "long enough")
    return await service.login(email, "long enough", "x")


async def test_revoking_ends_sessions_with_a_reason_and_the_last_admin_is_kept(
        service: AuthService, store: FakeSsoStore) -> None:
    root = await _admin(service, "root@example.com")
    with pytest.raises(LastAdmin):
        await service.set_admin_right(root.tokens.access_token, root.user_id, False)
    other = await _admin(service, "other@example.com")
    await service.set_admin_right(root.tokens.access_token, other.user_id, False)
    assert not store.state.users[other.user_id].is_admin
    with pytest.raises(InvalidToken):
        await service.authenticate(other.tokens.access_token)
    reasons = [e.event.reason for e in store.state.outbox
               if isinstance(e.event, SessionRevoked)]
    assert reasons == ["admin_right_revoked"] * 2  # registration and login


async def test_non_admins_unknown_users_and_bad_cursors_are_refused(
        service: AuthService) -> None:
    root = await _admin(service, "root@example.com")
    user = await service.register(Registration("u@example.com", "long enough"))
    with pytest.raises(Forbidden):
        await service.find_users(user.tokens.access_token, None, 10, None)
    with pytest.raises(Forbidden):
        await service.revoke_sessions_of(user.tokens.access_token, root.user_id)
    with pytest.raises(UserNotFound):
        await service.user_details(root.tokens.access_token, uuid4())
    with pytest.raises(UserNotFound):
        await service.set_admin_right(root.tokens.access_token, uuid4(), True)
    with pytest.raises(ValidationFailed):
        await service.find_users(root.tokens.access_token, None, 10, "12")
    page = await service.find_users(root.tokens.access_token, "U@EX", 10, None)
    assert [u.id for u in page.users] == [user.user_id]
    assert page.next_cursor is None
    assert await service.revoke_sessions_of(root.tokens.access_token, user.user_id) == 1
