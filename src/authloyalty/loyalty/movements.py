"""The adapters of the ledger's two ports, :class:`AccountReads` and :class:`Movements`.

The plain adapters serve each request with a unit of work of its own: they work on every
database (and on the in-memory fake). The coalesced adapters, for PostgreSQL, serve the
requests that arrive in the same event-loop turn with one statement (see
:mod:`authloyalty.platform.batching`): the same answers with far fewer round trips. Bootstrap
chooses; the contract suite (tests/contract/test_ledger_ports.py) holds both to one behaviour.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from uuid import UUID

from authloyalty.loyalty.domain import (
    Account,
    HeldPointsInTheWay,
    IdempotencyClaim,
    IdempotencyRecord,
    LedgerEntry,
    LotsInvolved,
    LoyaltyUnitOfWork,
    Movement,
    Movements,
)
from authloyalty.loyalty.idempotent import write_once
from authloyalty.loyalty.lots import apply_with_lots
from authloyalty.loyalty.repository import (
    ACCOUNTS_BY_IDS,
    account_from,
    apply_movements,
    movement_answers,
)
from authloyalty.platform.audit import AuditRecord
from authloyalty.platform.batching import Coalescer
from authloyalty.platform.database import Database, DatabaseUnavailable


async def apply_in(uow: LoyaltyUnitOfWork, movement: Movement) -> LedgerEntry:
    """The one path of a movement inside a unit of work: every deposit and withdrawal that is
    not coalesced, and the withdrawal of a hold's capture, go through here."""
    try:
        return await uow.ledger.apply(movement)
    except LotsInvolved:  # only accounts with lots, and deposits that make one, pay more
        return await apply_with_lots(uow, movement)


class UnitOfWorkAccountReads:
    """Each read in a (read-only) unit of work of its own."""

    def __init__(self, uow: Callable[[], LoyaltyUnitOfWork]) -> None:
        self._uow = uow

    async def get(self, user_id: UUID) -> Account | None:
        """The account of ``user_id``."""
        async with self._uow() as uow:
            return await uow.accounts.get(user_id)


class UnitOfWorkMovements:
    """Each movement in a transaction of its own, with its idempotency key when it has one
    (and its audit record, for an admin's movement)."""

    def __init__(self, uow: Callable[[], LoyaltyUnitOfWork]) -> None:
        self._uow = uow

    async def apply(self, movement: Movement, once: IdempotencyClaim | None = None, *,
                    audit: Callable[[LedgerEntry], AuditRecord] | None = None
                    ) -> LedgerEntry | IdempotencyRecord:
        """The new entry, or the record an earlier request stored under ``once`` (then
        nothing is applied or audited again)."""
        async def act(uow: LoyaltyUnitOfWork, now: datetime) -> LedgerEntry:
            entry = await apply_in(uow, movement)
            if audit is not None:
                await uow.audit.add(audit(entry))
            return entry

        return await write_once(self._uow, once, act, lambda: movement.at)


class CoalescedAccountReads:
    """Reads that arrive in the same event-loop turn are one
    ``SELECT ... WHERE user_id = ANY(...)`` (PostgreSQL)."""

    def __init__(self, database: Database, *, max_batch: int = 256) -> None:
        self._db = database
        self.batches: Coalescer[UUID, Account | None] = Coalescer(
            "account_read", self._read, max_batch=max_batch, shared=(DatabaseUnavailable,))

    async def get(self, user_id: UUID) -> Account | None:
        """The account of ``user_id`` as committed when its batch ran."""
        return await self.batches.submit(user_id)

    async def _read(self, ids: list[UUID]) -> list[Account | None]:
        rows = await self._db.fetch(ACCOUNTS_BY_IDS, {"b_ids": list(set(ids))})
        found = {row["user_id"]: account_from(row) for row in rows}
        return [found.get(user_id) for user_id in ids]

    async def aclose(self) -> None:
        """Wait for the reads under way."""
        await self.batches.aclose()


class CoalescedMovements:
    """Movements that arrive in the same event-loop turn commit together as one statement
    (group commit), each with its own answer; movements of one account stay ordered and
    never share a statement. The database being unavailable fails the whole batch and
    applies none of it; any other failure of the statement (a value PostgreSQL refuses, ...)
    reaches only the movements that cause it (see :mod:`authloyalty.platform.batching`).

    A movement with an idempotency key needs its key stored in its own transaction: it goes
    to ``keyed`` (the plain adapter)."""

    def __init__(self, database: Database, keyed: Movements, *, max_batch: int = 256) -> None:
        self._db = database
        self._keyed = keyed
        self.batches: Coalescer[Movement, LedgerEntry] = Coalescer(
            "movement", self._apply, key=lambda m: m.account_id, max_batch=max_batch,
            shared=(DatabaseUnavailable,))

    async def apply(self, movement: Movement, once: IdempotencyClaim | None = None
                    ) -> LedgerEntry | IdempotencyRecord:
        """The new entry, or the record an earlier request stored under ``once``."""
        if once is not None or movement.expires_at is not None:  # a lot: the plain path
            return await self._keyed.apply(movement, once)
        try:
            return await self.batches.submit(movement)
        except HeldPointsInTheWay:
            # Expired holds may be in the way: the plain path releases them and tries again
            # (only a refused debit on an account holding points pays for this).
            return await self._keyed.apply(movement)
        except LotsInvolved:  # the account has lots: the plain path handles them
            return await self._keyed.apply(movement)

    async def _apply(self, batch: list[Movement]) -> list[LedgerEntry | Exception]:
        return movement_answers(batch, await self._db.fetch(*apply_movements(batch)))

    async def aclose(self) -> None:
        """Wait for the batches under way."""
        await self.batches.aclose()
