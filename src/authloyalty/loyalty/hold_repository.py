"""SQL implementation of the holds repository (beside loyalty.repository, which uses it).

Every change locks the account row before touching its holds, as movements do: one lock
order, so a hold, a capture, a withdrawal and the sweep never wait on each other in a cycle.
On SQLite the write lock of BEGIN IMMEDIATE serialises them all (FOR UPDATE renders as
nothing there).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import and_, bindparam, case, func, insert, or_, select, update

from authloyalty.loyalty.domain import (
    Account,
    AccountFrozen,
    AccountNotFound,
    CaptureExceedsHold,
    HeldPointsInTheWay,
    Hold,
    HoldExpired,
    HoldNotActive,
    HoldNotFound,
    HoldOutcome,
    HoldState,
    InsufficientPoints,
    LedgerEntry,
    NewHold,
)
from authloyalty.loyalty.tables import accounts, holds
from authloyalty.platform.clock import as_utc
from authloyalty.platform.database import Connection

_LOCK_ACCOUNT = (select(accounts.c.user_id, accounts.c.frozen_at, accounts.c.held)
                 .where(accounts.c.user_id == bindparam("b_account")).with_for_update())
# One conditional UPDATE: the reservation applies only while the available points suffice.
_RESERVE = (
    update(accounts)
    .where(accounts.c.user_id == bindparam("b_account"), accounts.c.frozen_at.is_(None),
           accounts.c.balance - accounts.c.held - bindparam("b_amount") >= 0)
    .values(held=accounts.c.held + bindparam("b_amount"), updated_at=bindparam("b_now"))
    .returning(accounts.c.held))
_UNRESERVE = (update(accounts).where(accounts.c.user_id == bindparam("b_account"))
              .values(held=accounts.c.held - bindparam("b_amount")))
_ADD = insert(holds).returning(holds.c.id)
_GET = select(holds).where(holds.c.id == bindparam("b_id"),
                           holds.c.account_id == bindparam("b_account"))
_SETTLE = (update(holds)
           .where(holds.c.id == bindparam("b_id"), holds.c.state == "held",
                  holds.c.expires_at > bindparam("b_now"))
           .values(state=bindparam("b_state"), captured_amount=bindparam("b_captured"),
                   settled_at=bindparam("b_now")))
_EXPIRE = (update(holds)
           .where(holds.c.account_id == bindparam("b_account"), holds.c.state == "held",
                  holds.c.expires_at <= bindparam("b_now"))
           .values(state="expired", settled_at=bindparam("b_now"))
           .returning(holds.c.amount))
_DUE = (select(holds.c.account_id).distinct()
        .where(holds.c.state == "held", holds.c.expires_at <= bindparam("b_now"))
        .limit(bindparam("b_limit")))
_ACTIVE_HELD = (select(func.coalesce(func.sum(holds.c.amount), 0))
                .where(holds.c.account_id == accounts.c.user_id, holds.c.state == "held",
                       holds.c.expires_at > bindparam("b_now"))
                .scalar_subquery())
# One statement, so the balance and the held points are of the same moment; the sum runs
# only for an account that holds points at all.
_STANDING = select(
    accounts.c.user_id, accounts.c.balance, accounts.c.created_at, accounts.c.frozen_at,
    case((accounts.c.held == 0, 0), else_=_ACTIVE_HELD).label("held"),
).where(accounts.c.user_id == bindparam("b_account"))
_PAGE_BASE = (select(holds).where(holds.c.account_id == bindparam("b_account"),
                                  holds.c.id < bindparam("b_before"))
              .order_by(holds.c.id.desc()).limit(bindparam("b_limit")))
_LIVE = and_(holds.c.state == "held", holds.c.expires_at > bindparam("b_now"))
# A hold's state as seen at b_now (Hold.state_at).
_PAGE_BY_STATE: dict[HoldState | None, Any] = {
    None: _PAGE_BASE,
    "held": _PAGE_BASE.where(_LIVE),
    "expired": _PAGE_BASE.where(or_(
        holds.c.state == "expired",
        and_(holds.c.state == "held", holds.c.expires_at <= bindparam("b_now")))),
    "captured": _PAGE_BASE.where(holds.c.state == "captured"),
    "released": _PAGE_BASE.where(holds.c.state == "released"),
}
_NO_CURSOR = 2**63 - 1


def hold_from(row: Mapping[str, Any]) -> Hold:
    """A hold from its row."""
    return Hold(id=int(row["id"]), account_id=row["account_id"], amount=int(row["amount"]),
                captured_amount=int(row["captured_amount"]), comment=row["comment"],
                state=row["state"], expires_at=as_utc(row["expires_at"]),
                created_at=as_utc(row["created_at"]))


async def expire_holds(db: Connection, account_id: UUID, now: datetime) -> int:
    """Mark the account's holds expired by ``now`` as such and free their points; the points
    freed (the account row locked first)."""
    if await db.first(_LOCK_ACCOUNT, {"b_account": account_id}) is None:
        return 0
    rows = await db.all(_EXPIRE, {"b_account": account_id, "b_now": now})
    freed = sum(int(r["amount"]) for r in rows)
    if freed:
        await db.execute(_UNRESERVE, {"b_account": account_id, "b_amount": freed})
    return freed


class SqlHolds:
    """Holds in ``holds``, their points in ``accounts.held``."""

    def __init__(self, db: Connection) -> None:
        self._db = db

    async def place(self, new: NewHold) -> Hold:
        """Reserve the points if available (expired holds released when in the way)."""
        try:
            await self._reserve(new)
        except HeldPointsInTheWay:
            if not await expire_holds(self._db, new.account_id, new.at):
                raise
            await self._reserve(new)
        hold_id = await self._db.scalar(_ADD, {
            "account_id": new.account_id, "amount": new.amount, "captured_amount": 0,
            "comment": new.comment, "state": "held", "expires_at": new.expires_at,
            "created_at": new.at})
        return Hold(id=int(hold_id), account_id=new.account_id, amount=new.amount,
                    captured_amount=0, comment=new.comment, state="held",
                    expires_at=new.expires_at, created_at=new.at)

    async def _reserve(self, new: NewHold) -> None:
        held = await self._db.scalar(_RESERVE, {
            "b_account": new.account_id, "b_amount": new.amount, "b_now": new.at})
        if held is not None:
            return
        found = await self._db.first(_LOCK_ACCOUNT, {"b_account": new.account_id})
        if found is None:
            raise AccountNotFound()
        if found["frozen_at"] is not None:
            raise AccountFrozen()
        raise HeldPointsInTheWay() if found["held"] > 0 else InsufficientPoints()

    async def settle(self, account_id: UUID, hold_id: int, now: datetime, *, capture: bool,
                     amount: int | None = None) -> Hold:
        """Capture (``amount`` points or all, the rest released) or release the hold."""
        # The account first (see the module's docstring); then the hold cannot change under us.
        if await self._db.first(_LOCK_ACCOUNT, {"b_account": account_id}) is None:
            raise HoldNotFound()
        hold = await self.get(account_id, hold_id)
        if hold is None:
            raise HoldNotFound()
        seen = hold.state_at(now)
        if seen == "expired":
            raise HoldExpired()
        if seen != "held":
            raise HoldNotActive()
        if capture and amount is not None and amount > hold.amount:
            raise CaptureExceedsHold()
        captured = (hold.amount if amount is None else amount) if capture else None
        state: HoldState = "captured" if capture else "released"
        changed = await self._db.execute(_SETTLE, {
            "b_id": hold_id, "b_now": now, "b_state": state, "b_captured": captured or 0})
        if changed != 1:  # unreachable while the account row is locked; never settle twice
            raise HoldNotActive()
        await self._db.execute(_UNRESERVE, {"b_account": account_id, "b_amount": hold.amount})
        return Hold(id=hold.id, account_id=account_id, amount=hold.amount,
                    captured_amount=captured or 0, comment=hold.comment, state=state,
                    expires_at=hold.expires_at, created_at=hold.created_at)

    async def expire(self, account_id: UUID, now: datetime) -> int:
        """Mark the account's expired holds so; the points freed."""
        return await expire_holds(self._db, account_id, now)

    async def due(self, now: datetime, limit: int) -> list[UUID]:
        """Accounts with expired holds still stored as held."""
        rows = await self._db.all(_DUE, {"b_now": now, "b_limit": limit})
        return [r["account_id"] for r in rows]

    async def get(self, account_id: UUID, hold_id: int) -> Hold | None:
        """The hold, if it is on that account."""
        row = await self._db.first(_GET, {"b_id": hold_id, "b_account": account_id})
        return None if row is None else hold_from(row)

    async def page(self, account_id: UUID, state: HoldState | None, now: datetime,
                   limit: int, before_id: int | None) -> list[Hold]:
        """Newest first, strictly older than ``before_id``."""
        rows = await self._db.all(_PAGE_BY_STATE[state], {
            "b_account": account_id, "b_now": now, "b_limit": limit,
            "b_before": _NO_CURSOR if before_id is None else before_id})
        return [hold_from(r) for r in rows]

    async def standing(self, account_id: UUID, now: datetime) -> Account | None:
        """The account, ``held`` counting only holds unexpired at ``now``."""
        row = await self._db.first(_STANDING, {"b_account": account_id, "b_now": now})
        if row is None:
            return None
        frozen_at = row["frozen_at"]
        return Account(user_id=row["user_id"], balance=int(row["balance"]),
                       created_at=as_utc(row["created_at"]),
                       frozen_at=as_utc(frozen_at) if frozen_at else None,
                       held=int(row["held"]))


def _hold_data(hold: Hold) -> dict[str, Any]:
    return {"id": hold.id, "account_id": str(hold.account_id), "amount": hold.amount,
            "captured_amount": hold.captured_amount, "comment": hold.comment,
            "state": hold.state, "expires_at": hold.expires_at.isoformat(),
            "created_at": hold.created_at.isoformat()}


def dump_hold_outcome(outcome: HoldOutcome,
                      entry_data: Callable[[LedgerEntry], dict[str, Any]]) -> dict[str, Any]:
    """The outcome as stored under its idempotency key."""
    return {"hold": _hold_data(outcome.hold), "balance": outcome.balance,
            "available": outcome.available,
            "entry": None if outcome.entry is None else entry_data(outcome.entry)}


def load_hold_outcome(data: dict[str, Any],
                      entry_of: Callable[[dict[str, Any]], LedgerEntry]) -> HoldOutcome:
    """The outcome stored by :func:`dump_hold_outcome`."""
    h = data["hold"]
    hold = Hold(id=int(h["id"]), account_id=UUID(h["account_id"]), amount=int(h["amount"]),
                captured_amount=int(h["captured_amount"]), comment=h["comment"],
                state=h["state"], expires_at=as_utc(datetime.fromisoformat(h["expires_at"])),
                created_at=as_utc(datetime.fromisoformat(h["created_at"])))
    entry = None if data["entry"] is None else entry_of(data["entry"])
    return HoldOutcome(hold=hold, balance=int(data["balance"]),
                       available=int(data["available"]), entry=entry)
