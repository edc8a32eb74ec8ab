"""Transactional outbox: events written with the change that caused them, relayed later.

Delivery state per row follows the original design's ``message_status``: ``in_progress``
(written, not yet confirmed), ``successful`` and ``failed`` (retried after a backoff).

A row holds the event's name (``event_type``), its key and its fields as JSON (``payload``:
UUIDs as text, datetimes in ISO 8601, :func:`~authloyalty.platform.bus.event_payload`); the
relay rebuilds the typed event from them through the service's event table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
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
from authloyalty.platform.bus import (
    Envelope,
    EventPublisher,
    StreamingPublisher,
    event_from_payload,
    event_payload,
)
from authloyalty.platform.clock import as_utc, utcnow
from authloyalty.platform.database import Connection, Database, DatabaseUnavailable
from authloyalty.platform.kafka_codec import OutgoingTable

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
    event: Envelope[Any]
    attempts: int


class OutboxWriter:
    """Appends events inside the caller's transaction.

    Given the ``relay`` of this process and the unit of work's ``on_commit``, a row is written
    already leased to that relay (when it is running and streaming, see
    :meth:`OutboxRelay.lease_for_hand_over`) and handed to it as soon as the transaction
    commits: the relay publishes it without a claim transaction of its own. Should this
    process die in between, the row is published by any relay once the lease runs out. A row
    written in a savepoint that rolls back is not handed over (``on_savepoint_rollback``).
    """

    def __init__(self, db: Connection, table: Table, events: OutgoingTable, *,
                 relay: OutboxRelay | None = None,
                 on_commit: Callable[[Callable[[], None]], None] | None = None) -> None:
        self._db = db
        sql = _statements(table)
        self._insert, self._insert_returning = sql.insert, sql.insert_returning
        self._events = events
        self._relay = (relay, on_commit) if relay is not None and on_commit is not None else None
        self._handed: list[OutboxRow] = []
        self._notifies = False

    async def add(self, envelope: Envelope[Any]) -> None:
        """Stage ``envelope``; it becomes visible to the relay when the transaction commits."""
        event = envelope.event
        params = {
            "event_id": envelope.id, "event_type": event.name,
            "event_key": self._events.key(event), "payload": event_payload(event),
            "headers": dict(envelope.headers), "created_at": envelope.occurred_at,
            "status": IN_PROGRESS, "attempts": 0, "next_attempt_at": envelope.occurred_at}
        if self._relay is None:
            await self._db.execute(self._insert, params)
            return
        relay, on_commit = self._relay
        lease = relay.lease_for_hand_over()
        if lease is None:  # due at once: the relay's next pass claims it
            await self._db.execute(self._insert, params)
            if not self._notifies:
                on_commit(relay.notify)
                self._notifies = True
            return
        params["next_attempt_at"] = lease
        row_id = await self._db.scalar(self._insert_returning, params)
        if not self._handed:
            on_commit(partial(relay.hand_over, self._handed))
        row = OutboxRow(id=int(row_id), event=envelope, attempts=0)
        self._handed.append(row)
        self._db.on_savepoint_rollback(partial(self._handed.remove, row))


@dataclass(frozen=True)
class _Statements:
    insert: Any
    insert_returning: Any
    due: Any
    due_locked: Any  # FOR UPDATE SKIP LOCKED (PostgreSQL)
    delivered: Any
    failed: Any
    claimed: Any  # leased to one relay while its publication is under way
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
            insert_returning=t.insert().returning(t.c.id),
            due=due,
            due_locked=due.with_for_update(skip_locked=True),
            delivered=by_id.values(status=SUCCESSFUL, published_at=bindparam("b_now"),
                                   attempts=bindparam("b_attempts"), last_error=None),
            failed=by_id.values(status=FAILED, attempts=bindparam("b_attempts"),
                                last_error=bindparam("b_error"),
                                next_attempt_at=bindparam("b_next")),
            claimed=by_id.values(next_attempt_at=bindparam("b_next")),
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

    Rows are chosen by state, not by a high-water mark, so a row whose transaction committed
    late is still picked up by the next pass. Two ways to publish:

    * a plain :class:`EventPublisher` (the in-process bus): the batch is selected ``FOR UPDATE
      SKIP LOCKED`` (PostgreSQL) and stays locked while it is published, so two relays never
      publish the same row at once (SQLite transactions are serialised by their write lock);
    * a :class:`StreamingPublisher` (Kafka): :meth:`run_forever` claims due rows in a short
      transaction by moving their ``next_attempt_at`` past the publisher's delivery timeout
      (a lease: other relays skip them, and they become due again if this relay dies), hands
      them to the publisher and goes on claiming, while each row is marked delivered (or
      failed) as soon as its own acknowledgement arrives. One event whose partition has no
      leader holds back nothing but itself.
    """

    def __init__(
        self,
        database: Database,
        table: Table,
        events: OutgoingTable,
        publisher: EventPublisher,
        *,
        batch_size: int = 100,
        poll_interval: float = 0.5,
        max_backoff: float = 60.0,
        service: str = "sso",
        lease_seconds: float = 30.0,
        max_in_flight: int | None = None,
    ) -> None:
        self._database = database
        self._sql = _statements(table)
        self._events = events
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._max_backoff = max_backoff
        self._service = service
        self._wakeup = asyncio.Event()
        self._streaming = publisher if isinstance(publisher, StreamingPublisher) else None
        self._lease = timedelta(seconds=lease_seconds)
        self._max_in_flight = max_in_flight or 10 * batch_size
        self._in_flight: set[int] = set()
        self._outcomes: asyncio.Queue[tuple[OutboxRow, str | None]] = asyncio.Queue()
        self._running = False
        self._handed: list[OutboxRow] = []
        self._claim_wanted = True  # rows may be due: the next pass looks for them

    def notify(self) -> None:
        """Ask for a pass now (called after a transaction that wrote due events commits)."""
        self._claim_wanted = True
        self._wakeup.set()

    def lease_for_hand_over(self) -> datetime | None:
        """Until when a row written now stays this relay's, to be handed over at commit
        (:meth:`hand_over`); ``None`` when this relay takes no rows over (it is not running,
        or publishes in batches to a plain :class:`EventPublisher`): write the row due."""
        if not self._running or self._streaming is None:
            return None
        return utcnow() + self._lease

    def hand_over(self, rows: Sequence[OutboxRow]) -> None:
        """Publish ``rows``, committed under a lease from :meth:`lease_for_hand_over`, without
        claiming them first (they are not due for any other relay until the lease ends)."""
        if self._running:
            self._handed.extend(rows)
            self._wakeup.set()

    async def run_once(self) -> int:
        """Publish one batch of due rows and record the outcomes; return how many were
        attempted."""
        if self._streaming is not None:
            rows = await self._claim(self._batch_size)
            if rows:
                futures = await self._streaming.send([r.event for r in rows])
                results = list(await asyncio.gather(*futures))
                async with self._database.transaction() as db:
                    await self._record(db, rows, results)
            return len(rows)
        query = self._due_query()
        async with self._database.transaction() as db:
            found = await db.all(query, {"b_now": utcnow(), "b_limit": self._batch_size})
            rows = [self._row(r) for r in found]
            if not rows:
                return 0
            results = await self._publisher.publish([r.event for r in rows])
            await self._record(db, rows, results)
        return len(rows)

    def _due_query(self) -> Any:
        return self._sql.due_locked if self._database.dialect == "postgresql" else self._sql.due

    async def _claim(self, limit: int) -> list[OutboxRow]:
        """Lease up to ``limit`` due rows to this relay (see the class docstring)."""
        now = utcnow()
        async with self._database.transaction() as db:
            found = await db.all(self._due_query(), {"b_now": now, "b_limit": limit})
            rows = [row for row in map(self._row, found) if row.id not in self._in_flight]
            for row in rows:
                await db.execute(self._sql.claimed, {"b_id": row.id,
                                                          "b_next": now + self._lease})
        return rows

    async def _stream(self) -> None:
        """Send the rows handed over, then claim and hand out due rows until none is due or
        too many are in flight."""
        if self._handed:
            handed, self._handed = self._handed, []
            await self._send(handed)
        if not self._claim_wanted:
            return  # woken for rows handed over only: nothing else became due
        self._claim_wanted = False  # a commit from now on asks for another pass
        try:
            while len(self._in_flight) < self._max_in_flight:
                room = self._max_in_flight - len(self._in_flight)
                rows = await self._claim(min(self._batch_size, room))
                if not rows:
                    return
                await self._send(rows)
                if len(rows) < self._batch_size:
                    return
        except BaseException:
            self._claim_wanted = True
            raise

    async def _send(self, rows: list[OutboxRow]) -> None:
        """Hand ``rows`` (leased to this relay) to the publisher; each is recorded as its own
        acknowledgement arrives."""
        assert self._streaming is not None
        self._in_flight.update(r.id for r in rows)
        try:
            futures = await self._streaming.send([r.event for r in rows])
        except Exception:
            self._in_flight.difference_update(r.id for r in rows)  # due again at lease end
            raise
        for row, future in zip(rows, futures, strict=True):
            future.add_done_callback(partial(self._outcome, row))

    def _outcome(self, row: OutboxRow, future: asyncio.Future[str | None]) -> None:
        result = "publication cancelled" if future.cancelled() else future.result()
        self._outcomes.put_nowait((row, result))

    async def _record_outcomes(self) -> None:
        """Mark rows as their acknowledgements arrive (those that arrive together, together)."""
        while True:
            outcomes = [await self._outcomes.get()]
            while not self._outcomes.empty():
                outcomes.append(self._outcomes.get_nowait())
            rows = [row for row, _ in outcomes]
            was_full = len(self._in_flight) >= self._max_in_flight
            try:
                async with self._database.transaction() as db:
                    await self._record(db, rows, [result for _, result in outcomes])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("recording %d deliveries failed; retrying", len(rows))
                for outcome in outcomes:
                    self._outcomes.put_nowait(outcome)
                await asyncio.sleep(0.5)
                continue
            self._in_flight.difference_update(r.id for r in rows)
            if was_full or any(result is not None for _, result in outcomes):
                self.notify()  # room for more, or failed rows that may be due again soon

    async def _record(
        self, db: Connection, rows: Sequence[OutboxRow], results: Sequence[str | None]
    ) -> None:
        now = utcnow()
        for row, error in zip(rows, results, strict=True):
            attempts = row.attempts + 1
            if error is None:
                await db.execute(self._sql.delivered, {
                    "b_id": row.id, "b_now": now, "b_attempts": attempts})
                metrics.OUTBOX_PUBLISHED.labels(self._service, "success").inc()
                metrics.OUTBOX_DELIVERY.labels(self._service).observe(
                    max(0.0, (now - as_utc(row.event.occurred_at)).total_seconds()))
            else:
                delay = timedelta(seconds=backoff(attempts, self._max_backoff))
                await db.execute(self._sql.failed, {
                    "b_id": row.id, "b_attempts": attempts, "b_error": error[:2000],
                    "b_next": now + delay})
                metrics.OUTBOX_PUBLISHED.labels(self._service, "failure").inc()

    async def backlog(self) -> tuple[int, float]:
        """Number of undelivered rows and the age in seconds of the oldest one."""
        db = await self._database.connect(read_only=True)
        try:
            row = await db.first(self._sql.backlog)
        finally:
            await db.close()
        assert row is not None  # an aggregate always has a row
        count, oldest = row["n"], row["oldest"]
        age = (utcnow() - as_utc(oldest)).total_seconds() if oldest is not None else 0.0
        return int(count), age

    def _row(self, r: Mapping[str, Any]) -> OutboxRow:
        """An outbox row as the relay sees it; the payload of a row written before the
        events were typed reads the same (the JSON shape has not changed)."""
        payload = r["payload"]
        payload = payload if isinstance(payload, dict) else json.loads(payload)
        event_id = r["event_id"]
        created = r["created_at"]
        envelope = Envelope(
            event_from_payload(self._events.event_type(r["event_type"]), payload),
            id=event_id if isinstance(event_id, UUID) else UUID(str(event_id)),
            occurred_at=as_utc(created) if isinstance(created, datetime) else created,
            headers=r["headers"] or {},
        )
        return OutboxRow(id=r["id"], event=envelope, attempts=r["attempts"])

    async def run_forever(self) -> None:
        """Relay until cancelled; a failing pass is logged and retried, never fatal."""
        recorder = (asyncio.create_task(self._record_outcomes())
                    if self._streaming is not None else None)
        self._running = True
        try:
            await self._relay_forever()
        finally:
            self._running = False
            self._handed.clear()  # published by whichever relay sees them due after the lease
            if recorder is not None:
                recorder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await recorder

    async def _relay_forever(self) -> None:
        measured = float("-inf")
        while True:
            # Cleared before the pass: a commit during the pass wakes the next wait at once.
            self._wakeup.clear()
            try:
                if self._streaming is not None:
                    await self._stream()
                else:
                    while await self.run_once() >= self._batch_size:
                        pass
                if time.monotonic() - measured >= 1.0:
                    count, age = await self.backlog()
                    metrics.OUTBOX_PENDING.labels(self._service).set(count)
                    metrics.OUTBOX_OLDEST_AGE.labels(self._service).set(age)
                    measured = time.monotonic()
            except asyncio.CancelledError:
                raise
            except DatabaseUnavailable:
                # A failover or a restart: expected, and over by itself; no traceback per poll.
                log.warning("outbox relay pass: database unavailable; retrying")
            except Exception:
                log.exception("outbox relay pass failed; retrying")
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=self._poll_interval)
            except TimeoutError:
                self._claim_wanted = True  # leases and backoffs run out without a wake-up
