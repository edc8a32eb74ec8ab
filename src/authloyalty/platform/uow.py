"""The SQL unit of work: one database connection inside one transaction, repositories bound to
it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

from authloyalty.platform.database import Connection, Database


class SqlUnitOfWork:
    """Opens a transaction on enter; rolls back on exit unless :meth:`commit` was called.

    Subclasses bind their repositories in :meth:`_bind`; what must happen once the transaction
    has committed is registered with :meth:`on_commit` (the outbox's hand-over to the relay is).
    ``read_only`` work has nothing to commit; on PostgreSQL it runs in autocommit.
    """

    def __init__(self, database: Database, *, read_only: bool = False):
        self._database = database
        self._read_only = read_only
        self._connection: Connection | None = None
        self._on_commit: list[Callable[[], None]] = []

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this transaction has committed (never if it rolls back)."""
        self._on_commit.append(callback)

    def _bind(self, db: Connection) -> None:
        raise NotImplementedError

    @property
    def connection(self) -> Connection:
        """The open connection (inside ``async with`` only)."""
        if self._connection is None:
            raise RuntimeError("unit of work used outside `async with`")
        return self._connection

    async def __aenter__(self) -> Self:
        connection = await self._database.connect(read_only=self._read_only)
        try:
            self._bind(connection)
        except BaseException:
            await connection.close()
            raise
        self._connection = connection
        return self

    async def __aexit__(self, *exc: object) -> None:
        connection, self._connection = self._connection, None
        self._on_commit.clear()
        if connection is not None:
            await connection.close()

    async def commit(self) -> None:
        """Commit the transaction."""
        if self._read_only:
            raise RuntimeError("a read-only unit of work has nothing to commit")
        await self.connection.commit()
        callbacks, self._on_commit = self._on_commit, []
        for callback in callbacks:
            callback()
