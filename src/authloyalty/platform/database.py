"""How use cases reach their database: a :class:`Database` hands out :class:`Connection` objects.

Statements are SQLAlchemy Core everywhere (one definition of every query). They run on one of
two drivers:

* **PostgreSQL: asyncpg directly.** Each statement is compiled once for asyncpg's dialect and
  run on a pooled asyncpg connection as a prepared statement. Going through SQLAlchemy's engine
  cost about 0.3 ms of CPU per query (greenlet hops, pool events, result wrapping) against
  0.05 ms for the driver call itself, which made it most of a balance read.
* **SQLite (the embedded mode): SQLAlchemy's engine** over aiosqlite, which also gives SQLite
  its write-locking transactions (see :mod:`authloyalty.platform.engines`).

Both translate driver failures into exceptions callers can act on
(:mod:`authloyalty.platform.db_errors`): :class:`IntegrityViolation` (a constraint refused the
write: usually a concurrent twin), :class:`InvalidValue` (422) and :class:`DatabaseUnavailable`
(the database cannot be reached or refuses work for now: HTTP 503, gRPC UNAVAILABLE, and the
event consumers retry instead of dead-lettering). A connection that failed with
:class:`DatabaseUnavailable` is discarded, never handed out again; when the failure says the
server went away or is no longer the leader (a failover), its idle siblings are dropped too, and
the pools connect afresh on next use: through HAProxy's write port, or a multi-host URL with
``target_session_attrs=read-write``, that is the new leader, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any, TypeVar, cast

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable

from authloyalty.platform.db_errors import (
    DatabaseUnavailable,
    IntegrityViolation,
    InvalidValue,
    server_lost,
    translate_pg,
    translate_sa,
)
from authloyalty.platform.engines import DatabaseTarget, asyncpg_dsn

__all__ = ["Connection", "Database", "DatabaseUnavailable", "IntegrityViolation",
           "InvalidValue", "PgDatabase", "SqlAlchemyDatabase", "open_database"]

Params = Mapping[str, Any] | None
Row = Mapping[str, Any]
T = TypeVar("T")


class Connection(ABC):
    """One connection, inside one transaction (or in autocommit when read-only)."""

    dialect: str
    # Per open savepoint, innermost last: what to undo in memory if it rolls back.
    _undo: list[list[Callable[[], None]]] | None = None

    def on_savepoint_rollback(self, undo: Callable[[], None]) -> None:
        """Call ``undo`` should the savepoint open now (or one around it) roll back while the
        transaction goes on: memory that mirrors what was written in it, such as rows to
        hand over at commit, follows the database. Outside every savepoint nothing is kept
        (a rolled-back transaction commits nothing and runs no commit hooks)."""
        if self._undo:
            self._undo[-1].append(undo)

    @contextmanager
    def _undoing(self) -> Iterator[None]:
        """The body of a savepoint: what it registered is undone if it raises, and passed to
        the savepoint around it if it ends well (that one may still roll back)."""
        if self._undo is None:
            self._undo = []
        self._undo.append([])
        try:
            yield
        except BaseException:
            for step in reversed(self._undo.pop()):
                step()
            raise
        undo = self._undo.pop()
        if self._undo:
            self._undo[-1].extend(undo)

    @abstractmethod
    async def first(self, statement: Executable, params: Params = None) -> Row | None:
        """The first row, or None."""

    @abstractmethod
    async def all(self, statement: Executable, params: Params = None) -> list[Row]:
        """Every row."""

    async def scalar(self, statement: Executable, params: Params = None) -> Any:
        """The first column of the first row (None without rows)."""
        row = await self.first(statement, params)
        return None if row is None else next(iter(row.values()))

    @abstractmethod
    async def execute(self, statement: Executable, params: Params = None) -> int:
        """Run a statement for its effect; the number of rows it touched."""

    @abstractmethod
    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A nested transaction: a failure inside undoes only what was done inside."""

    @abstractmethod
    async def commit(self) -> None:
        """Commit the transaction."""

    @abstractmethod
    async def close(self) -> None:
        """Roll back what was not committed and give the connection back."""


class Database(ABC):
    """A pool of connections to one database."""

    dialect: str

    @abstractmethod
    async def connect(self, *, read_only: bool = False) -> Connection:
        """A connection with its transaction begun; read-only work on PostgreSQL runs in
        autocommit (one round trip per query instead of BEGIN/query/ROLLBACK)."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A connection committed when the block ends normally, rolled back otherwise."""
        connection = await self.connect()
        try:
            yield connection
            await connection.commit()
        finally:
            await connection.close()

    async def fetch(self, statement: Executable, params: Params = None) -> list[Row]:
        """Run one statement in a transaction of its own and return its rows (on PostgreSQL
        in autocommit: one round trip, and a single statement is atomic by itself)."""
        async with self.transaction() as connection:
            return await connection.all(statement, params)

    async def ping(self) -> None:
        """Raise :class:`DatabaseUnavailable` unless the database answers a trivial query."""
        connection = await self.connect(read_only=True)
        try:
            await connection.execute(_SELECT_ONE)
        finally:
            await connection.close()

    @abstractmethod
    async def dispose(self) -> None:
        """Close every pooled connection."""


def _select_one() -> Executable:
    from sqlalchemy import literal_column, select

    return select(literal_column("1"))


_SELECT_ONE = _select_one()


# --- PostgreSQL through asyncpg ------------------------------------------------------------

async def _pg_call(call: Awaitable[T]) -> T:
    try:
        return await call
    except Exception as exc:
        translated = translate_pg(exc)
        if translated is exc:
            raise
        raise translated from exc


class _Compiled:
    __slots__ = ("defaults", "names", "sql", "statement")

    def __init__(self, statement: Executable, sql: str, names: tuple[str, ...],
                 defaults: dict[str, Any]) -> None:
        self.statement = statement  # held so that its id() is not reused while cached
        self.sql = sql
        self.names = names
        self.defaults = defaults


class _Lane:
    """A few connections for single statements, handed out without asyncpg's pool.

    asyncpg's pool costs about 0.1 ms of CPU per acquire and release (more than the query it
    wraps); :meth:`PgDatabase.fetch` serves coalesced statements (one per event-loop turn and
    kind) from this instead: a list of idle connections, a cap, and a queue of waiters.
    """

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], size: int) -> None:
        self._connect = connect
        self._size = size
        self._idle: list[asyncpg.Connection] = []
        self._open = 0  # connections counted against size: idle, lent out or connecting
        # Connections made before the last expire() are closed when they come back.
        self._generation = 0
        self._born: weakref.WeakKeyDictionary[asyncpg.Connection, int] = \
            weakref.WeakKeyDictionary()
        # A waiter gets a connection, or None: "a slot is free, connect one yourself".
        self._waiters: deque[asyncio.Future[asyncpg.Connection | None]] = deque()

    async def acquire(self) -> asyncpg.Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.is_closed():
                return conn
            self._open -= 1
        given: asyncpg.Connection | None = None
        if self._open >= self._size:
            waiter: asyncio.Future[asyncpg.Connection | None] = \
                asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                given = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # handed over as we were cancelled
                    if waiter.result() is None:
                        self._open -= 1
                        self._wake()
                    else:
                        self.release(waiter.result())
                raise
            if given is not None:
                return given
        else:
            self._open += 1
        generation = self._generation
        try:
            conn = await self._connect()
        except BaseException:
            self._open -= 1
            self._wake()
            raise
        self._born[conn] = generation
        return conn

    def release(self, conn: asyncpg.Connection) -> None:
        if self._born.get(conn, self._generation) != self._generation:
            conn.terminate()  # made before expire(): its server may be gone or demoted
        if conn.is_closed():
            self._open -= 1
            self._wake()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def _wake(self) -> None:
        """A slot was freed: let the first waiter connect in it."""
        while self._waiters and self._open < self._size:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._open += 1
                waiter.set_result(None)
                return

    def expire(self) -> None:
        """Drop the idle connections now and those lent out when they come back (their server
        went away or is no longer the leader); the next acquire connects afresh."""
        self._generation += 1
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        for conn in idle:
            conn.terminate()
        self._wake()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)


class PgDatabase(Database):
    """PostgreSQL through an asyncpg pool (``min_size`` 0: connects on first use)."""

    dialect = "postgresql"

    def __init__(self, target: DatabaseTarget, *, connect_timeout: float = 10.0,
                 fetch_timeout: float = 30.0, cache_size: int = 512) -> None:
        self._dsn = asyncpg_dsn(target.url, leader=not target.replica)
        self._target = target
        self._connect_timeout = connect_timeout
        # A statement of fetch() (one per batch of coalesced requests, so its timer is cheap)
        # that takes longer is cancelled: 503 for its callers instead of a wait without end
        # on a hung server, and its connection is replaced.
        self._fetch_timeout = fetch_timeout
        self._pool: asyncpg.Pool | None = None
        self._lane = _Lane(self._connect, max(2, target.pool_size // 2))
        self._lock = asyncio.Lock()
        self._sa_dialect = asyncpg_dialect()  # type: ignore[no-untyped-call]
        self._cache: OrderedDict[tuple[int, tuple[str, ...]], _Compiled] = OrderedDict()
        self._cache_size = cache_size

    def compile(self, statement: Executable, params: Params) -> tuple[str, list[Any]]:
        """The SQL for asyncpg and its positional arguments (compiled once per statement
        object and parameter names; statements built per call are compiled per call)."""
        keys = tuple(params) if params else ()
        cache_key = (id(statement), keys)
        compiled = self._cache.get(cache_key)
        if compiled is None or compiled.statement is not statement:
            sa = statement.compile(dialect=self._sa_dialect,  # type: ignore[attr-defined]
                                   column_keys=list(keys))
            compiled = _Compiled(statement, sa.string, tuple(sa.positiontup or ()),
                                 sa.construct_params(_check=False))
            self._cache[cache_key] = compiled
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        values = {**compiled.defaults, **params} if params else compiled.defaults
        return compiled.sql, [values[name] for name in compiled.names]

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    settings = {"search_path": self._target.schema} if self._target.schema \
                        else None
                    self._pool = await _pg_call(asyncpg.create_pool(
                        self._dsn, min_size=0, max_size=self._target.pool_size * 2,
                        max_inactive_connection_lifetime=300, timeout=self._connect_timeout,
                        server_settings=settings, init=_init_connection, reset=_reset))
        assert self._pool is not None
        return self._pool

    async def connect(self, *, read_only: bool = False) -> Connection:
        pool = await self._get_pool()
        for attempt in (1, 2):
            # No timeout here: asyncpg implements it with a timer per call, a visible share of
            # a short request. A request waits for a connection as long as its client does.
            conn = await _pg_call(pool.acquire())
            connection = _PgConnection(self, pool, conn)
            if read_only:
                return connection
            try:
                await connection.begin()
            except DatabaseUnavailable as exc:
                await connection.close()
                # A connection whose server went away while it sat in the pool fails at
                # BEGIN, before any work: the pool was just expired, so one more try runs on
                # a fresh connection (to the new leader, after a failover).
                if attempt == 2 or not server_lost(exc):
                    raise
                continue
            except BaseException:
                await connection.close()
                raise
            return connection
        raise AssertionError("unreachable")

    async def discard_siblings(self, failure: BaseException) -> None:
        """After ``failure`` on one connection: when it says the server went away or is no
        longer the leader, no idle connection to it is handed out again."""
        if not server_lost(failure):
            return
        self._lane.expire()
        if self._pool is not None:
            await self._pool.expire_connections()

    async def _connect(self) -> asyncpg.Connection:
        settings = {"search_path": self._target.schema} if self._target.schema else None
        conn: asyncpg.Connection = await _pg_call(asyncpg.connect(
            self._dsn, timeout=self._connect_timeout, command_timeout=self._fetch_timeout,
            server_settings=settings))
        try:
            await _pg_call(_init_connection(conn))
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def fetch(self, statement: Executable, params: Params = None) -> list[Row]:
        sql, args = self.compile(statement, params)
        conn = await self._lane.acquire()
        try:
            rows: list[Row] = await conn.fetch(sql, *args)
        except BaseException as exc:
            # The server refusing the statement leaves the connection ready for the next one;
            # anything else mid-exchange (the server went away, a cancellation) may leave it
            # waiting for the rest of an answer, and a connection the database is unavailable
            # on (a read-only former leader, ...) must not serve again: never hand those on.
            translated = translate_pg(exc)
            if not isinstance(exc, asyncpg.PostgresError) or \
                    isinstance(translated, DatabaseUnavailable):
                conn.terminate()
            self._lane.release(conn)
            if translated is exc:
                raise
            await self.discard_siblings(exc)
            raise translated from exc
        self._lane.release(conn)
        return rows

    async def dispose(self) -> None:
        await self._lane.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads,
                                  schema="pg_catalog")


async def _reset(conn: asyncpg.Connection) -> None:
    # asyncpg's default reset (RESET ALL, UNLISTEN *, CLOSE ALL, advisory unlocks) is a round
    # trip on every release for session state we never create. An open transaction is still
    # rolled back before this is called.
    return None


def _rowcount(status: str) -> int:
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class _PgConnection(Connection):
    dialect = "postgresql"

    def __init__(self, database: PgDatabase, pool: asyncpg.Pool,
                 conn: asyncpg.Connection) -> None:
        self._db = database
        self._pool = pool
        self._conn: asyncpg.Connection | None = conn
        self._tx: Any = None
        self._broken = False  # the server went away mid-exchange: terminate, do not reuse

    @property
    def _open(self) -> asyncpg.Connection:
        if self._conn is None:
            raise RuntimeError("connection used after close")
        return self._conn

    async def begin(self) -> None:
        self._tx = await self._call(self._start)

    async def _start(self) -> Any:
        tx = self._open.transaction()
        await tx.start()
        return tx

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` with asyncpg's failures translated. A call, not an awaitable: asyncpg
        refuses some calls at once (on a connection its pool took back when the socket
        closed), before there is anything to await."""
        try:
            return await call()
        except Exception as exc:
            translated = translate_pg(exc)
            if translated is exc:
                raise
            if isinstance(translated, DatabaseUnavailable):
                # Never reused (terminated on close); a COMMIT that fails so has an unknown
                # outcome: the caller retries (with its Idempotency-Key where there is one).
                self._broken = True
                await self._db.discard_siblings(exc)
            raise translated from exc

    async def first(self, statement: Executable, params: Params = None) -> Row | None:
        sql, args = self._db.compile(statement, params)
        row: Row | None = await self._call(lambda: self._open.fetchrow(sql, *args))
        return row

    async def all(self, statement: Executable, params: Params = None) -> list[Row]:
        sql, args = self._db.compile(statement, params)
        rows: list[Row] = await self._call(lambda: self._open.fetch(sql, *args))
        return rows

    async def execute(self, statement: Executable, params: Params = None) -> int:
        sql, args = self._db.compile(statement, params)
        return _rowcount(await self._call(lambda: self._open.execute(sql, *args)))

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        nested = await self._call(self._nested)
        try:
            with self._undoing():
                yield
        except BaseException:
            if not self._broken:  # a broken connection has no transaction left to undo
                await self._call(nested.rollback)
            raise
        await self._call(nested.commit)

    async def _nested(self) -> Any:
        nested = self._open.transaction()
        await nested.start()
        return nested

    async def commit(self) -> None:
        if self._tx is None:
            raise RuntimeError("a read-only connection has nothing to commit")
        tx, self._tx = self._tx, None
        await self._call(tx.commit)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if self._broken:
                conn.terminate()
            elif self._tx is not None and not conn.is_closed():
                tx, self._tx = self._tx, None
                await tx.rollback()
        except asyncpg.InterfaceError:
            # Its socket closed (the server went away) and the pool took it back already:
            # the proxy refuses every call, and there is nothing left to end.
            pass
        except Exception:  # a broken connection: the pool replaces it
            with contextlib.suppress(asyncpg.InterfaceError):
                conn.terminate()
        finally:
            await self._pool.release(conn)


# --- SQLite (and anything else) through SQLAlchemy ---------------------------------------


async def _sa_call(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except (DBAPIError, OSError, TimeoutError) as exc:
        translated = translate_sa(exc)
        if translated is exc:
            raise
        raise translated from exc


class SqlAlchemyDatabase(Database):
    """A database behind a SQLAlchemy engine (the embedded SQLite mode)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    async def connect(self, *, read_only: bool = False) -> Connection:
        conn = await _sa_call(self.engine.connect)
        connection = _SaConnection(conn, self.dialect)
        try:
            if read_only and self.dialect != "sqlite":
                await connection.call(
                    lambda: conn.execution_options(isolation_level="AUTOCOMMIT"))
            else:
                await connection.call(conn.begin)
        except BaseException:
            await connection.close()
            raise
        return connection

    async def dispose(self) -> None:
        await self.engine.dispose()


class _SaConnection(Connection):
    def __init__(self, conn: AsyncConnection, dialect: str) -> None:
        self._conn: AsyncConnection | None = conn
        self.dialect = dialect
        self._broken = False  # invalidated on close: the engine's pool never lends it again

    @property
    def _open(self) -> AsyncConnection:
        if self._conn is None:
            raise RuntimeError("connection used after close")
        return self._conn

    async def call(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call`` with the driver's failures translated; an unavailable database marks this
        connection broken."""
        try:
            return await _sa_call(call)
        except DatabaseUnavailable:
            self._broken = True
            raise

    async def first(self, statement: Executable, params: Params = None) -> Row | None:
        conn = self._open
        result = await self.call(lambda: conn.execute(statement, params))
        row = result.first()
        return None if row is None else cast(Row, row._mapping)

    async def all(self, statement: Executable, params: Params = None) -> list[Row]:
        conn = self._open
        result = await self.call(lambda: conn.execute(statement, params))
        return [cast(Row, row._mapping) for row in result.all()]

    async def execute(self, statement: Executable, params: Params = None) -> int:
        conn = self._open
        result = await self.call(lambda: conn.execute(statement, params))
        return int(result.rowcount)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        conn = self._open
        nested = await self.call(conn.begin_nested)
        try:
            with self._undoing():
                yield
        except BaseException:
            await self.call(nested.rollback)
            raise
        await self.call(nested.commit)

    async def commit(self) -> None:
        conn = self._open
        if not conn.in_transaction():
            raise RuntimeError("a read-only connection has nothing to commit")
        await self.call(conn.commit)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if self._broken:
                await conn.invalidate()
            elif conn.in_transaction():
                await conn.rollback()
        except Exception:  # the rollback of a connection that just broke: never reuse it
            with contextlib.suppress(Exception):
                await conn.invalidate()
        finally:
            await conn.close()


def open_database(target: DatabaseTarget, engine: AsyncEngine) -> Database:
    """asyncpg for PostgreSQL targets; ``engine`` (already made for ``target``) otherwise."""
    if engine.dialect.name == "postgresql":
        return PgDatabase(target)
    return SqlAlchemyDatabase(engine)
