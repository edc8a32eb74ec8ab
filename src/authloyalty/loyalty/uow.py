"""loyalty's SQL unit of work."""

from __future__ import annotations

from authloyalty.loyalty.hold_repository import SqlHolds
from authloyalty.loyalty.lot_repository import SqlLots
from authloyalty.loyalty.repository import (
    SqlAccounts,
    SqlIdempotencyKeys,
    SqlInbox,
    SqlLedger,
    SqlRevocations,
)
from authloyalty.loyalty.tables import audit_log
from authloyalty.platform.audit import SqlAuditLog
from authloyalty.platform.database import Connection
from authloyalty.platform.uow import SqlUnitOfWork


class SqlLoyaltyUnitOfWork(SqlUnitOfWork):
    """Accounts, ledger, idempotency keys, inbox, revocations and the audit log in one
    transaction."""

    accounts: SqlAccounts
    ledger: SqlLedger
    holds: SqlHolds
    lots: SqlLots
    idempotency: SqlIdempotencyKeys
    inbox: SqlInbox
    revocations: SqlRevocations
    audit: SqlAuditLog

    def _bind(self, db: Connection) -> None:
        self.accounts = SqlAccounts(db)
        self.ledger = SqlLedger(db)
        self.holds = SqlHolds(db)
        self.lots = SqlLots(db)
        self.idempotency = SqlIdempotencyKeys(db)
        self.inbox = SqlInbox(db)
        self.revocations = SqlRevocations(db)
        self.audit = SqlAuditLog(db, audit_log)
