"""SQL implementations of sso's repositories; every query of sso lives here."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import String, bindparam, cast, delete, func, insert, literal_column, select, update

from authloyalty.platform.clock import as_utc
from authloyalty.platform.database import Connection, IntegrityViolation
from authloyalty.sso.domain import Session, User, UserExists, UserQuery, normalise_email
from authloyalty.sso.tables import login_failures, sessions, users

# Hot statements are built once (construction and cache keys cost CPU on every call).
_USER = select(users).where(users.c.id == bindparam("b_id"))
_USER_BY_EMAIL = select(users).where(users.c.email_normalized == bindparam("b_email"))
_SESSION = select(sessions).where(sessions.c.id == bindparam("b_id"))
_ROTATE = (
    update(sessions)
    .where(sessions.c.id == bindparam("b_id"),
           sessions.c.refresh_token_id == bindparam("b_presented"),
           sessions.c.revoked_at.is_(None))
    .values(refresh_token_id=bindparam("b_successor"),
            previous_refresh_token_id=bindparam("b_presented"), rotated_at=bindparam("b_now"),
            last_used_at=bindparam("b_now")))
# A refresh's usual case in one statement: the session's, its token's and its user's checks
# and the rotation together. (The user's columns come from subqueries: SQLite's RETURNING may
# not name the tables of an UPDATE … FROM.)
_ROTATE_FOR_USER = (
    update(sessions)
    .where(sessions.c.id == bindparam("b_id"),
           sessions.c.user_id == bindparam("b_user"),
           sessions.c.refresh_token_id == bindparam("b_presented"),
           sessions.c.revoked_at.is_(None),
           select(users.c.id).where(users.c.id == sessions.c.user_id,
                                    users.c.deleted_at.is_(None)).exists())
    .values(refresh_token_id=bindparam("b_successor"),
            previous_refresh_token_id=bindparam("b_presented"), rotated_at=bindparam("b_now"),
            last_used_at=bindparam("b_now"))
    .returning(select(users.c.is_admin).where(users.c.id == bindparam("b_user"))
               .scalar_subquery().label("is_admin")))
_ADD_SESSION = insert(sessions)
_ADD_USER = insert(users)
_SET_ADMIN = update(users).where(users.c.id == bindparam("b_id")).values(
    is_admin=bindparam("b_admin"))
# A deleted user's password stays as it was (and their sessions stay ended).
_SET_HASH = update(users).where(
    users.c.id == bindparam("b_id"), users.c.deleted_at.is_(None)).values(
    password_hash=bindparam("b_hash"))
# Shared (FOR SHARE on PostgreSQL; SQLite's write transactions are serial): a deletion, a
# password change or a change of the admin right waits until the transaction ends.
_LOCK_USER = _USER.with_for_update(read=True)
_LOCK_USER_EXCLUSIVE = _USER.with_for_update()
# Each increments the lifecycle version in the same conditional UPDATE (the row lock orders
# concurrent ones) and returns it: the version the event of the change carries.
_NEXT_VERSION = users.c.lifecycle_version + 1
_MARK_DELETED = update(users).where(
    users.c.id == bindparam("b_id"), users.c.deleted_at.is_(None)).values(
    deleted_at=bindparam("b_now"), lifecycle_version=_NEXT_VERSION).returning(
    users.c.lifecycle_version)
_RESTORE = update(users).where(
    users.c.id == bindparam("b_id"), users.c.deleted_at.is_not(None),
    users.c.purged_at.is_(None)).values(
    deleted_at=None, lifecycle_version=_NEXT_VERSION).returning(users.c.lifecycle_version)
# A purged user's email and normalised email: unique (made from the id) and never an address
# (no "@": registration refuses it), so that the real address is free again.
_PURGED_EMAIL = literal_column("'purged:'", String) + cast(users.c.id, String)
# Not an Argon2 hash: verification fails for every password.
_PURGED_PASSWORD_HASH = "!purged"
# Oldest deletions first; rows another transaction is purging are skipped (PostgreSQL), and the
# conditions are checked again on the row itself, so a user is purged by one transaction only.
# Materialised: a plain subquery may be run again for each row, each run skipping the rows
# already updated and locking the next ones, past the limit.
_DUE_FOR_PURGE = (
    select(users.c.id)
    .where(users.c.deleted_at < bindparam("b_before"), users.c.purged_at.is_(None))
    .order_by(users.c.deleted_at).limit(bindparam("b_limit"))
    .with_for_update(skip_locked=True)
    .cte("due_for_purge").prefix_with("MATERIALIZED", dialect="postgresql"))
_PURGE = (
    update(users)
    .where(users.c.id.in_(select(_DUE_FOR_PURGE.c.id)),
           users.c.deleted_at < bindparam("b_before"), users.c.purged_at.is_(None))
    .values(email=_PURGED_EMAIL, email_normalized=_PURGED_EMAIL,
            password_hash=bindparam("b_hash"), name=None, birthday=None,
            purged_at=bindparam("b_now"))
    .returning(users.c.id))
_DELETE_SESSIONS_OF = delete(sessions).where(sessions.c.user_id == bindparam("b_user"))
_REVOKE = (
    update(sessions)
    .where(sessions.c.id == bindparam("b_id"), sessions.c.revoked_at.is_(None))
    .values(revoked_at=bindparam("b_now"), revoke_reason=bindparam("b_reason")))
_ACTIVE_FOR_USER = select(sessions).where(
    sessions.c.user_id == bindparam("b_user"), sessions.c.revoked_at.is_(None)).order_by(
    sessions.c.created_at.desc(), sessions.c.id.desc())
_ADD_FAILURE = insert(login_failures)
_FAILURES = select(func.count().label("n"), func.min(login_failures.c.created_at).label("oldest"))
_FAILURES_FOR_EMAIL = _FAILURES.where(
    login_failures.c.email_normalized == bindparam("b_email"),
    login_failures.c.created_at > bindparam("b_since"))
_FAILURES_FOR_CLIENT = _FAILURES.where(
    login_failures.c.client == bindparam("b_client"),
    login_failures.c.created_at > bindparam("b_since"))
_CLEAR_EMAIL = delete(login_failures).where(
    login_failures.c.email_normalized == bindparam("b_email"))
_PURGE_FAILURES = delete(login_failures).where(
    login_failures.c.created_at < bindparam("b_before"))




def _user(row: Mapping[str, Any]) -> User:
    email = "" if row["purged_at"] else row["email"]  # the placeholder never leaves
    return User(id=row["id"], email=email, password_hash=row["password_hash"],
                created_at=as_utc(row["created_at"]), name=row["name"],
                birthday=row["birthday"], is_admin=bool(row["is_admin"]),
                deleted_at=as_utc(row["deleted_at"]) if row["deleted_at"] else None,
                purged_at=as_utc(row["purged_at"]) if row["purged_at"] else None)


def _session(row: Mapping[str, Any]) -> Session:
    return Session(
        id=row["id"], user_id=row["user_id"], created_at=as_utc(row["created_at"]),
        refresh_token_id=row["refresh_token_id"],
        previous_refresh_token_id=row["previous_refresh_token_id"],
        rotated_at=as_utc(row["rotated_at"]) if row["rotated_at"] else None,
        revoked_at=as_utc(row["revoked_at"]) if row["revoked_at"] else None,
        revoke_reason=row["revoke_reason"],
        user_agent=row["user_agent"], ip=row["ip"],
        last_used_at=as_utc(row["last_used_at"]) if row["last_used_at"] else None,
    )


# Not a backslash: how one is written in an ESCAPE clause differs between the databases.
_LIKE_ESCAPE = "!"


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching strings that start with ``prefix`` literally."""
    e = _LIKE_ESCAPE
    return prefix.replace(e, e + e).replace("%", e + "%").replace("_", e + "_") + "%"


# Locked in id order, so that concurrent revocations wait for each other and cannot deadlock.
# A deleted admin has no rights: not one of them.
_LOCK_ADMINS = select(users.c.id).where(
    users.c.is_admin, users.c.deleted_at.is_(None)).order_by(users.c.id).with_for_update()


class SqlUsers:
    """Users in the ``users`` table."""

    def __init__(self, db: Connection) -> None:
        self._db = db

    async def page(self, query: UserQuery, limit: int, after: UUID | None) -> list[User]:
        """Users matching ``query`` ordered by normalised email (unique: a keyset), strictly
        after the user ``after``; an unknown ``after`` yields nothing."""
        statement = select(users).order_by(users.c.email_normalized).limit(limit)
        if query.user_id is not None:
            statement = statement.where(users.c.id == query.user_id)
        if query.email_prefix is not None:
            statement = statement.where(users.c.email_normalized.like(
                _like_prefix(normalise_email(query.email_prefix)), escape=_LIKE_ESCAPE),
                users.c.purged_at.is_(None))  # a purged user has no email to match
        if after is not None:
            statement = statement.where(users.c.email_normalized > select(
                users.c.email_normalized).where(users.c.id == after).scalar_subquery())
        return [_user(row) for row in await self._db.all(statement, {})]

    async def lock_admins(self) -> list[UUID]:
        """The ids of the admins not deleted, their rows locked until the transaction ends
        (SQLite's write transactions are serial already)."""
        return [row["id"] for row in await self._db.all(_LOCK_ADMINS, {})]

    async def add(self, user: User) -> None:
        """Insert; a taken email (case-insensitively) raises :class:`UserExists`."""
        try:
            # A savepoint keeps the surrounding transaction usable after the conflict.
            async with self._db.savepoint():
                await self._db.execute(_ADD_USER, {
                    "id": user.id, "email": user.email,
                    "email_normalized": user.email_normalized,
                    "password_hash": user.password_hash, "name": user.name,
                    "birthday": user.birthday, "is_admin": user.is_admin,
                    "created_at": user.created_at})
        except IntegrityViolation as exc:
            raise UserExists() from exc

    async def get(self, user_id: UUID) -> User | None:
        """The user with ``user_id``."""
        row = await self._db.first(_USER, {"b_id": user_id})
        return _user(row) if row else None

    async def lock(self, user_id: UUID, *, exclusive: bool = False) -> User | None:
        """The user as committed now, its row locked until the transaction ends: shared, or
        ``exclusive`` when the transaction is to update it (two shared locks upgraded at once
        would deadlock)."""
        statement = _LOCK_USER_EXCLUSIVE if exclusive else _LOCK_USER
        row = await self._db.first(statement, {"b_id": user_id})
        return _user(row) if row else None

    async def by_email(self, email: str) -> User | None:
        """The user whose email matches case-insensitively."""
        row = await self._db.first(_USER_BY_EMAIL, {"b_email": normalise_email(email)})
        return _user(row) if row else None

    async def set_admin(self, user_id: UUID, is_admin: bool) -> None:
        """Grant or withdraw the admin flag."""
        await self._db.execute(_SET_ADMIN, {"b_id": user_id, "b_admin": is_admin})

    async def set_password_hash(self, user_id: UUID, password_hash: str) -> bool:
        """Store a new hash; False if the user is deleted (or unknown)."""
        return await self._db.execute(_SET_HASH, {"b_id": user_id, "b_hash": password_hash}) == 1

    async def mark_deleted(self, user_id: UUID, now: datetime) -> int | None:
        """Soft-delete the user; the new lifecycle version, None if already deleted (or
        unknown)."""
        version = await self._db.scalar(_MARK_DELETED, {"b_id": user_id, "b_now": now})
        return None if version is None else int(version)

    async def restore(self, user_id: UUID) -> int | None:
        """Undo a soft deletion; the new lifecycle version, None unless deleted and not yet
        purged."""
        version = await self._db.scalar(_RESTORE, {"b_id": user_id})
        return None if version is None else int(version)

    async def purge_deleted(self, deleted_before: datetime, now: datetime,
                            limit: int) -> list[UUID]:
        """Erase the personal data of up to ``limit`` users deleted before ``deleted_before``
        (one conditional UPDATE: each user is purged once); the ids purged."""
        rows = await self._db.all(_PURGE, {"b_before": deleted_before, "b_limit": limit,
                                           "b_hash": _PURGED_PASSWORD_HASH, "b_now": now})
        return [row["id"] for row in rows]


class SqlSessions:
    """Sessions in the ``sessions`` table."""

    def __init__(self, db: Connection) -> None:
        self._db = db

    async def add(self, session: Session) -> None:
        """Insert a new session."""
        await self._db.execute(_ADD_SESSION, {
            "id": session.id, "user_id": session.user_id, "created_at": session.created_at,
            "refresh_token_id": session.refresh_token_id, "user_agent": session.user_agent,
            "ip": session.ip, "last_used_at": session.last_used_at})

    async def get(self, session_id: UUID) -> Session | None:
        """The session with ``session_id``."""
        row = await self._db.first(_SESSION, {"b_id": session_id})
        return _session(row) if row else None

    async def rotate(
        self, session_id: UUID, presented: UUID, successor: UUID, now: datetime
    ) -> bool:
        """Compare-and-set of the current refresh token id: one concurrent caller wins."""
        return await self._db.execute(_ROTATE, {
            "b_id": session_id, "b_presented": presented, "b_successor": successor,
            "b_now": now}) == 1

    async def rotate_for_user(
        self, session_id: UUID, user_id: UUID, presented: UUID, successor: UUID,
        now: datetime,
    ) -> bool | None:
        """Rotate, if the session is ``user_id``'s (not deleted): their admin flag, or None."""
        row = await self._db.first(_ROTATE_FOR_USER, {
            "b_id": session_id, "b_user": user_id, "b_presented": presented,
            "b_successor": successor, "b_now": now})
        return None if row is None else bool(row["is_admin"])

    async def revoke(self, session_id: UUID, reason: str, now: datetime) -> bool:
        """End the session if it is active."""
        return await self._db.execute(_REVOKE, {
            "b_id": session_id, "b_now": now, "b_reason": reason}) == 1

    async def active_for_user(self, user_id: UUID) -> list[Session]:
        """The user's sessions that have not ended, newest first."""
        return [_session(r) for r in await self._db.all(_ACTIVE_FOR_USER, {"b_user": user_id})]

    async def delete_for_users(self, user_ids: list[UUID]) -> int:
        """Forget every session of these users."""
        deleted = 0
        for user_id in user_ids:
            deleted += await self._db.execute(_DELETE_SESSIONS_OF, {"b_user": user_id})
        return deleted


class SqlLoginFailures:
    """Failed logins in ``login_failures``."""

    def __init__(self, db: Connection) -> None:
        self._db = db

    async def record(self, email: str, client: str, at: datetime) -> None:
        """Remember one failed attempt."""
        await self._db.execute(_ADD_FAILURE, {
            "email_normalized": normalise_email(email), "client": client[:64],
            "created_at": at})

    async def _window(self, query: Any, params: dict[str, Any]) -> tuple[int, datetime | None]:
        row = await self._db.first(query, params)
        assert row is not None  # an aggregate always has a row
        oldest = row["oldest"]
        return int(row["n"]), as_utc(oldest) if oldest is not None else None

    async def for_email(self, email: str, since: datetime) -> tuple[int, datetime | None]:
        """Failures for ``email`` after ``since``."""
        return await self._window(_FAILURES_FOR_EMAIL,
                                  {"b_email": normalise_email(email), "b_since": since})

    async def for_client(self, client: str, since: datetime) -> tuple[int, datetime | None]:
        """Failures from ``client`` after ``since``."""
        return await self._window(_FAILURES_FOR_CLIENT,
                                  {"b_client": client[:64], "b_since": since})

    async def clear_email(self, email: str) -> None:
        """Forget the failures of ``email`` (after a successful login)."""
        await self._db.execute(_CLEAR_EMAIL, {"b_email": normalise_email(email)})

    async def purge(self, before: datetime) -> int:
        """Drop failures older than ``before``."""
        return await self._db.execute(_PURGE_FAILURES, {"b_before": before})
