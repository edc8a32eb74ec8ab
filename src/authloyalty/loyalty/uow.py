"""loyalty's SQL unit of work."""

from __future__ import annotations

from authloyalty.loyalty.repository import (
    SqlAccounts,
    SqlIdempotencyKeys,
    SqlInbox,
    SqlLedger,
    SqlRevocations,
)
from authloyalty.platform.database import Session
from authloyalty.platform.uow import SqlUnitOfWork


class SqlLoyaltyUnitOfWork(SqlUnitOfWork):
    """Accounts, ledger, idempotency keys, inbox and revocations in one transaction."""

    accounts: SqlAccounts
    ledger: SqlLedger
    idempotency: SqlIdempotencyKeys
    inbox: SqlInbox
    revocations: SqlRevocations

    def _bind(self, session: Session) -> None:
        self.accounts = SqlAccounts(session)
        self.ledger = SqlLedger(session)
        self.idempotency = SqlIdempotencyKeys(session)
        self.inbox = SqlInbox(session)
        self.revocations = SqlRevocations(session)
