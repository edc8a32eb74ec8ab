"""sso's use cases; each owns its transaction and writes its events to the outbox."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal, NoReturn, TypeGuard
from uuid import UUID, uuid4

from authloyalty.events import SessionRevoked, UserDeleted, UserRegistered, UserRestored
from authloyalty.platform import metrics, telemetry
from authloyalty.platform.audit import (
    AuditPage,
    AuditQuery,
    AuditRecord,
    parse_cursor,
    read_page,
)
from authloyalty.platform.bus import Envelope
from authloyalty.platform.clock import utcnow
from authloyalty.platform.database import DatabaseUnavailable
from authloyalty.platform.errors import Forbidden, InvalidToken, ValidationFailed
from authloyalty.platform.tokens import TokenClaims, TokenIssuer, TokenPair, TokenVerifier
from authloyalty.sso.domain import (
    InvalidCredentials,
    LastAdmin,
    Session,
    SessionNotFound,
    SsoUnitOfWork,
    TokenReused,
    TooManyAttempts,
    User,
    UserIsDeleted,
    UserNotDeleted,
    UserNotFound,
    UserPurged,
    UserQuery,
    canonical_email,
    email_problem,
)
from authloyalty.sso.passwords import PasswordHasher
from authloyalty.sso.settings import SsoSettings

log = logging.getLogger(__name__)

REUSE = "refresh_token_reuse"
# Deleted users purged in one transaction (a short one: concurrent requests wait less).
PURGE_BATCH = 500


AdminOutcome = Literal["created", "promoted", "already an admin"]


@dataclass(frozen=True)
class AdminChange:
    """What ``make_admin`` did: the user, how they became an admin, whether the password
    was set anew."""

    user_id: UUID
    outcome: AdminOutcome
    password_reset: bool


@dataclass(frozen=True)
class Registration:
    """Input of :meth:`AuthService.register`."""

    email: str
    password: str
    name: str | None = None
    birthday: date | None = None


@dataclass(frozen=True)
class Origin:
    """Where a request that opens a session came from, as shown in the user's session list."""

    ip: str | None = None
    user_agent: str | None = None


USER_AGENT_MAX = 256


@dataclass(frozen=True)
class SessionList:
    """The caller's active sessions, newest first, and which one the caller is."""

    current: UUID
    sessions: list[Session]


@dataclass(frozen=True)
class IssuedTokens:
    """What register/login/refresh return."""

    user_id: UUID
    tokens: TokenPair


class AuthService:
    """Registration, login, refresh, logout and user info."""

    def __init__(
        self,
        uow: Callable[[], SsoUnitOfWork],
        hasher: PasswordHasher,
        issuer: TokenIssuer,
        verifier: TokenVerifier,
        settings: SsoSettings,
        clock: Callable[[], datetime] = utcnow,
        read_uow: Callable[[], SsoUnitOfWork] | None = None,
        replica_uow: Callable[[], SsoUnitOfWork] | None = None,
    ) -> None:
        self._uow = uow
        # Lookups that write nothing, on the leader: no BEGIN/ROLLBACK round trips there.
        self._read_uow = read_uow or uow
        # Lookups a replication lag cannot make wrong (docs/architecture.md, "Reads: leader or
        # replica"): user profiles, with the leader asked when the replica lacks the row.
        self._replica_uow = replica_uow
        self._hasher = hasher
        self._issuer = issuer
        self._verifier = verifier
        self._settings = settings
        self._now = clock

    def _check_registration(self, reg: Registration) -> None:
        problem = email_problem(reg.email)
        if problem:
            raise ValidationFailed(f"email: {problem}")
        self._check_password("password", reg.password)

    def _check_password(self, field: str, password: str) -> None:
        minimum = self._settings.password_min_length
        if len(password) < minimum:
            raise ValidationFailed(f"{field}: must be at least {minimum} characters")

    async def register(self, reg: Registration, *, is_admin: bool = False,
                       origin: Origin | None = None,
                       audit: Callable[[UUID], AuditRecord] | None = None) -> IssuedTokens:
        """Create the user and a session; announce ``user_registered`` in the same commit
        (and record ``audit``, given the new user's id, when an admin action created it)."""
        self._check_registration(reg)
        password_hash = await self._hasher.hash(reg.password)
        now = self._now()
        user = User(id=uuid4(), email=canonical_email(reg.email), password_hash=password_hash,
                    created_at=now, name=reg.name, birthday=reg.birthday, is_admin=is_admin)
        async with self._uow() as uow:
            await uow.users.add(user)
            session = await self._open_session(uow, user, now, origin)
            await uow.outbox.add(Envelope(UserRegistered(user.id), occurred_at=now,
                                          headers=telemetry.current_headers()))
            if audit is not None:
                await uow.audit.add(audit(user.id))
            await uow.commit()
        metrics.REGISTRATIONS.inc()
        return IssuedTokens(user.id, self._pair(user, session))

    async def _open_session(self, uow: SsoUnitOfWork, user: User, now: datetime,
                            origin: Origin | None = None) -> Session:
        origin = origin or Origin()
        agent = origin.user_agent[:USER_AGENT_MAX] if origin.user_agent else None
        ip = origin.ip[:64] if origin.ip else None
        session = Session(id=uuid4(), user_id=user.id, created_at=now, refresh_token_id=uuid4(),
                          user_agent=agent, ip=ip, last_used_at=now)
        await uow.sessions.add(session)
        return session

    def _pair(self, user: User, session: Session) -> TokenPair:
        return self._issuer.issue_pair(user.id, session.id, user.is_admin, self._now(),
                                       refresh_token_id=session.refresh_token_id)

    async def login(self, email: str, password: str, client: str,
                    user_agent: str | None = None) -> IssuedTokens:
        """Check the password (throttled per email and per client) and open a session."""
        async with self._read_uow() as uow:
            email_failures = await self._check_throttle(uow, email, client)
            user = await uow.users.by_email(email)
        ok = await self._hasher.verify(user.password_hash if user else None, password)
        now = self._now()
        # A deleted user is refused exactly as a wrong password is (and counted as one).
        if not ok or user is None or user.deleted_at is not None:
            await self._refuse_login(email, client, now)
        new_hash = await self._hasher.hash(password) \
            if self._hasher.needs_rehash(user.password_hash) else None
        session: Session | None = None
        async with self._uow() as uow:
            locked = await uow.users.lock(user.id, exclusive=new_hash is not None)
            if _unchanged(locked, user) and (
                    new_hash is None or await uow.users.set_password_hash(user.id, new_hash)):
                if email_failures:
                    await uow.login_failures.clear_email(email)
                session = await self._open_session(uow, locked, now, Origin(client, user_agent))
                await uow.commit()
        if locked is None or session is None:
            # Deleted or given another password since the check: refused as above.
            await self._refuse_login(email, client, now)
        metrics.LOGINS.labels("success").inc()
        # The claims of the row locked with the session: a revocation of the admin right that
        # commits first is in them; one that commits later ends the session.
        return IssuedTokens(locked.id, self._pair(locked, session))

    async def _refuse_login(self, email: str, client: str, now: datetime) -> NoReturn:
        async with self._uow() as uow:
            await uow.login_failures.record(email, client, now)
            await uow.commit()
        metrics.LOGINS.labels("invalid_credentials").inc()
        raise InvalidCredentials()

    async def _check_throttle(self, uow: SsoUnitOfWork, email: str, client: str) -> int:
        """Raise :class:`TooManyAttempts` over the limits; else the email's recent failures."""
        policy = self._settings.login_throttle
        if not policy.enabled:
            return 0
        now = self._now()
        window = timedelta(seconds=policy.window_seconds)
        since = now - window
        email_failures = await uow.login_failures.for_email(email, since)
        for count, oldest, limit in (
            (*email_failures, policy.max_failures_per_email),
            (*await uow.login_failures.for_client(client, since),
             policy.max_failures_per_client),
        ):
            if count >= limit and oldest is not None:
                metrics.LOGINS.labels("throttled").inc()
                raise TooManyAttempts(math.ceil((oldest + window - now).total_seconds()))
        return email_failures[0]

    async def refresh(self, token: str) -> IssuedTokens:
        """Spend a refresh token for a new pair; a spent token presented again ends the session."""
        claims = self._verifier.verify(token, "refresh")
        now = self._now()
        successor = uuid4()
        async with self._uow() as uow:
            # The usual case, one statement: the token is its active session's current one and
            # the user is still there. Whatever else happened is told apart below.
            is_admin = await uow.sessions.rotate_for_user(
                claims.session_id, claims.user_id, claims.token_id, successor, now)
            if is_admin is None:
                is_admin = await self._refresh_unusual(uow, claims, successor, now)
            await uow.commit()
        metrics.REFRESHES.labels("success").inc()
        pair = self._issuer.issue_pair(claims.user_id, claims.session_id, is_admin, now,
                                       refresh_token_id=successor)
        return IssuedTokens(claims.user_id, pair)

    async def _refresh_unusual(self, uow: SsoUnitOfWork, claims: TokenClaims, successor: UUID,
                               now: datetime) -> bool:
        """Why the one-statement rotation did not happen, refused as such; or, if the session
        changed in between so that it now may, the rotation; the user's admin flag."""
        session = await uow.sessions.get(claims.session_id)
        if session is None or session.user_id != claims.user_id:
            metrics.REFRESHES.labels("invalid").inc()
            raise InvalidToken("unknown session")
        if not session.active:
            self._refuse_ended_session(session, claims)
        if not await uow.sessions.rotate(session.id, claims.token_id, successor, now):
            await self._on_refresh_race_or_reuse(uow, session, claims, now)
        user = await uow.users.get(claims.user_id)
        if user is None or user.deleted_at is not None:
            metrics.REFRESHES.labels("invalid").inc()
            raise InvalidToken("user no longer exists")
        return user.is_admin

    @staticmethod
    def _refuse_ended_session(session: Session, claims: TokenClaims) -> None:
        # A spent token of a session that reuse already ended is still a reuse: say so.
        spent = claims.token_id != session.refresh_token_id
        metrics.REFRESHES.labels("invalid").inc()
        if session.revoke_reason == REUSE and spent:
            raise TokenReused()
        raise InvalidToken("session has ended")

    async def _on_refresh_race_or_reuse(
        self, uow: SsoUnitOfWork, session: Session, claims: TokenClaims, now: datetime
    ) -> None:
        # Reload: a concurrent refresh may have rotated it between our read and our update.
        current = await uow.sessions.get(session.id)
        grace = self._settings.refresh_reuse_grace_seconds
        if (
            current is not None and current.active and grace > 0
            and current.previous_refresh_token_id == claims.token_id
            and current.rotated_at is not None
            and (now - current.rotated_at).total_seconds() <= grace
        ):
            metrics.REFRESHES.labels("grace").inc()
            raise InvalidToken("refresh token was just rotated")
        if current is not None and current.active:
            await self._revoke(uow, current, REUSE, now)
            await uow.commit()
            log.warning("refresh token reuse: session %s revoked", session.id)
        metrics.REFRESHES.labels("reused").inc()
        raise TokenReused()

    async def _revoke(self, uow: SsoUnitOfWork, session: Session, reason: str,
                      now: datetime) -> bool:
        if not await uow.sessions.revoke(session.id, reason, now):
            return False
        # Loyalty must refuse this session's access tokens until the last one expires.
        until = now + timedelta(seconds=self._issuer.access_ttl)
        await uow.outbox.add(Envelope(SessionRevoked(session.id, session.user_id, until, reason),
                                      occurred_at=now, headers=telemetry.current_headers()))
        metrics.SESSIONS_REVOKED.labels(reason).inc()
        return True

    async def logout(self, token: str) -> None:
        """End the session of an access or refresh token."""
        claims = self._verifier.verify(token)
        now = self._now()
        async with self._uow() as uow:
            session = await uow.sessions.get(claims.session_id)
            if session is None or session.user_id != claims.user_id:
                raise InvalidToken("unknown session")
            if not await self._revoke(uow, session, "logout", now):
                raise InvalidToken("session has already ended")
            await uow.commit()

    async def sessions(self, access_token: str) -> SessionList:
        """The caller's active sessions, newest first."""
        claims = await self.authenticate(access_token)
        async with self._read_uow() as uow:
            found = await uow.sessions.active_for_user(claims.user_id)
        return SessionList(claims.session_id, found)

    async def end_session(self, access_token: str, session_id: UUID) -> None:
        """End one of the caller's sessions, as a logout of it would."""
        claims = await self.authenticate(access_token)
        now = self._now()
        async with self._uow() as uow:
            session = await uow.sessions.get(session_id)
            # Another user's session is indistinguishable from none at all.
            if session is None or session.user_id != claims.user_id:
                raise SessionNotFound()
            if not await self._revoke(uow, session, "logout", now):
                raise SessionNotFound()
            await uow.commit()

    async def end_other_sessions(self, access_token: str) -> int:
        """End every session of the caller but the current one; returns how many ended."""
        claims = await self.authenticate(access_token)
        now = self._now()
        async with self._uow() as uow:
            ended = 0
            for session in await uow.sessions.active_for_user(claims.user_id):
                if session.id != claims.session_id:
                    ended += await self._revoke(uow, session, "logout", now)
            await uow.commit()
        return ended

    async def change_password(self, access_token: str, current: str, new: str,
                              origin: Origin) -> IssuedTokens:
        """Check the current password (throttled as login is), store the new one, end every
        session of the user and open a new one."""
        claims = await self.authenticate(access_token)
        user, email_failures = await self._confirm_password(claims, current, origin)
        now = self._now()
        self._check_password("new_password", new)
        password_hash = await self._hasher.hash(new)
        async with self._uow() as uow:
            locked = await uow.users.lock(user.id, exclusive=True)
            if locked is None or locked.deleted_at is not None:
                # Deleted since the check: every session ended with it, this one too.
                raise InvalidToken("user no longer exists")
            if not _unchanged(locked, user):
                # The password checked is no longer the user's (changed concurrently).
                raise InvalidCredentials("invalid password")
            if not await uow.users.set_password_hash(user.id, password_hash):
                raise InvalidToken("user no longer exists")
            if email_failures:
                await uow.login_failures.clear_email(user.email)
            for session in await uow.sessions.active_for_user(user.id):
                await self._revoke(uow, session, "password_changed", now)
            session = await self._open_session(uow, locked, now, origin)
            await uow.commit()
        return IssuedTokens(locked.id, self._pair(locked, session))

    async def _confirm_password(self, claims: TokenClaims, password: str,
                                origin: Origin) -> tuple[User, int]:
        """The caller's user if ``password`` is theirs, and their recent failures; a wrong
        password counts against the login throttle (429 beyond it)."""
        client = origin.ip or "unknown"
        async with self._read_uow() as uow:
            user = await uow.users.get(claims.user_id)
            if user is None or user.deleted_at is not None:
                raise InvalidToken("user no longer exists")
            email_failures = await self._check_throttle(uow, user.email, client)
        if not await self._hasher.verify(user.password_hash, password):
            async with self._uow() as uow:
                await uow.login_failures.record(user.email, client, self._now())
                await uow.commit()
            raise InvalidCredentials("invalid password")
        return user, email_failures

    async def delete_account(self, access_token: str, password: str, origin: Origin) -> None:
        """Soft-delete the caller's user once the password confirms it: login is refused
        from now on and every session ends, in one commit."""
        claims = await self.authenticate(access_token)
        user, email_failures = await self._confirm_password(claims, password, origin)
        now = self._now()
        async with self._uow() as uow:
            # Locked first and in the order set_admin_right locks them: of two admins leaving,
            # or one leaving while the other's right is revoked, the second sees the first.
            if await uow.users.lock_admins() == [user.id]:
                raise LastAdmin("the last admin cannot delete the account: grant the admin "
                                "right to another user first")
            # Marked deleted before the sessions are listed: a login (or password change)
            # holding the user's row lock commits its session first, and the listing, a later
            # statement, sees it (READ COMMITTED); one that comes after sees the deletion.
            version = await uow.users.mark_deleted(user.id, now)
            if version is None:
                raise InvalidToken("user no longer exists")  # deleted concurrently
            if email_failures:
                await uow.login_failures.clear_email(user.email)
            await self._end_sessions(uow, user.id, "account_deleted", now)
            # loyalty freezes the account on this event (no personal data in it).
            await uow.outbox.add(Envelope(UserDeleted(user.id, now, version), occurred_at=now,
                                          headers=telemetry.current_headers()))
            await uow.commit()

    async def restore_user(self, access_token: str, user_id: UUID) -> None:
        """Undo a user's deletion (admins only) while their personal data is kept."""
        claims = await self._admin(access_token)
        now = self._now()
        async with self._uow() as uow:
            user = await uow.users.get(user_id)
            if user is None:
                raise UserNotFound()
            if user.purged_at is not None:
                raise UserPurged()
            version = await uow.users.restore(user_id)
            if version is None:
                raise UserNotDeleted()
            # loyalty unfreezes the account on this event.
            await uow.outbox.add(Envelope(UserRestored(user_id, now, version), occurred_at=now,
                                          headers=telemetry.current_headers()))
            await uow.audit.add(AuditRecord.by_admin(claims.user_id, "restore_user", user_id,
                                                     {"restored": True}, now))
            await uow.commit()

    async def revoke_user_sessions(self, email: str, reason: str = "admin") -> int:
        """End every session of the user (an admin action); returns how many ended."""
        now = self._now()
        async with self._uow() as uow:
            user = await uow.users.by_email(email)
            if user is None:
                raise UserNotFound()
            ended = await self._end_sessions(uow, user.id, reason, now)
            await uow.audit.add(AuditRecord.by_cli("revoke_sessions", user.id,
                                                   {"sessions_ended": ended}, now))
            await uow.commit()
        return ended

    async def _end_sessions(self, uow: SsoUnitOfWork, user_id: UUID, reason: str,
                            now: datetime) -> int:
        ended = 0
        for session in await uow.sessions.active_for_user(user_id):
            ended += await self._revoke(uow, session, reason, now)
        return ended

    async def authenticate(self, access_token: str) -> TokenClaims:
        """Claims of a valid access token whose session is still active."""
        claims = self._verifier.verify(access_token, "access")
        async with self._read_uow() as uow:
            session = await uow.sessions.get(claims.session_id)
        if session is None or not session.active:
            raise InvalidToken("session has ended")
        return claims

    async def user_info(self, access_token: str, *, current: bool = False) -> User:
        """The user behind an access token (its session checked on the leader); ``current``
        reads the profile from the leader too, for decisions on the user's rights."""
        claims = await self.authenticate(access_token)
        user = await self._user(claims.user_id, current=current)
        if user is None:
            raise InvalidToken("user no longer exists")
        return user

    async def get_user(self, user_id: UUID) -> User:
        """A user by id, from the leader (for decisions on the user's rights)."""
        user = await self._user(user_id, current=True)
        if user is None:
            raise UserNotFound()
        return user

    async def profile(self, user_id: UUID) -> User:
        """A user by id for display to other services (a read replica may answer)."""
        user = await self._user(user_id, current=False)
        if user is None:
            raise UserNotFound()
        return user

    async def _user(self, user_id: UUID, *, current: bool) -> User | None:
        """The user from the read replica when there is one and ``current`` is not asked;
        from the leader when the replica lacks the row (registered within the replication
        lag) or cannot be reached."""
        if not current and self._replica_uow is not None:
            try:
                async with self._replica_uow() as uow:
                    user = await uow.users.get(user_id)
                if user is not None:
                    return user
            except DatabaseUnavailable:
                log.warning("read replica unavailable; reading user %s from the leader",
                            user_id)
        async with self._read_uow() as uow:
            return await uow.users.get(user_id)

    async def ensure_admin(self, email: str, password: str) -> tuple[UUID, bool]:
        """Create an admin, or promote the existing user; returns (user id, created)."""
        # Run at every start: audited only when it changes something.
        try:
            change = await self.make_admin(email, password, audit_unchanged=False)
        except UserIsDeleted as exc:
            # Not a reason to refuse to start: the service runs, without that admin.
            log.warning("bootstrap admin not set: %s", exc.message)
            return exc.user_id, False
        return change.user_id, change.outcome == "created"

    async def make_admin(self, email: str, password: str, *, reset_password: bool = False,
                         audit_unchanged: bool = True) -> AdminChange:
        """Create an admin with ``password``, or make the existing user one; an existing
        user's password changes only with ``reset_password``. An action of the command line,
        audited (one that changes nothing, too, unless ``audit_unchanged`` is False)."""
        if reset_password:
            self._check_registration(Registration(email=email, password=password))
        async with self._uow() as uow:
            user = await uow.users.by_email(email)
            if user is not None:
                if user.deleted_at is not None:
                    raise UserIsDeleted(
                        f"user {user.id} deleted the account and cannot log in; an admin can "
                        f"restore it with POST /auth/admin/users/{user.id}/restore (until it "
                        "is purged), then run this again", user.id)
                if reset_password:
                    await uow.users.set_password_hash(user.id,
                                                      await self._hasher.hash(password))
                if not user.is_admin:
                    await uow.users.set_admin(user.id, True)
                outcome: AdminOutcome = "already an admin" if user.is_admin else "promoted"
                if audit_unchanged or outcome != "already an admin" or reset_password:
                    await uow.audit.add(_admin_created(user.id, outcome, reset_password,
                                                       self._now()))
                await uow.commit()
                return AdminChange(user.id, outcome, reset_password)
        issued = await self.register(
            Registration(email=email, password=password), is_admin=True,
            audit=lambda user_id: _admin_created(user_id, "created", False, self._now()))
        return AdminChange(issued.user_id, "created", False)

    async def purge_login_failures(self) -> int:
        """Drop failures that fell out of the throttling window."""
        before = self._now() - timedelta(seconds=self._settings.login_throttle.window_seconds)
        async with self._uow() as uow:
            removed = await uow.login_failures.purge(before)
            await uow.commit()
        return removed

    async def purge_deleted_users(self, batch: int = PURGE_BATCH) -> int:
        """Erase the personal data of users deleted longer than the retention window ago
        (every replica may run it: each user is purged once), ``batch`` users a transaction;
        returns how many."""
        retention = timedelta(days=self._settings.deletion_retention_days)
        total = 0
        while True:
            now = self._now()
            async with self._uow() as uow:
                purged = await uow.users.purge_deleted(now - retention, now, batch)
                await uow.sessions.delete_for_users(purged)
                await uow.commit()
            total += len(purged)
            if len(purged) < batch:
                break
        if total:
            metrics.USERS_PURGED.inc(total)
            # A count only: nothing personal in the log (nor in any event).
            log.info("purged the personal data of %d deleted user(s)", total)
        return total

    # --- user administration (admins only) ------------------------------------------------

    async def _admin(self, access_token: str) -> TokenClaims:
        claims = await self.authenticate(access_token)
        if not claims.admin:
            raise Forbidden("admin rights required")
        return claims

    async def find_users(self, access_token: str, query: str | None, limit: int,
                         cursor: str | None) -> UserPage:
        """A page of users whose email starts with ``query`` (any case) or whose id it is,
        ordered by email; ``next_cursor`` continues it."""
        await self._admin(access_token)
        after = _user_cursor(cursor)
        async with self._read_uow() as uow:
            found = await uow.users.page(_user_query(query), limit + 1, after)
        more = len(found) > limit
        found = found[:limit]
        return UserPage(found, str(found[-1].id) if more and found else None)

    async def user_details(self, access_token: str, user_id: UUID) -> tuple[User, int]:
        """A user and how many active sessions they have."""
        await self._admin(access_token)
        async with self._read_uow() as uow:
            user = await uow.users.get(user_id)
            if user is None:
                raise UserNotFound()
            sessions = await uow.sessions.active_for_user(user_id)
        return user, len(sessions)

    async def set_admin_right(self, access_token: str, user_id: UUID, is_admin: bool) -> None:
        """Grant or revoke the admin right; a revocation ends the user's sessions (their
        access tokens say ``admin``) and is refused for the last admin."""
        claims = await self._admin(access_token)
        now = self._now()
        async with self._uow() as uow:
            # Locked first: of two admins revoking each other, the second sees the first's
            # revocation and is refused.
            admins = await uow.users.lock_admins() if not is_admin else []
            user = await uow.users.get(user_id)
            if user is None:
                raise UserNotFound()
            changed = user.is_admin != is_admin
            ended = 0
            if changed and not is_admin:
                if admins == [user_id]:
                    raise LastAdmin()
                ended = await self._end_sessions(uow, user_id, "admin_right_revoked", now)
            if changed:
                await uow.users.set_admin(user_id, is_admin)
            # Asked for and answered 200, so recorded even when it changed nothing.
            await uow.audit.add(AuditRecord.by_admin(
                claims.user_id, "grant_admin" if is_admin else "revoke_admin", user_id,
                {"is_admin": is_admin, "changed": changed, "sessions_ended": ended}, now))
            await uow.commit()

    async def revoke_sessions_of(self, access_token: str, user_id: UUID) -> int:
        """End every session of the user, as the CLI's ``admin revoke-sessions`` does."""
        claims = await self._admin(access_token)
        now = self._now()
        async with self._uow() as uow:
            if await uow.users.get(user_id) is None:
                raise UserNotFound()
            ended = await self._end_sessions(uow, user_id, "admin", now)
            await uow.audit.add(AuditRecord.by_admin(claims.user_id, "revoke_sessions", user_id,
                                                     {"sessions_ended": ended}, now))
            await uow.commit()
        return ended

    async def audit(self, access_token: str, query: AuditQuery, limit: int,
                    cursor: str | None) -> AuditPage:
        """A page of the audit log of admin actions, newest first."""
        await self._admin(access_token)
        parse_cursor(cursor)  # refused before any database work
        async with self._read_uow() as uow:
            return await read_page(uow.audit, query, limit, cursor)


def _unchanged(current: User | None, verified: User) -> TypeGuard[User]:
    """True if ``current``, the user's row read again under lock, is neither deleted nor given
    another password since ``verified`` was read and its password checked."""
    return current is not None and current.deleted_at is None \
        and current.password_hash == verified.password_hash


def _admin_created(user_id: UUID, outcome: AdminOutcome, password_reset: bool,
                   at: datetime) -> AuditRecord:
    """The audit record of ``authloyalty admin create``."""
    result = {"created": "created", "promoted": "promoted"}.get(outcome, "unchanged")
    return AuditRecord.by_cli("create_admin", user_id,
                              {"result": result, "password_reset": password_reset}, at)


@dataclass(frozen=True)
class UserPage:
    """A page of users, ordered by email, and the cursor of the next one."""

    users: list[User]
    next_cursor: str | None


def _user_query(query: str | None) -> UserQuery:
    if not query:
        return UserQuery()
    try:
        return UserQuery(user_id=UUID(query))
    except ValueError:
        return UserQuery(email_prefix=query)


def _user_cursor(cursor: str | None) -> UUID | None:
    if not cursor:
        return None
    try:
        return UUID(cursor)
    except ValueError:
        raise ValidationFailed("cursor: not a cursor returned by this API") from None
