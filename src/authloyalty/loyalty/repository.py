"""SQL implementations of loyalty's repositories; every query of loyalty lives here."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import bindparam, case, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from authloyalty.loyalty.domain import (
    Account,
    IdempotencyRecord,
    KeyTaken,
    Kind,
    LedgerEntry,
    StoredReply,
)
from authloyalty.loyalty.tables import (
    accounts,
    idempotency_keys,
    inbox,
    ledger_entries,
    revoked_sessions,
)
from authloyalty.platform.db import as_utc
from authloyalty.platform.sql import insert_ignore

# Hot statements are built once: constructing a statement and its cache key on every call was
# a visible share of a request's CPU.
_ACCOUNT = select(accounts.c.user_id, accounts.c.balance, accounts.c.created_at).where(
    accounts.c.user_id == bindparam("b_user_id"))
_CHANGE_BALANCE = (
    update(accounts)
    .where(accounts.c.user_id == bindparam("b_user_id"),
           accounts.c.balance + bindparam("b_delta") >= 0)
    .values(balance=accounts.c.balance + bindparam("b_delta"), updated_at=bindparam("b_now"))
    .returning(accounts.c.balance))
_APPEND = insert(ledger_entries).returning(ledger_entries.c.id)
_IDEMPOTENCY_KEY = select(idempotency_keys).where(
    idempotency_keys.c.caller_id == bindparam("b_caller"),
    idempotency_keys.c.key == bindparam("b_key"))


def _entry(row: Any) -> LedgerEntry:
    return LedgerEntry(id=int(row.id), account_id=row.account_id, kind=row.kind,
                       amount=int(row.amount), comment=row.comment,
                       balance_after=int(row.balance_after), created_at=as_utc(row.created_at))


class SqlAccounts:
    """Accounts in ``accounts``."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def get(self, user_id: UUID) -> Account | None:
        """The account of ``user_id``."""
        row = (await self._conn.execute(_ACCOUNT, {"b_user_id": user_id})).first()
        if row is None:
            return None
        return Account(user_id=row.user_id, balance=int(row.balance),
                       created_at=as_utc(row.created_at))

    async def open(self, user_id: UUID, balance: int, now: datetime) -> bool:
        """Create the account unless it exists."""
        return await insert_ignore(self._conn, accounts, user_id=user_id, balance=balance,
                                   created_at=now, updated_at=now)

    async def change_balance(self, user_id: UUID, delta: int, now: datetime) -> int | None:
        """One conditional UPDATE: the row lock (PostgreSQL) or the write lock (SQLite)
        serialises concurrent changes, and the WHERE clause keeps the balance non-negative."""
        result = await self._conn.execute(
            _CHANGE_BALANCE, {"b_user_id": user_id, "b_delta": delta, "b_now": now})
        row = result.first()
        return int(row[0]) if row is not None else None


class SqlLedger:
    """Movements in ``ledger_entries``."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def append(self, account_id: UUID, kind: Kind, amount: int, comment: str,
                     balance_after: int, now: datetime) -> LedgerEntry:
        """Append one movement and return it with its id."""
        result = await self._conn.execute(_APPEND, {
            "account_id": account_id, "kind": kind, "amount": amount, "comment": comment,
            "balance_after": balance_after, "created_at": now})
        return LedgerEntry(id=int(result.scalar_one()), account_id=account_id, kind=kind,
                           amount=amount, comment=comment, balance_after=balance_after,
                           created_at=now)

    async def page(self, account_id: UUID, limit: int, before_id: int | None
                   ) -> list[LedgerEntry]:
        """Newest first, strictly older than ``before_id``."""
        query = select(ledger_entries).where(ledger_entries.c.account_id == account_id)
        if before_id is not None:
            query = query.where(ledger_entries.c.id < before_id)
        query = query.order_by(ledger_entries.c.id.desc()).limit(limit)
        return [_entry(r) for r in (await self._conn.execute(query)).all()]

    async def total(self, account_id: UUID) -> int:
        """Deposits minus withdrawals."""
        signed = case((ledger_entries.c.kind == "deposit", ledger_entries.c.amount),
                      else_=-ledger_entries.c.amount)
        query = select(func.coalesce(func.sum(signed), 0)).where(
            ledger_entries.c.account_id == account_id)
        return int((await self._conn.execute(query)).scalar_one())


class SqlIdempotencyKeys:
    """Stored answers in ``idempotency_keys``."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def get(self, caller_id: UUID, key: str) -> IdempotencyRecord | None:
        """The record of ``caller_id``'s ``key``."""
        row = (await self._conn.execute(_IDEMPOTENCY_KEY,
                                        {"b_caller": caller_id, "b_key": key})).first()
        if row is None:
            return None
        return IdempotencyRecord(
            caller_id=row.caller_id, key=row.key, fingerprint=row.fingerprint,
            reply=StoredReply(status=row.status_code, body=bytes(row.response_body)),
            created_at=as_utc(row.created_at))

    async def add(self, record: IdempotencyRecord) -> None:
        """Store the record; a concurrent twin raises :class:`KeyTaken`."""
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(insert(idempotency_keys).values(
                    caller_id=record.caller_id, key=record.key,
                    fingerprint=record.fingerprint, status_code=record.reply.status,
                    response_body=record.reply.body, created_at=record.created_at))
        except IntegrityError as exc:
            raise KeyTaken from exc

    async def purge(self, before: datetime) -> int:
        """Forget keys created before ``before``."""
        result = await self._conn.execute(
            delete(idempotency_keys).where(idempotency_keys.c.created_at < before))
        return int(result.rowcount)


class SqlInbox:
    """Processed event ids in ``inbox``."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, event_id: UUID, event_type: str, now: datetime) -> bool:
        """Record the event; False on a redelivery."""
        return await insert_ignore(self._conn, inbox, event_id=event_id,
                                   event_type=event_type, processed_at=now)


class SqlRevocations:
    """Revoked sessions in ``revoked_sessions``."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, session_id: UUID, until: datetime) -> None:
        """Remember the revocation (idempotent)."""
        await insert_ignore(self._conn, revoked_sessions, session_id=session_id,
                            revoked_until=until)

    async def active(self, now: datetime) -> list[tuple[UUID, datetime]]:
        """Revocations that still matter at ``now``."""
        query = select(revoked_sessions).where(revoked_sessions.c.revoked_until > now)
        rows = (await self._conn.execute(query)).all()
        return [(r.session_id, as_utc(r.revoked_until)) for r in rows]

    async def purge(self, before: datetime) -> int:
        """Drop revocations whose tokens have all expired."""
        result = await self._conn.execute(
            delete(revoked_sessions).where(revoked_sessions.c.revoked_until < before))
        return int(result.rowcount)
