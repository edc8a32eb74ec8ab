"""SQL implementations of loyalty's repositories; every query of loyalty lives here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import (
    Boolean,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)

from authloyalty.loyalty.domain import (
    Account,
    AccountFrozen,
    AccountNotFound,
    HeldPointsInTheWay,
    HoldOutcome,
    IdempotencyRecord,
    InsufficientPoints,
    KeyTaken,
    LedgerEntry,
    LegacyReply,
    LotsInvolved,
    Movement,
    StoredResult,
)
from authloyalty.loyalty.hold_repository import (
    dump_hold_outcome,
    expire_holds,
    load_hold_outcome,
)
from authloyalty.loyalty.tables import (
    accounts,
    idempotency_keys,
    inbox,
    ledger_entries,
    revoked_sessions,
)
from authloyalty.platform.clock import as_utc
from authloyalty.platform.database import Connection, IntegrityViolation
from authloyalty.platform.sql import insert_ignore

# Hot statements are built once: constructing a statement and its cache key on every call was
# a visible share of a request's CPU.
_ACCOUNT = select(accounts.c.user_id, accounts.c.balance, accounts.c.created_at,
                  accounts.c.frozen_at, accounts.c.held, accounts.c.next_expiry).where(
                      accounts.c.user_id == bindparam("b_user_id"))
_CHANGE_BALANCE = (
    update(accounts)
    .where(accounts.c.user_id == bindparam("b_user_id"),
           accounts.c.balance + bindparam("b_delta") >= 0, accounts.c.frozen_at.is_(None),
           # a debit may not take held points
           or_(bindparam("b_delta") >= 0,
               accounts.c.balance - accounts.c.held + bindparam("b_delta") >= 0),
           # an account with lots takes the path that handles them (loyalty.lots)
           or_(accounts.c.next_expiry.is_(None), bindparam("b_lots_ok", type_=Boolean)))
    .values(balance=accounts.c.balance + bindparam("b_delta"), updated_at=bindparam("b_now"))
    .returning(accounts.c.balance))
_APPEND = insert(ledger_entries).returning(ledger_entries.c.id)
# One conditional UPDATE, so concurrent changes of one account cannot both apply out of order:
# the stored version must be below ``b_bound`` (the change's version, or 1 for an unversioned
# change: it applies only while the account has seen no versioned one, and leaves it at 0).
_SET_FROZEN = update(accounts).where(
    accounts.c.user_id == bindparam("b_user_id"),
    accounts.c.lifecycle_version < bindparam("b_bound")).values(
    frozen_at=bindparam("b_frozen"), lifecycle_version=bindparam("b_version"))
_EXISTS = select(accounts.c.user_id, accounts.c.frozen_at, accounts.c.held,
                 accounts.c.next_expiry).where(
    accounts.c.user_id == bindparam("b_user_id"))
_IDEMPOTENCY_KEY = select(idempotency_keys).where(
    idempotency_keys.c.caller_id == bindparam("b_caller"),
    idempotency_keys.c.key == bindparam("b_key"))
_ADD_IDEMPOTENCY_KEY = insert(idempotency_keys)
_PAGE = (select(ledger_entries)
         .where(ledger_entries.c.account_id == bindparam("b_account"),
                ledger_entries.c.id < bindparam("b_before"))
         .order_by(ledger_entries.c.id.desc()).limit(bindparam("b_limit")))
_REVERSED = ledger_entries.alias("reversed")
# A reversal moves points the other way from the entry it reverses.
_SIGNED = case((ledger_entries.c.kind == "deposit", ledger_entries.c.amount),
               (and_(ledger_entries.c.kind == "reversal",
                     select(_REVERSED.c.kind).where(_REVERSED.c.id == ledger_entries.c.reverses)
                     .scalar_subquery() != "deposit"), ledger_entries.c.amount),
               else_=-ledger_entries.c.amount)
_TOTAL = select(func.coalesce(func.sum(_SIGNED), 0)).where(
    ledger_entries.c.account_id == bindparam("b_account"))
_ACTIVE_REVOCATIONS = select(revoked_sessions).where(
    revoked_sessions.c.revoked_until > bindparam("b_now"))
_PURGE_KEYS = delete(idempotency_keys).where(idempotency_keys.c.created_at < bindparam("b_before"))
_PURGE_REVOCATIONS = delete(revoked_sessions).where(
    revoked_sessions.c.revoked_until < bindparam("b_before"))
# PostgreSQL only (see loyalty.movements.CoalescedAccountReads).
ACCOUNTS_BY_IDS = text(
    "SELECT user_id, balance, created_at, frozen_at, held, next_expiry FROM accounts"
    " WHERE user_id = ANY(CAST(:b_ids AS uuid[]))")
# The ledger rule (domain.Movement) as PostgreSQL enforces it, for one movement (in a unit of
# work) or many of distinct accounts (coalesced, one transaction in autocommit): lock the
# accounts in id order (two concurrent batches never wait on each other in a cycle), apply
# each conditional update, append an entry for every update that happened, and answer per
# movement: the entry, or whether the account exists (no entry: not found, or the balance
# would have gone negative, or a debit would have taken held points: ``holding`` says the
# account holds some). An account appears at most once per statement.
_APPLY_MOVEMENTS = text("""\
WITH req AS (
    SELECT * FROM unnest(CAST(:b_ord AS integer[]), CAST(:b_ids AS uuid[]),
                         CAST(:b_kinds AS text[]), CAST(:b_amounts AS bigint[]),
                         CAST(:b_comments AS text[]), CAST(:b_ats AS timestamptz[]),
                         CAST(:b_hold_ids AS bigint[]))
        AS r(ord, account_id, kind, amount, comment, at, hold_id)
), locked AS (
    SELECT user_id, frozen_at, held, next_expiry FROM accounts
    WHERE user_id IN (SELECT account_id FROM req)
    ORDER BY user_id FOR UPDATE
), changed AS (
    UPDATE accounts
    SET balance = accounts.balance
            + CASE WHEN req.kind = 'deposit' THEN req.amount ELSE -req.amount END,
        updated_at = req.at
    FROM req JOIN locked ON locked.user_id = req.account_id
    WHERE accounts.user_id = req.account_id AND locked.frozen_at IS NULL
      AND accounts.balance
            + CASE WHEN req.kind = 'deposit' THEN req.amount ELSE -req.amount END >= 0
      AND (req.kind = 'deposit' OR accounts.balance - accounts.held - req.amount >= 0)
      -- an account with lots takes the path that handles them (loyalty.lots)
      AND (locked.next_expiry IS NULL OR CAST(:b_lots_ok AS boolean))
    RETURNING accounts.user_id, accounts.balance
), entries AS (
    INSERT INTO ledger_entries (account_id, kind, amount, comment, balance_after, created_at,
                                hold_id)
    SELECT req.account_id, req.kind, req.amount, req.comment, changed.balance, req.at,
           req.hold_id
    FROM req JOIN changed ON changed.user_id = req.account_id
    ORDER BY req.ord
    RETURNING id, account_id
)
SELECT req.ord, entries.id, changed.balance,
       EXISTS (SELECT 1 FROM locked WHERE locked.user_id = req.account_id) AS found,
       EXISTS (SELECT 1 FROM locked WHERE locked.user_id = req.account_id
               AND locked.frozen_at IS NOT NULL) AS frozen,
       EXISTS (SELECT 1 FROM locked WHERE locked.user_id = req.account_id
               AND locked.held > 0) AS holding,
       EXISTS (SELECT 1 FROM locked WHERE locked.user_id = req.account_id
               AND locked.next_expiry IS NOT NULL AND NOT CAST(:b_lots_ok AS boolean)) AS lots
FROM req
LEFT JOIN changed ON changed.user_id = req.account_id
LEFT JOIN entries ON entries.account_id = req.account_id
ORDER BY req.ord""")
# Ledger ids are positive; "before the largest bigint" is the first page.
_NO_CURSOR = 2**63 - 1


def apply_movements(movements: Sequence[Movement], with_lots: bool = False
                    ) -> tuple[Any, dict[str, Any]]:
    """The PostgreSQL statement applying ``movements`` (distinct accounts) and its values;
    movements on accounts with lots apply only ``with_lots`` (see loyalty.lots)."""
    return _APPLY_MOVEMENTS, {
        "b_lots_ok": with_lots,
        "b_ord": list(range(len(movements))),
        "b_ids": [m.account_id for m in movements],
        "b_kinds": [m.kind for m in movements],
        "b_amounts": [m.amount for m in movements],
        "b_comments": [m.comment for m in movements],
        "b_ats": [m.at for m in movements],
        "b_hold_ids": [m.hold_id for m in movements]}


def movement_answers(movements: Sequence[Movement], rows: Sequence[Mapping[str, Any]]
                     ) -> list[LedgerEntry | Exception]:
    """Per movement, in order: its entry, or why nothing changed."""
    answers: list[LedgerEntry | Exception] = []
    for movement, row in zip(movements, rows, strict=True):
        if row["id"] is not None:
            answers.append(LedgerEntry(
                id=int(row["id"]), account_id=movement.account_id, kind=movement.kind,
                amount=movement.amount, comment=movement.comment,
                balance_after=int(row["balance"]), created_at=movement.at,
                hold_id=movement.hold_id))
        elif row["frozen"]:
            answers.append(AccountFrozen())
        elif row["lots"]:
            answers.append(LotsInvolved())
        elif row["found"]:
            answers.append(HeldPointsInTheWay() if row["holding"] else InsufficientPoints())
        else:
            answers.append(AccountNotFound())
    return answers


def account_from(row: Mapping[str, Any]) -> Account:
    """An account from its row."""
    frozen_at = row["frozen_at"]
    return Account(user_id=row["user_id"], balance=int(row["balance"]),
                   created_at=as_utc(row["created_at"]),
                   frozen_at=as_utc(frozen_at) if frozen_at else None, held=int(row["held"]),
                   next_expiry=as_utc(row["next_expiry"]) if row["next_expiry"] else None)


def _entry(row: Mapping[str, Any]) -> LedgerEntry:
    return LedgerEntry(id=int(row["id"]), account_id=row["account_id"], kind=row["kind"],
                       amount=int(row["amount"]), comment=row["comment"],
                       balance_after=int(row["balance_after"]),
                       created_at=as_utc(row["created_at"]), hold_id=row["hold_id"],
                       reverses=row["reverses"])


entry_from = _entry  # shared with the lots' repository


class SqlAccounts:
    """Accounts in ``accounts``."""

    def __init__(self, db: Connection) -> None:
        self._db = db

    async def get(self, user_id: UUID) -> Account | None:
        """The account of ``user_id``."""
        row = await self._db.first(_ACCOUNT, {"b_user_id": user_id})
        return None if row is None else account_from(row)

    async def open(self, user_id: UUID, now: datetime) -> bool:
        """Create the account, balance zero, unless it exists."""
        return await insert_ignore(self._db, accounts, user_id=user_id, balance=0,
                                   created_at=now, updated_at=now)

    async def set_frozen(self, user_id: UUID, frozen_at: datetime | None, version: int) -> bool:
        """Freeze (a time) or unfreeze (None) the account as of lifecycle ``version`` unless
        it is at that version or a newer one; False if nothing changed."""
        return await self._db.execute(_SET_FROZEN, {
            "b_user_id": user_id, "b_frozen": frozen_at, "b_version": version,
            "b_bound": max(version, 1)}) == 1


class SqlLedger:
    """Movements in ``ledger_entries``."""

    def __init__(self, db: Connection) -> None:
        self._db = db

    async def apply(self, movement: Movement, *, with_lots: bool = False) -> LedgerEntry:
        """The ledger rule, enforced by the database: on PostgreSQL the very statement that
        coalesced movements share; on SQLite (no data-modifying CTEs, one writer at a time
        under its write lock) the same conditional update and insert, as two statements.
        A debit refused while the account holds points releases the account's expired holds
        and tries once more: only that refusal pays for it. Lots: see :meth:`Ledger.apply`."""
        if movement.expires_at is not None and not with_lots:
            raise LotsInvolved()
        try:
            return await self._apply(movement, with_lots)
        except HeldPointsInTheWay:
            if not await expire_holds(self._db, movement.account_id, movement.at):
                raise
            return await self._apply(movement, with_lots)

    async def _apply(self, movement: Movement, with_lots: bool) -> LedgerEntry:
        if self._db.dialect == "postgresql":
            rows = await self._db.all(*apply_movements([movement], with_lots))
            (answer,) = movement_answers([movement], rows)
            if isinstance(answer, Exception):
                raise answer
            return answer
        balance = await self._db.scalar(_CHANGE_BALANCE, {
            "b_user_id": movement.account_id, "b_delta": movement.delta, "b_now": movement.at,
            "b_lots_ok": with_lots})
        if balance is None:
            found = await self._db.first(_EXISTS, {"b_user_id": movement.account_id})
            if found is None:
                raise AccountNotFound()
            if found["frozen_at"] is not None:
                raise AccountFrozen()
            if found["next_expiry"] is not None and not with_lots:
                raise LotsInvolved()
            raise HeldPointsInTheWay() if found["held"] > 0 else InsufficientPoints()
        entry_id = await self._db.scalar(_APPEND, {
            "account_id": movement.account_id, "kind": movement.kind,
            "amount": movement.amount, "comment": movement.comment,
            "balance_after": int(balance), "created_at": movement.at,
            "hold_id": movement.hold_id})
        return LedgerEntry(id=int(entry_id), account_id=movement.account_id,
                           kind=movement.kind, amount=movement.amount,
                           comment=movement.comment, balance_after=int(balance),
                           created_at=movement.at, hold_id=movement.hold_id)

    async def page(self, account_id: UUID, limit: int, before_id: int | None
                   ) -> list[LedgerEntry]:
        """Newest first, strictly older than ``before_id``."""
        rows = await self._db.all(_PAGE, {
            "b_account": account_id, "b_limit": limit,
            "b_before": _NO_CURSOR if before_id is None else before_id})
        return [_entry(r) for r in rows]

    async def total(self, account_id: UUID) -> int:
        """Deposits minus withdrawals."""
        return int(await self._db.scalar(_TOTAL, {"b_account": account_id}))


def _entry_data(entry: LedgerEntry) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": entry.id, "account_id": str(entry.account_id), "kind": entry.kind,
        "amount": entry.amount, "comment": entry.comment,
        "balance_after": entry.balance_after,
        "created_at": entry.created_at.isoformat()}
    if entry.hold_id is not None:
        data["hold_id"] = entry.hold_id
    if entry.reverses is not None:
        data["reverses"] = entry.reverses
    return data


def _entry_of(data: dict[str, Any]) -> LedgerEntry:
    return LedgerEntry(id=int(data["id"]), account_id=UUID(data["account_id"]),
                       kind=data["kind"], amount=int(data["amount"]), comment=data["comment"],
                       balance_after=int(data["balance_after"]),
                       created_at=as_utc(datetime.fromisoformat(data["created_at"])),
                       hold_id=data.get("hold_id"), reverses=data.get("reverses"))


def _dump_result(result: LedgerEntry | HoldOutcome) -> str:
    if isinstance(result, HoldOutcome):  # told apart by its "hold" member
        return orjson.dumps(dump_hold_outcome(result, _entry_data)).decode()
    return orjson.dumps(_entry_data(result)).decode()


def _load_result(row: Mapping[str, Any]) -> StoredResult:
    if row["result"] is None:  # stored before results were (see LegacyReply)
        return LegacyReply(status=int(row["status_code"]), body=bytes(row["response_body"]))
    data = orjson.loads(row["result"])
    if "hold" in data:
        return load_hold_outcome(data, _entry_of)
    return _entry_of(data)


class SqlIdempotencyKeys:
    """Stored results in ``idempotency_keys`` (the entry a keyed movement wrote, as JSON in
    ``result``; rows from before hold the rendered answer in ``status_code`` and
    ``response_body`` instead)."""

    def __init__(self, db: Connection) -> None:
        self._db = db

    async def get(self, caller_id: UUID, key: str) -> IdempotencyRecord | None:
        """The record of ``caller_id``'s ``key``."""
        row = await self._db.first(_IDEMPOTENCY_KEY, {"b_caller": caller_id, "b_key": key})
        if row is None:
            return None
        return IdempotencyRecord(
            caller_id=row["caller_id"], key=row["key"], fingerprint=row["fingerprint"],
            result=_load_result(row), created_at=as_utc(row["created_at"]))

    async def add(self, record: IdempotencyRecord) -> None:
        """Store the record; a concurrent twin raises :class:`KeyTaken`."""
        if isinstance(record.result, LegacyReply):
            raise TypeError("only results are stored; legacy replies are only ever read")
        try:
            async with self._db.savepoint():
                await self._db.execute(_ADD_IDEMPOTENCY_KEY, {
                    "caller_id": record.caller_id, "key": record.key,
                    "fingerprint": record.fingerprint, "result": _dump_result(record.result),
                    "created_at": record.created_at})
        except IntegrityViolation as exc:
            raise KeyTaken from exc

    async def purge(self, before: datetime) -> int:
        """Forget keys created before ``before``."""
        return await self._db.execute(_PURGE_KEYS, {"b_before": before})


class SqlInbox:
    """Processed event ids in ``inbox``."""

    def __init__(self, db: Connection) -> None:
        self._db = db

    async def add(self, event_id: UUID, event_type: str, now: datetime) -> bool:
        """Record the event; False on a redelivery."""
        return await insert_ignore(self._db, inbox, event_id=event_id,
                                   event_type=event_type, processed_at=now)


class SqlRevocations:
    """Revoked sessions in ``revoked_sessions``."""

    def __init__(self, db: Connection) -> None:
        self._db = db

    async def add(self, session_id: UUID, until: datetime) -> None:
        """Remember the revocation (idempotent)."""
        await insert_ignore(self._db, revoked_sessions, session_id=session_id,
                            revoked_until=until)

    async def active(self, now: datetime) -> list[tuple[UUID, datetime]]:
        """Revocations that still matter at ``now``."""
        rows = await self._db.all(_ACTIVE_REVOCATIONS, {"b_now": now})
        return [(r["session_id"], as_utc(r["revoked_until"])) for r in rows]

    async def purge(self, before: datetime) -> int:
        """Drop revocations whose tokens have all expired."""
        return await self._db.execute(_PURGE_REVOCATIONS, {"b_before": before})
