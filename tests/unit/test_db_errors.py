"""Driver failures → what callers see: every failover symptom is DatabaseUnavailable (503,
UNAVAILABLE), on asyncpg directly and through SQLAlchemy; a bad value stays InvalidValue (422)
and a constraint stays IntegrityViolation."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import DBAPIError, OperationalError

from authloyalty.platform.db_errors import (
    DatabaseUnavailable,
    IntegrityViolation,
    InvalidValue,
    server_lost,
    translate_pg,
    translate_sa,
)
from authloyalty.platform.errors import ErrorKind
from authloyalty.platform.grpc import GRPC_STATUS
from authloyalty.platform.http.errors import HTTP_STATUS

# What a failover shows a client, by SQLSTATE (asyncpg's class for each).
FAILOVER_STATES: list[tuple[type[Exception], str]] = [
    (asyncpg.ReadOnlySQLTransactionError, "25006"),  # a node that is no longer the leader
    (asyncpg.AdminShutdownError, "57P01"),  # the server was shut down or the backend killed
    (asyncpg.CrashShutdownError, "57P02"),
    (asyncpg.CannotConnectNowError, "57P03"),  # starting up, in recovery, shutting down
    (asyncpg.PostgresConnectionError, "08000"),
    (asyncpg.ConnectionDoesNotExistError, "08003"),  # lost mid-statement, or during COMMIT
    (asyncpg.ConnectionFailureError, "08006"),
    (asyncpg.ConnectionRejectionError, "08004"),
    (asyncpg.ProtocolViolationError, "08P01"),
    (asyncpg.TooManyConnectionsError, "53300"),
    (asyncpg.QueryCanceledError, "57014"),
    (asyncpg.DatabaseDroppedError, "57P04"),
    (asyncpg.IdleSessionTimeoutError, "57P05"),
    (asyncpg.IdleInTransactionSessionTimeoutError, "25P03"),
    (asyncpg.SerializationError, "40001"),
    (asyncpg.DeadlockDetectedError, "40P01"),
    (asyncpg.PostgresSystemError, "58000"),
]
# Raised by the client side, without a SQLSTATE.
CLIENT_SIDE: list[BaseException] = [
    ConnectionRefusedError(111, "refused"),  # no leader: HAProxy's port, or a node, refuses
    ConnectionResetError(104, "reset by peer"),  # HAProxy cut the session (shutdown-sessions)
    OSError(113, "no route to host"),
    TimeoutError(),
    asyncpg.InterfaceError("connection is closed"),
    asyncpg.InternalClientError("unexpected message"),
    asyncpg.TargetServerAttributeNotMatched('None of the hosts match "read-write"'),
]


def wrapped_by_sqlalchemy(exc: Exception) -> DBAPIError:
    """``exc`` as SQLAlchemy's asyncpg dialect hands it over (see its error translation)."""
    dbapi = AsyncAdapt_asyncpg_dbapi(asyncpg)  # type: ignore[no-untyped-call]
    adapted: Exception = dbapi.Error(str(exc))
    for cls in type(exc).__mro__:
        if cls in dbapi._asyncpg_error_translate:
            adapted = dbapi._asyncpg_error_translate[cls](str(exc))
            break
    adapted.pgcode = adapted.sqlstate = getattr(exc, "sqlstate", None)  # type: ignore[attr-defined]
    try:
        raise adapted from exc
    except Exception as orig:
        wrapped = DBAPIError.instance("SELECT 1", None, orig, dbapi.Error)
    assert isinstance(wrapped, DBAPIError)
    return wrapped


@pytest.mark.parametrize(("cls", "state"), FAILOVER_STATES,
                         ids=[state for _, state in FAILOVER_STATES])
def test_failover_sqlstates_are_unavailable_on_both_drivers(cls: type[Exception],
                                                            state: str) -> None:
    exc = cls("server says no")
    assert getattr(exc, "sqlstate", None) == state
    assert isinstance(translate_pg(exc), DatabaseUnavailable)
    assert isinstance(translate_sa(wrapped_by_sqlalchemy(exc)), DatabaseUnavailable)


@pytest.mark.parametrize("exc", CLIENT_SIDE, ids=lambda e: type(e).__name__)
def test_lost_connections_are_unavailable_on_both_drivers(exc: Exception) -> None:
    assert isinstance(translate_pg(exc), DatabaseUnavailable)
    assert isinstance(translate_sa(exc if isinstance(exc, OSError)
                                   else wrapped_by_sqlalchemy(exc)), DatabaseUnavailable)


def test_unavailable_is_503_with_retry_after_and_grpc_unavailable() -> None:
    error = DatabaseUnavailable()
    assert error.code == "database_unavailable"
    assert error.retry_after == 1
    assert HTTP_STATUS[error.kind] == 503
    assert GRPC_STATUS[error.kind].name == "UNAVAILABLE"


@pytest.mark.parametrize("cls", [asyncpg.StringDataRightTruncationError,
                                 asyncpg.NumericValueOutOfRangeError,
                                 asyncpg.CharacterNotInRepertoireError,
                                 asyncpg.InvalidTextRepresentationError])
def test_class_22_is_still_invalid_value(cls: type[Exception]) -> None:
    exc = cls("bad value")
    assert getattr(exc, "sqlstate", "")[:2] == "22"
    for translated in (translate_pg(exc), translate_sa(wrapped_by_sqlalchemy(exc))):
        assert isinstance(translated, InvalidValue)
        assert translated.kind is ErrorKind.INVALID


@pytest.mark.parametrize("cls", [asyncpg.UniqueViolationError, asyncpg.CheckViolationError,
                                 asyncpg.ForeignKeyViolationError])
def test_constraints_are_still_integrity_violations(cls: type[Exception]) -> None:
    exc = cls("duplicate key value violates unique constraint")
    assert isinstance(translate_pg(exc), IntegrityViolation)
    assert isinstance(translate_sa(wrapped_by_sqlalchemy(exc)), IntegrityViolation)


@pytest.mark.parametrize("cls", [asyncpg.UndefinedTableError, asyncpg.PostgresSyntaxError])
def test_our_own_mistakes_are_not_hidden_as_unavailable(cls: type[Exception]) -> None:
    # A bug must surface as one (500, logged), not as a retryable outage.
    exc = cls("relation does not exist")
    assert translate_pg(exc) is exc
    wrapped = wrapped_by_sqlalchemy(exc)
    assert translate_sa(wrapped) is wrapped


def test_sqlite_busy_or_gone_is_unavailable() -> None:
    locked = OperationalError("BEGIN IMMEDIATE", None, Exception("database is locked"))
    assert isinstance(translate_sa(locked), DatabaseUnavailable)


@pytest.mark.parametrize(("exc", "lost"), [
    (asyncpg.AdminShutdownError("terminating connection due to administrator command"), True),
    (asyncpg.CannotConnectNowError("the database system is starting up"), True),
    (asyncpg.ReadOnlySQLTransactionError("read-only transaction"), True),
    (asyncpg.ConnectionDoesNotExistError("connection was closed in the middle"), True),
    (ConnectionResetError(104, "reset"), True),
    (asyncpg.InterfaceError("connection is closed"), True),
    # Not the server's fault: the other connections stay.
    (asyncpg.SerializationError("could not serialize access"), False),
    (asyncpg.QueryCanceledError("canceling statement due to statement timeout"), False),
    (TimeoutError(), False),
])
def test_server_lost_tells_a_gone_or_demoted_server_from_a_refused_statement(
        exc: Exception, lost: bool) -> None:
    assert server_lost(exc) is lost
    translated = translate_pg(exc)
    translated.__cause__ = exc
    assert server_lost(translated) is lost


@pytest.mark.parametrize("message", [
    "the server expects 2 arguments for this query, 1 was passed",
    "cannot perform operation: another operation is in progress",
    "cannot call Connection.fetch(): connection has been released back to the pool",
])
def test_misusing_the_driver_is_a_bug_not_an_outage(message: str) -> None:
    # asyncpg says so with an InterfaceError; it must stay a 500 and keep the pool's connections.
    exc = asyncpg.InterfaceError(message)
    assert translate_pg(exc) is exc
    assert not server_lost(exc)


@pytest.mark.parametrize("message", ["connection is closed", "pool is closed"])
def test_a_closed_connection_or_pool_is_unavailable(message: str) -> None:
    exc = asyncpg.InterfaceError(message)
    assert isinstance(translate_pg(exc), DatabaseUnavailable)
    assert isinstance(translate_sa(wrapped_by_sqlalchemy(exc)), DatabaseUnavailable)
