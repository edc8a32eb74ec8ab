"""The audit log of admin actions, shared by sso and loyalty: one table definition, one
repository, one page reader.

A use case writes its row with the repository bound to its own unit of work, before it
commits: the action and its record commit together or not at all. Rows hold ids, amounts and
flags only, never personal data (no email, name or comment). Rows are read newest first; the
cursor is a row id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol
from uuid import UUID

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Uuid,
    insert,
    select,
)
from structlog.contextvars import get_contextvars

from authloyalty.platform.clock import as_utc
from authloyalty.platform.database import Connection
from authloyalty.platform.errors import ValidationFailed

# Who acted: an admin through the API (``actor_id`` is their user id), or an operator at the
# command line (``authloyalty admin ...``, the start-up admin of ``authloyalty up``), whom no
# user id stands for (``actor_id`` is None).
ActorKind = Literal["admin", "cli"]
# Flags, counts, amounts and ids: nothing personal.
Outcome = Mapping[str, int | bool | str | None]

REQUEST_ID_MAX = 128  # the longest X-Request-Id the middleware accepts


def audit_table(metadata: MetaData) -> Table:
    """The ``audit_log`` table definition, added to a service's metadata."""
    return Table(
        "audit_log",
        metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
               autoincrement=True),
        Column("at", DateTime(timezone=True), nullable=False),
        Column("actor_id", Uuid, nullable=True),
        Column("actor_kind", String(16), nullable=False),
        Column("action", String(64), nullable=False),
        Column("target_id", Uuid, nullable=False),
        Column("request_id", String(REQUEST_ID_MAX), nullable=True),
        Column("outcome", JSON, nullable=False),
        Index("ix_audit_log_actor", "actor_id", "id"),
        Index("ix_audit_log_target", "target_id", "id"),
    )


def current_request_id() -> str | None:
    """The request id the HTTP middleware bound for this request (None outside one: gRPC,
    the command line, background work)."""
    value = get_contextvars().get("request_id")
    return value[:REQUEST_ID_MAX] if isinstance(value, str) else None


@dataclass(frozen=True)
class AuditRecord:
    """One admin action: who, what, on which user or account, when, and what came of it."""

    actor_id: UUID | None
    actor_kind: ActorKind
    action: str
    target_id: UUID
    outcome: Outcome
    at: datetime
    request_id: str | None

    @classmethod
    def by_admin(cls, admin_id: UUID, action: str, target_id: UUID, outcome: Outcome,
                 at: datetime) -> AuditRecord:
        """An action of the admin ``admin_id``, in the current request."""
        return cls(admin_id, "admin", action, target_id, outcome, at, current_request_id())

    @classmethod
    def by_cli(cls, action: str, target_id: UUID, outcome: Outcome,
               at: datetime) -> AuditRecord:
        """An action taken at the command line."""
        return cls(None, "cli", action, target_id, outcome, at, current_request_id())


@dataclass(frozen=True)
class AuditEntry:
    """A stored :class:`AuditRecord` and its id (which orders the log)."""

    id: int
    record: AuditRecord


@dataclass(frozen=True)
class AuditQuery:
    """Rows of one actor and/or about one target; neither means every row."""

    actor_id: UUID | None = None
    target_id: UUID | None = None


@dataclass(frozen=True)
class AuditPage:
    """A page of the log, newest first, and the cursor of the next one."""

    items: list[AuditEntry]
    next_cursor: str | None


class AuditLog(Protocol):
    """The audit log, bound to a unit of work."""

    async def add(self, record: AuditRecord) -> int:
        """Append ``record`` in the unit of work's transaction; its id."""

    async def page(self, query: AuditQuery, limit: int, before_id: int | None
                   ) -> list[AuditEntry]:
        """Rows matching ``query`` with ids below ``before_id``, newest first."""


class SqlAuditLog:
    """:class:`AuditLog` over a service's ``audit_log`` table."""

    def __init__(self, db: Connection, table: Table) -> None:
        self._db = db
        self._table = table

    async def add(self, record: AuditRecord) -> int:
        """Append ``record`` in the connection's transaction; its id."""
        t = self._table
        new_id = await self._db.scalar(insert(t).returning(t.c.id), {
            "at": record.at, "actor_id": record.actor_id, "actor_kind": record.actor_kind,
            "action": record.action, "target_id": record.target_id,
            "request_id": record.request_id, "outcome": dict(record.outcome)})
        return int(new_id)

    async def page(self, query: AuditQuery, limit: int, before_id: int | None
                   ) -> list[AuditEntry]:
        """Rows matching ``query`` with ids below ``before_id``, newest first."""
        t = self._table
        statement = select(t).order_by(t.c.id.desc()).limit(limit)
        if query.actor_id is not None:
            statement = statement.where(t.c.actor_id == query.actor_id)
        if query.target_id is not None:
            statement = statement.where(t.c.target_id == query.target_id)
        if before_id is not None:
            statement = statement.where(t.c.id < before_id)
        return [_entry(row) for row in await self._db.all(statement, {})]


def _entry(row: Mapping[str, Any]) -> AuditEntry:
    return AuditEntry(int(row["id"]), AuditRecord(
        actor_id=row["actor_id"], actor_kind=row["actor_kind"], action=row["action"],
        target_id=row["target_id"], outcome=dict(row["outcome"]), at=as_utc(row["at"]),
        request_id=row["request_id"]))


_CURSOR = re.compile(r"[0-9]{1,18}")  # ASCII digits only, always within a 64-bit id


def parse_cursor(cursor: str | None) -> int | None:
    """The row id a ``next_cursor`` stands for; anything else is refused (422)."""
    if cursor is None or cursor == "":
        return None
    if not _CURSOR.fullmatch(cursor):
        raise ValidationFailed("cursor: not a cursor returned by this API")
    return int(cursor)


async def read_page(log: AuditLog, query: AuditQuery, limit: int,
                    cursor: str | None) -> AuditPage:
    """One page of ``log`` after ``cursor``."""
    found = await log.page(query, limit + 1, parse_cursor(cursor))
    more = len(found) > limit
    found = found[:limit]
    return AuditPage(found, str(found[-1].id) if more and found else None)
