"""sso's SQL unit of work."""

from __future__ import annotations

from authloyalty.platform.database import Session
from authloyalty.platform.outbox import OutboxWriter
from authloyalty.platform.uow import SqlUnitOfWork
from authloyalty.sso.events import SSO_EVENTS
from authloyalty.sso.repository import SqlLoginFailures, SqlSessions, SqlUsers
from authloyalty.sso.tables import outbox


class SqlSsoUnitOfWork(SqlUnitOfWork):
    """Users, sessions, login failures and the outbox in one transaction."""

    users: SqlUsers
    sessions: SqlSessions
    login_failures: SqlLoginFailures
    outbox: OutboxWriter

    def _bind(self, session: Session) -> None:
        self.users = SqlUsers(session)
        self.sessions = SqlSessions(session)
        self.login_failures = SqlLoginFailures(session)
        self.outbox = OutboxWriter(session, outbox, SSO_EVENTS)
