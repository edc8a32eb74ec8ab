"""The SQL unit of work: one connection, one transaction, repositories bound to it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class SqlUnitOfWork:
    """Opens a transaction on enter; rolls back on exit unless :meth:`commit` was called.

    Subclasses bind their repositories in :meth:`_bind`. ``after_commit`` runs after a
    successful commit (the outbox relay is woken that way).
    """

    def __init__(self, engine: AsyncEngine, after_commit: Callable[[], None] | None = None,
                 *, read_only: bool = False):
        self._engine = engine
        self._after_commit = after_commit
        self._conn: AsyncConnection | None = None
        # Read-only work on PostgreSQL runs in autocommit: one round trip per query instead of
        # BEGIN/query/ROLLBACK. SQLite keeps its (cheap, local) transactions.
        self._autocommit = read_only and engine.dialect.name != "sqlite"

    def _bind(self, conn: AsyncConnection) -> None:
        raise NotImplementedError

    @property
    def connection(self) -> AsyncConnection:
        """The open connection (inside ``async with`` only)."""
        if self._conn is None:
            raise RuntimeError("unit of work used outside `async with`")
        return self._conn

    async def __aenter__(self) -> Self:
        self._conn = await self._engine.connect()
        try:
            if self._autocommit:
                await self._conn.execution_options(isolation_level="AUTOCOMMIT")
            else:
                await self._conn.begin()
            self._bind(self._conn)
        except BaseException:
            await self._conn.close()
            self._conn = None
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        conn = self._conn
        self._conn = None
        if conn is None:
            return
        try:
            if conn.in_transaction():
                await conn.rollback()
        finally:
            await conn.close()

    async def commit(self) -> None:
        """Commit the transaction."""
        if self._autocommit:
            raise RuntimeError("a read-only unit of work has nothing to commit")
        await self.connection.commit()
        if self._after_commit is not None:
            self._after_commit()
