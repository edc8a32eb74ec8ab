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
from collections.abc import Sequence
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
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from authloyalty.platform import metrics
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

    def __init__(self, conn: AsyncConnection, table: Table) -> None:
        self._conn = conn
        self._table = table

    async def add(self, event: Event) -> None:
        """Stage ``event``; it becomes visible to the relay when the transaction commits."""
        await self._conn.execute(
            self._table.insert().values(
                event_id=event.id,
                event_type=event.type,
                event_key=event.key,
                payload=dict(event.data),
                headers=dict(event.headers),
                created_at=event.occurred_at,
                status=IN_PROGRESS,
                attempts=0,
                next_attempt_at=event.occurred_at,
            )
        )


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
        engine: AsyncEngine,
        table: Table,
        publisher: EventPublisher,
        *,
        batch_size: int = 100,
        poll_interval: float = 0.5,
        max_backoff: float = 60.0,
        service: str = "sso",
    ) -> None:
        self._engine = engine
        self._table = table
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
        now = utcnow()
        t = self._table
        async with self._engine.begin() as conn:
            query = (
                select(t.c.id, t.c.event_id, t.c.event_type, t.c.event_key, t.c.payload,
                       t.c.headers, t.c.created_at, t.c.attempts)
                .where(t.c.status != SUCCESSFUL, t.c.next_attempt_at <= now)
                .order_by(t.c.id)
                .limit(self._batch_size)
            )
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = [_row(r) for r in (await conn.execute(query)).all()]
            if not rows:
                return 0
            results = await self._publisher.publish([r.event for r in rows])
            await self._record(conn, rows, results)
        return len(rows)

    async def _record(
        self, conn: AsyncConnection, rows: Sequence[OutboxRow], results: Sequence[str | None]
    ) -> None:
        now = utcnow()
        t = self._table
        for row, error in zip(rows, results, strict=True):
            attempts = row.attempts + 1
            if error is None:
                values: dict[str, Any] = {"status": SUCCESSFUL, "published_at": now,
                                          "attempts": attempts, "last_error": None}
                metrics.OUTBOX_PUBLISHED.labels(self._service, "success").inc()
            else:
                delay = timedelta(seconds=backoff(attempts, self._max_backoff))
                values = {"status": FAILED, "attempts": attempts, "last_error": error[:2000],
                          "next_attempt_at": now + delay}
                metrics.OUTBOX_PUBLISHED.labels(self._service, "failure").inc()
            await conn.execute(update(t).where(t.c.id == row.id).values(**values))

    async def backlog(self) -> tuple[int, float]:
        """Number of undelivered rows and the age in seconds of the oldest one."""
        t = self._table
        from sqlalchemy import func

        async with self._engine.connect() as conn:
            count, oldest = (
                await conn.execute(
                    select(func.count(), func.min(t.c.created_at)).where(t.c.status != SUCCESSFUL)
                )
            ).one()
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


def _row(r: Any) -> OutboxRow:
    payload = r.payload if isinstance(r.payload, dict) else json.loads(r.payload)
    event = Event(
        id=r.event_id if isinstance(r.event_id, UUID) else UUID(str(r.event_id)),
        type=r.event_type,
        key=r.event_key,
        data=payload,
        occurred_at=as_utc(r.created_at) if isinstance(r.created_at, datetime) else r.created_at,
        headers=r.headers or {},
    )
    return OutboxRow(id=r.id, event=event, attempts=r.attempts)
