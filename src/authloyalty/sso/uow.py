"""sso's SQL unit of work."""

from __future__ import annotations

from authloyalty.platform.audit import SqlAuditLog
from authloyalty.platform.database import Connection, Database
from authloyalty.platform.outbox import OutboxRelay, OutboxWriter
from authloyalty.platform.uow import SqlUnitOfWork
from authloyalty.sso.events import SSO_EVENTS
from authloyalty.sso.repository import SqlLoginFailures, SqlSessions, SqlUsers
from authloyalty.sso.tables import audit_log, outbox


class SqlSsoUnitOfWork(SqlUnitOfWork):
    """Users, sessions, login failures, the outbox and the audit log in one transaction.

    Events go to ``relay`` (this process's) when the transaction commits: handed over at once
    when it is running, else announced so that its next pass claims them."""

    users: SqlUsers
    sessions: SqlSessions
    login_failures: SqlLoginFailures
    outbox: OutboxWriter
    audit: SqlAuditLog

    def __init__(self, database: Database, *, relay: OutboxRelay | None = None,
                 read_only: bool = False) -> None:
        super().__init__(database, read_only=read_only)
        self._relay = relay

    def _bind(self, db: Connection) -> None:
        self.users = SqlUsers(db)
        self.sessions = SqlSessions(db)
        self.login_failures = SqlLoginFailures(db)
        self.outbox = OutboxWriter(db, outbox, SSO_EVENTS, relay=self._relay,
                                   on_commit=self.on_commit)
        self.audit = SqlAuditLog(db, audit_log)
