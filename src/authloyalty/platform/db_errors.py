"""What a database driver's failure means for the caller, decided once for both drivers.

Three outcomes callers can act on, and one for the connection the failure happened on:

* :class:`IntegrityViolation` — a constraint refused the write (usually a concurrent twin);
* :class:`InvalidValue` — SQLSTATE class 22: a value of the request itself cannot be stored
  (422, the caller's mistake);
* :class:`DatabaseUnavailable` — the database cannot be reached or refuses work for now: a
  failover, a restart, a node that is no longer the leader, a lost connection (503 with
  ``Retry-After``, gRPC UNAVAILABLE; event consumers retry instead of dead-lettering).

A connection that failed with :class:`DatabaseUnavailable` is never used again. When the
failure says the *server* went away or changed role (:func:`server_lost`), the other idle
connections to it are dropped too, so that no later request meets one of them.

A COMMIT whose connection is lost is :class:`DatabaseUnavailable` as well: the write may or
may not have happened, and callers retry (with their ``Idempotency-Key`` where one applies).
"""

from __future__ import annotations

import asyncpg
from sqlalchemy.exc import DataError as SaDataError
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from authloyalty.platform.errors import DomainError, ErrorKind


class IntegrityViolation(Exception):
    """A constraint (unique key, check) refused the write."""


class InvalidValue(DomainError):
    """The database refused a value of the request itself (SQLSTATE class 22: a character it
    cannot store, a number out of range): the caller's mistake, not the server's. Input
    validation is meant to catch these first; this keeps a gap in it a 4xx, not a 500."""

    kind = ErrorKind.INVALID
    code = "invalid_value"
    default_message = "a value of the request cannot be stored"


class DatabaseUnavailable(DomainError):
    """The database cannot be reached, or refuses work for now (restart, failover, overload)."""

    kind = ErrorKind.UNAVAILABLE
    code = "database_unavailable"
    default_message = "the database is unavailable; retry shortly"
    retry_after = 1


# SQLSTATE classes and codes that say "not now" rather than "not this request":
# 08 connection exception, 40 transaction rollback (deadlock, serialization failure: nothing
# was applied), 53 insufficient resources (too many connections, out of memory or disk),
# 57 operator intervention (57P01 admin_shutdown, 57P02 crash_shutdown, 57P03
# cannot_connect_now, 57014 query_canceled, 57P04 database dropped, 57P05 idle session),
# 58 system error (I/O); 25006 read_only_sql_transaction is a node that is no longer (or not
# yet) the leader, 25P03 an idle transaction the server ended.
_UNAVAILABLE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_UNAVAILABLE_CODES = frozenset({"25006", "25P03"})
# Of those, the ones that say the server itself went away or is not the leader any more.
_SERVER_LOST_CODES = frozenset({"57P01", "57P02", "57P03", "25006"})

# Failures raised by the client side, with no SQLSTATE: the socket, the protocol, no host
# matching target_session_attrs (TargetServerAttributeNotMatched is an InternalClientError).
_CLIENT_SIDE: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.InternalClientError)
# asyncpg's InterfaceError is mostly our own misuse (wrong argument count, a connection used
# after release, two operations at once): only these say the connection or pool is gone.
_GONE_MESSAGES = ("connection is closed", "pool is closed", "pool is closing")


def _client_side(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a client-side failure of the connection, not of the statement."""
    if isinstance(exc, _CLIENT_SIDE):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and any(
        m in str(exc) for m in _GONE_MESSAGES)


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver failure (asyncpg's own, or one SQLAlchemy wrapped), if any."""
    for candidate in (exc, getattr(exc, "orig", None), exc.__cause__):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str) and len(code) == 5:
            return code
    return None


def _unavailable_state(code: str | None) -> bool:
    return code is not None and (code[:2] in _UNAVAILABLE_CLASSES or code in _UNAVAILABLE_CODES)


def server_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the server went away or is not the leader: every idle connection
    to it is suspect, not only the one that failed."""
    cause = exc.__cause__ if isinstance(exc, DatabaseUnavailable) else exc
    if cause is None or isinstance(cause, TimeoutError):
        return False  # a statement too slow says nothing of the other connections
    code = sqlstate_of(cause)
    if code is not None:
        return code[:2] == "08" or code in _SERVER_LOST_CODES
    orig = getattr(cause, "orig", None)
    return _client_side(cause) or _client_side(orig) or (
        isinstance(cause, DBAPIError) and cause.connection_invalidated)


def translate_pg(exc: BaseException) -> BaseException:
    """asyncpg's failure as one of ours; ``exc`` itself when it is none of them."""
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return IntegrityViolation(str(exc))
    if isinstance(exc, asyncpg.DataError):
        return InvalidValue()
    if _client_side(exc) or _unavailable_state(sqlstate_of(exc)):
        return DatabaseUnavailable()
    return exc


def translate_sa(exc: BaseException) -> BaseException:
    """SQLAlchemy's failure (SQLite, or PostgreSQL through its asyncpg dialect) as one of
    ours. PostgreSQL's failures are told apart by their SQLSTATE: the asyncpg dialect wraps
    most of them in the generic DBAPI ``Error``, not in the matching subclass."""
    code = sqlstate_of(exc)
    if isinstance(exc, IntegrityError) or (code is not None and code[:2] == "23"):
        return IntegrityViolation(str(getattr(exc, "orig", exc)))
    if isinstance(exc, SaDataError) or (code is not None and code[:2] == "22"):
        return InvalidValue()
    if _unavailable_state(code) or isinstance(
            exc, OperationalError | InterfaceError | OSError | TimeoutError) or (
            isinstance(exc, DBAPIError) and (
                exc.connection_invalidated or _client_side(exc.orig)
                or _client_side(exc.orig.__cause__ if exc.orig else None))):
        return DatabaseUnavailable()
    return exc
