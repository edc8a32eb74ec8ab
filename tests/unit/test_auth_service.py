"""sso's use cases against the in-memory unit of work."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from authloyalty.events import SessionRevoked, UserRegistered
from authloyalty.platform.errors import InvalidToken, ValidationFailed
from authloyalty.platform.tokens import (
    KeyStore,
    SigningKey,
    TokenIssuer,
    TokenVerifier,
    generate_private_key,
)
from authloyalty.sso.domain import (
    InvalidCredentials,
    SessionNotFound,
    TokenReused,
    TooManyAttempts,
    UserExists,
)
from authloyalty.sso.passwords import PasswordHasher
from authloyalty.sso.service import AuthService, Origin, Registration
from authloyalty.sso.settings import SsoSettings, ThrottleSettings
from tests.conftest import FAST_ARGON2
from tests.fakes import FakeSsoStore


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> FakeSsoStore:
    return FakeSsoStore()


def make_service(store: FakeSsoStore, clock: Clock, **settings: object) -> AuthService:
    cfg = SsoSettings.model_validate({"argon2": FAST_ARGON2.model_dump(), **settings})
    keys = KeyStore([SigningKey.from_private(generate_private_key("EdDSA"))])
    issuer = TokenIssuer(keys, cfg.issuer, cfg.access_token_ttl_seconds,
                         cfg.refresh_token_ttl_seconds)
    # Tokens are checked against the real clock by PyJWT, so keep the fake clock near it.
    clock.now = datetime.now(UTC)
    return AuthService(store.uow, PasswordHasher(cfg.argon2), issuer,
                       TokenVerifier(keys, cfg.issuer), cfg, clock)


@pytest.fixture
def service(store: FakeSsoStore, clock: Clock) -> AuthService:
    return make_service(store, clock)


async def test_register_writes_user_session_and_event_in_one_commit(
    service: AuthService, store: FakeSsoStore
) -> None:
    issued = await service.register(Registration("Ann@Example.com", "long enough"))
    user = store.state.users[issued.user_id]
    assert user.email == "Ann@Example.com"
    assert user.password_hash.startswith("$argon2id$")
    assert len(store.state.sessions) == 1
    [event] = store.state.outbox
    assert event.event == UserRegistered(issued.user_id)


async def test_duplicate_email_is_refused_case_insensitively_and_writes_nothing(
    service: AuthService, store: FakeSsoStore
) -> None:
    await service.register(Registration("ann@example.com", "long enough"))
    with pytest.raises(UserExists):
        await service.register(Registration("ANN@example.COM", "other password"))
    assert len(store.state.users) == 1
    assert len(store.state.outbox) == 1


async def test_password_shorter_than_configured_minimum_is_refused(
    store: FakeSsoStore, clock: Clock
) -> None:
    service = make_service(store, clock, password_min_length=12)
    with pytest.raises(ValidationFailed, match="at least 12"):
        await service.register(Registration("a@example.com", "elevenchars"))
    assert store.state.users == {}


async def test_login_checks_password_and_opens_a_new_session(service: AuthService) -> None:
    first = await service.register(Registration("b@example.com", "long enough"))
    second = await service.login("B@EXAMPLE.COM", "long enough", "10.0.0.1")
    assert second.user_id == first.user_id
    with pytest.raises(InvalidCredentials):
        await service.login("b@example.com", "wrong password", "10.0.0.1")
    with pytest.raises(InvalidCredentials):
        await service.login("nobody@example.com", "long enough", "10.0.0.1")


async def test_login_rehashes_when_parameters_change(store: FakeSsoStore, clock: Clock) -> None:
    old = make_service(store, clock)
    issued = await old.register(Registration("c@example.com", "long enough"))
    before = store.state.users[issued.user_id].password_hash
    stronger = make_service(store, clock, argon2={"time_cost": 2, "memory_kib": 128})
    await stronger.login("c@example.com", "long enough", "x")
    after = store.state.users[issued.user_id].password_hash
    assert after != before
    assert "t=2" in after
    assert "m=128" in after


async def test_throttle_after_five_failures_per_email_with_retry_after(
    service: AuthService, clock: Clock
) -> None:
    await service.register(Registration("d@example.com", "long enough"))
    for _ in range(5):
        with pytest.raises(InvalidCredentials):
            await service.login("d@example.com", "wrong password", "10.0.0.2")
    with pytest.raises(TooManyAttempts) as caught:
        await service.login("d@example.com", "long enough", "10.0.0.2")
    assert 0 < caught.value.retry_after <= 900
    clock.advance(901)
    assert (await service.login("d@example.com", "long enough", "10.0.0.2")).user_id


async def test_success_resets_the_email_counter(service: AuthService) -> None:
    await service.register(Registration("e@example.com", "long enough"))
    for _ in range(4):
        with pytest.raises(InvalidCredentials):
            await service.login("e@example.com", "wrong password", "10.0.0.3")
    await service.login("e@example.com", "long enough", "10.0.0.3")
    for _ in range(4):
        with pytest.raises(InvalidCredentials):
            await service.login("e@example.com", "wrong password", "10.0.0.3")


async def test_throttle_per_client_address(store: FakeSsoStore, clock: Clock) -> None:
    service = make_service(store, clock, login_throttle=ThrottleSettings(
        max_failures_per_client=3).model_dump())
    for i in range(3):
        with pytest.raises(InvalidCredentials):
            await service.login(f"x{i}@example.com", "whatever1", "10.9.9.9")
    with pytest.raises(TooManyAttempts):
        await service.login("fresh@example.com", "whatever1", "10.9.9.9")
    with pytest.raises(InvalidCredentials):
        await service.login("fresh@example.com", "whatever1", "10.9.9.8")


async def test_refresh_rotates_and_reuse_revokes_the_session(
    service: AuthService, store: FakeSsoStore
) -> None:
    issued = await service.register(Registration("f@example.com", "long enough"))
    rotated = await service.refresh(issued.tokens.refresh_token)
    assert rotated.tokens.refresh_token != issued.tokens.refresh_token
    await service.authenticate(rotated.tokens.access_token)
    with pytest.raises(TokenReused):
        await service.refresh(issued.tokens.refresh_token)
    with pytest.raises(InvalidToken):
        await service.refresh(rotated.tokens.refresh_token)
    with pytest.raises(InvalidToken):
        await service.authenticate(rotated.tokens.access_token)
    revoked = [e.event for e in store.state.outbox if isinstance(e.event, SessionRevoked)]
    assert len(revoked) == 1
    assert revoked[0].reason == "refresh_token_reuse"


async def test_reuse_grace_refuses_without_ending_the_session(
    store: FakeSsoStore, clock: Clock
) -> None:
    service = make_service(store, clock, refresh_reuse_grace_seconds=5)
    issued = await service.register(Registration("g@example.com", "long enough"))
    rotated = await service.refresh(issued.tokens.refresh_token)
    with pytest.raises(InvalidToken) as caught:
        await service.refresh(issued.tokens.refresh_token)
    assert not isinstance(caught.value, TokenReused)
    await service.authenticate(rotated.tokens.access_token)
    clock.advance(6)
    with pytest.raises(TokenReused):
        await service.refresh(issued.tokens.refresh_token)


async def test_parallel_refreshes_never_yield_two_live_successors(service: AuthService) -> None:
    issued = await service.register(Registration("h@example.com", "long enough"))
    results = await asyncio.gather(
        *(service.refresh(issued.tokens.refresh_token) for _ in range(8)),
        return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, TokenReused) for r in results if isinstance(r, BaseException))
    with pytest.raises(InvalidToken):
        await service.authenticate(winners[0].tokens.access_token)


async def test_access_token_is_not_a_refresh_token(service: AuthService) -> None:
    issued = await service.register(Registration("i@example.com", "long enough"))
    with pytest.raises(InvalidToken, match="refresh token required"):
        await service.refresh(issued.tokens.access_token)


async def test_logout_with_either_token_ends_the_session_once(
    service: AuthService, store: FakeSsoStore
) -> None:
    a = await service.register(Registration("j@example.com", "long enough"))
    await service.logout(a.tokens.refresh_token)
    with pytest.raises(InvalidToken):
        await service.authenticate(a.tokens.access_token)
    with pytest.raises(InvalidToken):
        await service.logout(a.tokens.access_token)
    b = await service.login("j@example.com", "long enough", "x")
    await service.logout(b.tokens.access_token)
    with pytest.raises(InvalidToken):
        await service.refresh(b.tokens.refresh_token)
    events = [e.event for e in store.state.outbox if isinstance(e.event, SessionRevoked)]
    assert [e.reason for e in events] == ["logout", "logout"]
    until = events[0].until
    assert until > datetime.now(UTC) + timedelta(minutes=14)


async def test_user_info_and_admin_promotion(service: AuthService) -> None:
    issued = await service.register(Registration("k@example.com", "long enough", name="Kim"))
    user = await service.user_info(issued.tokens.access_token)
    assert (user.name, user.is_admin) == ("Kim", False)
    user_id, created = await service.ensure_admin("K@example.com", "ignored password")
    assert (user_id, created) == (issued.user_id, False)
    assert (await service.get_user(user_id)).is_admin
    new_id, created = await service.ensure_admin("boss@example.com", "long enough")
    assert created
    assert isinstance(new_id, UUID)
    logged = await service.login("boss@example.com", "long enough", "x")
    claims = await service.authenticate(logged.tokens.access_token)
    assert (claims.user_id, claims.admin) == (new_id, True)


async def test_admin_revokes_every_session_of_a_user(
    service: AuthService, store: FakeSsoStore
) -> None:
    first = await service.register(Registration("m@example.com", "long enough"))
    second = await service.login("m@example.com", "long enough", "x")
    assert await service.revoke_user_sessions("M@example.com") == 2
    for issued in (first, second):
        with pytest.raises(InvalidToken):
            await service.authenticate(issued.tokens.access_token)
    reasons = [e.event.reason for e in store.state.outbox
               if isinstance(e.event, SessionRevoked)]
    assert reasons == ["admin", "admin"]
    assert await service.revoke_user_sessions("m@example.com") == 0


async def test_password_change_ends_every_session_in_the_commit_that_opens_the_new_one(
    service: AuthService, store: FakeSsoStore
) -> None:
    first = await service.register(Registration("pw@example.com", "long enough"))
    second = await service.login("pw@example.com", "long enough", "x", "Agent/1")
    changed = await service.change_password(first.tokens.access_token, "long enough",
                                            "another long one", Origin("y", "Agent/2"))
    for old in (first, second):
        with pytest.raises(InvalidToken):
            await service.authenticate(old.tokens.access_token)
    revoked = [e.event for e in store.state.outbox if isinstance(e.event, SessionRevoked)]
    assert sorted(e.reason for e in revoked) == ["password_changed"] * 2
    claims = await service.authenticate(changed.tokens.access_token)
    listed = await service.sessions(changed.tokens.access_token)
    assert [(s.id, s.ip, s.user_agent) for s in listed.sessions] == [
        (claims.session_id, "y", "Agent/2")]
    with pytest.raises(InvalidCredentials):
        await service.login("pw@example.com", "long enough", "x")
    await service.login("pw@example.com", "another long one", "x")


async def test_password_change_refused_writes_nothing_but_the_failure(
    service: AuthService, store: FakeSsoStore
) -> None:
    issued = await service.register(Registration("pw2@example.com", "long enough"))
    hash_before = store.state.users[issued.user_id].password_hash
    with pytest.raises(InvalidCredentials):
        await service.change_password(issued.tokens.access_token, "wrong one",
                                      "another long one", Origin("x"))
    with pytest.raises(ValidationFailed, match="new_password"):
        await service.change_password(issued.tokens.access_token, "long enough", "short",
                                      Origin("x"))
    assert store.state.users[issued.user_id].password_hash == hash_before
    assert len(store.state.failures) == 1
    assert not [e for e in store.state.outbox if isinstance(e.event, SessionRevoked)]
    await service.authenticate(issued.tokens.access_token)


async def test_ending_sessions_touches_only_the_callers_own(
    service: AuthService, store: FakeSsoStore
) -> None:
    mine = await service.register(Registration("own@example.com", "long enough"))
    other_mine = await service.login("own@example.com", "long enough", "x")
    theirs = await service.register(Registration("their@example.com", "long enough"))
    their_session = (await service.authenticate(theirs.tokens.access_token)).session_id
    with pytest.raises(SessionNotFound):
        await service.end_session(mine.tokens.access_token, their_session)
    assert await service.end_other_sessions(mine.tokens.access_token) == 1
    with pytest.raises(InvalidToken):
        await service.authenticate(other_mine.tokens.access_token)
    await service.authenticate(mine.tokens.access_token)
    await service.authenticate(theirs.tokens.access_token)
