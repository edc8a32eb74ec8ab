"""The SQL unit of work: one session (connection + transaction), repositories bound to it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

from authloyalty.platform.database import Database, Session


class SqlUnitOfWork:
    """Opens a transaction on enter; rolls back on exit unless :meth:`commit` was called.

    Subclasses bind their repositories in :meth:`_bind`. ``after_commit`` runs after a
    successful commit (the outbox relay is woken that way). ``read_only`` work has nothing to
    commit; on PostgreSQL it runs in autocommit.
    """

    def __init__(self, database: Database, after_commit: Callable[[], None] | None = None,
                 *, read_only: bool = False):
        self._database = database
        self._after_commit = after_commit
        self._read_only = read_only
        self._session: Session | None = None

    def _bind(self, session: Session) -> None:
        raise NotImplementedError

    @property
    def session(self) -> Session:
        """The open session (inside ``async with`` only)."""
        if self._session is None:
            raise RuntimeError("unit of work used outside `async with`")
        return self._session

    async def __aenter__(self) -> Self:
        session = await self._database.session(read_only=self._read_only)
        try:
            self._bind(session)
        except BaseException:
            await session.close()
            raise
        self._session = session
        return self

    async def __aexit__(self, *exc: object) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def commit(self) -> None:
        """Commit the transaction."""
        if self._read_only:
            raise RuntimeError("a read-only unit of work has nothing to commit")
        await self.session.commit()
        if self._after_commit is not None:
            self._after_commit()
