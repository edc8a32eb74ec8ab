"""SQL implementation of :class:`~authloyalty.loyalty.domain.Lots`: expiring lots, what each
withdrawal took from them, and the entries (expiries, reversals) that change them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import bindparam, func, insert, select, update

from authloyalty.loyalty.domain import (
    Account,
    EntryKind,
    InsufficientPoints,
    LedgerEntry,
    Lot,
)
from authloyalty.loyalty.repository import account_from, entry_from
from authloyalty.loyalty.tables import accounts, ledger_entries, lot_consumptions, lots
from authloyalty.platform.clock import as_utc
from authloyalty.platform.database import Connection

# FOR UPDATE on PostgreSQL; SQLite has one writer at a time already (BEGIN IMMEDIATE).
_LOCK = (select(accounts.c.user_id, accounts.c.balance, accounts.c.created_at,
                accounts.c.frozen_at, accounts.c.held, accounts.c.next_expiry)
         .where(accounts.c.user_id == bindparam("b_user_id")).with_for_update())
_ADD = insert(lots)
_LIVE = (select(lots).where(lots.c.account_id == bindparam("b_account"), lots.c.remaining > 0)
         .order_by(lots.c.expires_at, lots.c.id))
_TAKE = (update(lots).where(lots.c.id == bindparam("b_id"))
         .values(remaining=lots.c.remaining - bindparam("b_amount")))
_GIVE_BACK = (update(lots).where(lots.c.id == bindparam("b_id"))
              .values(remaining=lots.c.remaining + bindparam("b_amount")))
_CONSUME = insert(lot_consumptions)
_CONSUMED = (select(lots, lot_consumptions.c.amount.label("taken"))
             .join(lot_consumptions, lot_consumptions.c.lot_id == lots.c.id)
             .where(lot_consumptions.c.entry_id == bindparam("b_entry"))
             .order_by(lots.c.expires_at, lots.c.id))
_OF_ENTRY = select(lots).where(lots.c.entry_id == bindparam("b_entry"))
_NEXT_EXPIRY = (select(func.min(lots.c.expires_at))
                .where(lots.c.account_id == accounts.c.user_id, lots.c.remaining > 0)
                .scalar_subquery())
_REFRESH = (update(accounts).where(accounts.c.user_id == bindparam("b_user_id"))
            .values(next_expiry=_NEXT_EXPIRY))
_CHANGE = (update(accounts)
           .where(accounts.c.user_id == bindparam("b_user_id"),
                  accounts.c.balance + bindparam("b_delta") >= 0)
           .values(balance=accounts.c.balance + bindparam("b_delta"),
                   updated_at=bindparam("b_now"))
           .returning(accounts.c.balance))
_APPEND = insert(ledger_entries).returning(ledger_entries.c.id)
_ENTRY = select(ledger_entries).where(ledger_entries.c.id == bindparam("b_entry"))
_REVERSAL = select(ledger_entries.c.id).where(ledger_entries.c.reverses == bindparam("b_entry"))
_EXPIRING = (select(lots).where(lots.c.account_id == bindparam("b_account"),
                                lots.c.remaining > 0, lots.c.expires_at > bindparam("b_now"))
             .order_by(lots.c.expires_at, lots.c.id).limit(bindparam("b_limit")))
_DUE = (select(accounts.c.user_id)
        .where(accounts.c.next_expiry <= bindparam("b_now"),
               accounts.c.user_id > bindparam("b_after"))
        .order_by(accounts.c.user_id).limit(bindparam("b_limit")))
_FIRST_ID = UUID(int=0)


def _lot(row: Mapping[str, Any]) -> Lot:
    return Lot(id=int(row["id"]), account_id=row["account_id"], entry_id=int(row["entry_id"]),
               amount=int(row["amount"]), remaining=int(row["remaining"]),
               expires_at=as_utc(row["expires_at"]))


class SqlLots:
    """Lots in ``lots``, consumptions in ``lot_consumptions``; ``accounts.next_expiry`` kept."""

    def __init__(self, db: Connection) -> None:
        self._db = db

    async def lock(self, account_id: UUID) -> Account | None:
        """The account, its row locked."""
        row = await self._db.first(_LOCK, {"b_user_id": account_id})
        return None if row is None else account_from(row)

    async def add(self, entry: LedgerEntry, expires_at: datetime) -> None:
        """A lot of the deposit's points."""
        await self._db.execute(_ADD, {
            "account_id": entry.account_id, "entry_id": entry.id, "amount": entry.amount,
            "remaining": entry.amount, "expires_at": expires_at})

    async def live(self, account_id: UUID) -> list[Lot]:
        """Lots with points left, soonest expiry first."""
        return [_lot(r) for r in await self._db.all(_LIVE, {"b_account": account_id})]

    async def take(self, lot_id: int, amount: int, entry_id: int | None) -> None:
        """Remove points from the lot (the table's checks refuse more than it has)."""
        await self._db.execute(_TAKE, {"b_id": lot_id, "b_amount": amount})
        if entry_id is not None:
            await self._db.execute(_CONSUME, {"entry_id": entry_id, "lot_id": lot_id,
                                              "amount": amount})

    async def give_back(self, lot_id: int, amount: int) -> None:
        """Return points to the lot."""
        await self._db.execute(_GIVE_BACK, {"b_id": lot_id, "b_amount": amount})

    async def consumed_by(self, entry_id: int) -> list[tuple[Lot, int]]:
        """What ``entry_id`` took from each lot."""
        rows = await self._db.all(_CONSUMED, {"b_entry": entry_id})
        return [(_lot(r), int(r["taken"])) for r in rows]

    async def of_entry(self, entry_id: int) -> Lot | None:
        """The lot a deposit made."""
        row = await self._db.first(_OF_ENTRY, {"b_entry": entry_id})
        return None if row is None else _lot(row)

    async def refresh_next_expiry(self, account_id: UUID) -> None:
        """Recompute ``accounts.next_expiry`` from the lots."""
        await self._db.execute(_REFRESH, {"b_user_id": account_id})

    async def post(self, account_id: UUID, kind: EntryKind, delta: int, comment: str,
                   at: datetime, reverses: int | None = None) -> LedgerEntry:
        """Change the balance and append the entry."""
        balance = await self._db.scalar(_CHANGE, {"b_user_id": account_id, "b_delta": delta,
                                                  "b_now": at})
        if balance is None:
            raise InsufficientPoints()
        entry_id = await self._db.scalar(_APPEND, {
            "account_id": account_id, "kind": kind, "amount": abs(delta), "comment": comment,
            "balance_after": int(balance), "created_at": at, "reverses": reverses})
        return LedgerEntry(id=int(entry_id), account_id=account_id, kind=kind,
                           amount=abs(delta), comment=comment, balance_after=int(balance),
                           created_at=at, reverses=reverses)

    async def entry(self, entry_id: int) -> LedgerEntry | None:
        """The entry ``entry_id``."""
        row = await self._db.first(_ENTRY, {"b_entry": entry_id})
        return None if row is None else entry_from(row)

    async def reversal_of(self, entry_id: int) -> int | None:
        """The reversal of ``entry_id``, if any."""
        found = await self._db.scalar(_REVERSAL, {"b_entry": entry_id})
        return None if found is None else int(found)

    async def expiring(self, account_id: UUID, now: datetime, limit: int) -> list[Lot]:
        """The next lots to expire."""
        rows = await self._db.all(_EXPIRING, {"b_account": account_id, "b_now": now,
                                              "b_limit": limit})
        return [_lot(r) for r in rows]

    async def due(self, now: datetime, after: UUID | None, limit: int) -> list[UUID]:
        """Accounts with lots due to expire."""
        rows = await self._db.all(_DUE, {"b_now": now, "b_after": after or _FIRST_ID,
                                         "b_limit": limit})
        return [r["user_id"] for r in rows]
