"""Transactional outbox: events written with the change that caused them, relayed later.

Delivery state per row follows the original design's ``message_status``: ``in_progress``
(written, not yet confirmed), ``successful`` and ``failed`` (retried after a backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
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
    Text,
    Uuid,
    bindparam,
    func,
    select,
    update,
)

from authloyalty.platform import metrics
from authloyalty.platform.database import Database, Session
from authloyalty.platform.db import as_utc, utcnow
from authloyalty.platform.events import Event, EventPublisher

log = logging.getLogger(__name__)

IN_PROGRESS = "in_progress"
SUCCESSFUL = "successful"
FAILED = "failed"


def outbox_table(metadata: MetaData) -> Table:
    """The outbox table definition, added to a service's metadata."""
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
               autoincrement=True),
        Column("event_id", Uuid, nullable=False, unique=True),
        Column("event_type", String(64), nullable=False),
        Column("event_key", String(128), nullable=False),
        Column("payload", JSON, nullable=False),
        Column("headers", JSON, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("status", String(16), nullable=False, default=IN_PROGRESS),
        Column("attempts", Integer, nullable=False, default=0),
        Column("last_error", Text, nullable=True),
        Column("next_attempt_at", DateTime(timezone=True), nullable=False),
        Column("published_at", DateTime(timezone=True), nullable=True),
        Index("ix_outbox_due", "status", "next_attempt_at"),
    )


@dataclass(frozen=True)
class OutboxRow:
    """An outbox row as the relay sees it."""

    id: int
    event: Event
    attempts: int


class OutboxWriter:
    """Appends events inside the caller's transaction."""

    def __init__(self, session: Session, table: Table) -> None:
        self._db = session
        self._insert = _statements(table).insert

    async def add(self, event: Event) -> None:
        """Stage ``event``; it becomes visible to the relay when the transaction commits."""
        await self._db.execute(self._insert, {
            "event_id": event.id, "event_type": event.type, "event_key": event.key,
            "payload": dict(event.data), "headers": dict(event.headers),
            "created_at": event.occurred_at, "status": IN_PROGRESS, "attempts": 0,
            "next_attempt_at": event.occurred_at})


@dataclass(frozen=True)
class _Statements:
    insert: Any
    due: Any
    due_locked: Any  # FOR UPDATE SKIP LOCKED (PostgreSQL)
    delivered: Any
    failed: Any
    backlog: Any


_STATEMENTS: dict[int, _Statements] = {}


def _statements(table: Table) -> _Statements:
    """The outbox's statements for ``table``, built once."""
    built = _STATEMENTS.get(id(table))
    if built is None:
        t = table
        due = (select(t.c.id, t.c.event_id, t.c.event_type, t.c.event_key, t.c.payload,
                      t.c.headers, t.c.created_at, t.c.attempts)
               .where(t.c.status != SUCCESSFUL, t.c.next_attempt_at <= bindparam("b_now"))
               .order_by(t.c.id).limit(bindparam("b_limit")))
        by_id = update(t).where(t.c.id == bindparam("b_id"))
        built = _Statements(
            insert=t.insert(),
            due=due,
            due_locked=due.with_for_update(skip_locked=True),
            delivered=by_id.values(status=SUCCESSFUL, published_at=bindparam("b_now"),
                                   attempts=bindparam("b_attempts"), last_error=None),
            failed=by_id.values(status=FAILED, attempts=bindparam("b_attempts"),
                                last_error=bindparam("b_error"),
                                next_attempt_at=bindparam("b_next")),
            backlog=select(func.count().label("n"), func.min(t.c.created_at).label("oldest"))
            .where(t.c.status != SUCCESSFUL),
        )
        _STATEMENTS[id(table)] = built
    return built


def backoff(attempts: int, cap_seconds: float) -> float:
    """Exponential backoff after ``attempts`` failures: 0.5 s, 1 s, 2 s … up to the cap."""
    return float(min(cap_seconds, 0.5 * (2 ** max(0, attempts - 1))))


class OutboxRelay:
    """Publishes due outbox rows and records each delivery's outcome.

    The batch is selected ``FOR UPDATE SKIP LOCKED`` (PostgreSQL) and stays locked while it is
    published, so two relays never publish the same row at once; SQLite transactions are
    serialised by their write lock. Rows are chosen by state, not by a high-water mark, so a row
    whose transaction committed late is still picked up by the next pass.
    """

    def __init__(
        self,
        database: Database,
        table: Table,
        publisher: EventPublisher,
        *,
        batch_size: int = 100,
        poll_interval: float = 0.5,
        max_backoff: float = 60.0,
        service: str = "sso",
    ) -> None:
        self._database = database
        self._sql = _statements(table)
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._max_backoff = max_backoff
        self._service = service
        self._wakeup = asyncio.Event()

    def notify(self) -> None:
        """Ask for a pass now (called after a transaction that wrote events commits)."""
        self._wakeup.set()

    async def run_once(self) -> int:
        """Publish one batch of due rows; return how many were attempted."""
        query = self._sql.due_locked if self._database.dialect == "postgresql" else self._sql.due
        async with self._database.transaction() as session:
            found = await session.all(query, {"b_now": utcnow(), "b_limit": self._batch_size})
            rows = [_row(r) for r in found]
            if not rows:
                return 0
            results = await self._publisher.publish([r.event for r in rows])
            await self._record(session, rows, results)
        return len(rows)

    async def _record(
        self, session: Session, rows: Sequence[OutboxRow], results: Sequence[str | None]
    ) -> None:
        now = utcnow()
        for row, error in zip(rows, results, strict=True):
            attempts = row.attempts + 1
            if error is None:
                await session.execute(self._sql.delivered, {
                    "b_id": row.id, "b_now": now, "b_attempts": attempts})
                metrics.OUTBOX_PUBLISHED.labels(self._service, "success").inc()
            else:
                delay = timedelta(seconds=backoff(attempts, self._max_backoff))
                await session.execute(self._sql.failed, {
                    "b_id": row.id, "b_attempts": attempts, "b_error": error[:2000],
                    "b_next": now + delay})
                metrics.OUTBOX_PUBLISHED.labels(self._service, "failure").inc()

    async def backlog(self) -> tuple[int, float]:
        """Number of undelivered rows and the age in seconds of the oldest one."""
        session = await self._database.session(read_only=True)
        try:
            row = await session.first(self._sql.backlog)
        finally:
            await session.close()
        assert row is not None  # an aggregate always has a row
        count, oldest = row["n"], row["oldest"]
        age = (utcnow() - as_utc(oldest)).total_seconds() if oldest is not None else 0.0
        return int(count), age

    async def run_forever(self) -> None:
        """Relay until cancelled; a failing pass is logged and retried, never fatal."""
        measured = float("-inf")
        while True:
            # Cleared before the pass: a commit during the pass wakes the next wait at once.
            self._wakeup.clear()
            try:
                while await self.run_once() >= self._batch_size:
                    pass
                if time.monotonic() - measured >= 1.0:
                    count, age = await self.backlog()
                    metrics.OUTBOX_PENDING.labels(self._service).set(count)
                    metrics.OUTBOX_OLDEST_AGE.labels(self._service).set(age)
                    measured = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay pass failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self._poll_interval)


def _row(r: Mapping[str, Any]) -> OutboxRow:
    payload = r["payload"]
    payload = payload if isinstance(payload, dict) else json.loads(payload)
    event_id = r["event_id"]
    created = r["created_at"]
    event = Event(
        id=event_id if isinstance(event_id, UUID) else UUID(str(event_id)),
        type=r["event_type"],
        key=r["event_key"],
        data=payload,
        occurred_at=as_utc(created) if isinstance(created, datetime) else created,
        headers=r["headers"] or {},
    )
    return OutboxRow(id=r["id"], event=event, attempts=r["attempts"])
