"""sso's SQL unit of work."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from authloyalty.platform.outbox import OutboxWriter
from authloyalty.platform.uow import SqlUnitOfWork
from authloyalty.sso.repository import SqlLoginFailures, SqlSessions, SqlUsers
from authloyalty.sso.tables import outbox


class SqlSsoUnitOfWork(SqlUnitOfWork):
    """Users, sessions, login failures and the outbox in one transaction."""

    users: SqlUsers
    sessions: SqlSessions
    login_failures: SqlLoginFailures
    outbox: OutboxWriter

    def _bind(self, conn: AsyncConnection) -> None:
        self.users = SqlUsers(conn)
        self.sessions = SqlSessions(conn)
        self.login_failures = SqlLoginFailures(conn)
        self.outbox = OutboxWriter(conn, outbox)
