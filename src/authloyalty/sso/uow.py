"""sso's SQL unit of work."""

from __future__ import annotations

from authloyalty.platform.audit import SqlAuditLog
from authloyalty.platform.database import Connection
from authloyalty.platform.outbox import OutboxWriter
from authloyalty.platform.uow import SqlUnitOfWork
from authloyalty.sso.events import SSO_EVENTS
from authloyalty.sso.repository import SqlLoginFailures, SqlSessions, SqlUsers
from authloyalty.sso.tables import audit_log, outbox


class SqlSsoUnitOfWork(SqlUnitOfWork):
    """Users, sessions, login failures, the outbox and the audit log in one transaction."""

    users: SqlUsers
    sessions: SqlSessions
    login_failures: SqlLoginFailures
    outbox: OutboxWriter
    audit: SqlAuditLog

    def _bind(self, db: Connection) -> None:
        self.users = SqlUsers(db)
        self.sessions = SqlSessions(db)
        self.login_failures = SqlLoginFailures(db)
        self.outbox = OutboxWriter(db, outbox, SSO_EVENTS)
        self.audit = SqlAuditLog(db, audit_log)
