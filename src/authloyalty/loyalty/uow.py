"""loyalty's SQL unit of work."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from authloyalty.loyalty.repository import (
    SqlAccounts,
    SqlIdempotencyKeys,
    SqlInbox,
    SqlLedger,
    SqlRevocations,
)
from authloyalty.platform.uow import SqlUnitOfWork


class SqlLoyaltyUnitOfWork(SqlUnitOfWork):
    """Accounts, ledger, idempotency keys, inbox and revocations in one transaction."""

    accounts: SqlAccounts
    ledger: SqlLedger
    idempotency: SqlIdempotencyKeys
    inbox: SqlInbox
    revocations: SqlRevocations

    def _bind(self, conn: AsyncConnection) -> None:
        self.accounts = SqlAccounts(conn)
        self.ledger = SqlLedger(conn)
        self.idempotency = SqlIdempotencyKeys(conn)
        self.inbox = SqlInbox(conn)
        self.revocations = SqlRevocations(conn)
