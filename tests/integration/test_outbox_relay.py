"""The outbox relay: delivery state, retries with backoff, late commits, competing relays."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import NAMESPACE_OID, uuid4, uuid5

import pytest
from sqlalchemy import select, update

from authloyalty.bootstrap import EmbeddedSystem
from authloyalty.events import SessionRevoked, UserRegistered
from authloyalty.platform.bus import Envelope
from authloyalty.platform.clock import as_utc, utcnow
from authloyalty.platform.database import Connection, Database
from authloyalty.platform.outbox import FAILED, SUCCESSFUL, OutboxRelay, OutboxWriter
from authloyalty.sso.events import SSO_EVENTS
from authloyalty.sso.tables import outbox
from authloyalty.sso.uow import SqlSsoUnitOfWork


class FlakyPublisher:
    """Fails while ``down`` is set; records every event it delivered."""

    def __init__(self, delay: float = 0.0) -> None:
        self.down = False
        self.delivered: list[Envelope[Any]] = []
        self.delay = delay

    async def publish(self, events: Sequence[Envelope[Any]]) -> list[str | None]:
        await asyncio.sleep(self.delay)
        if self.down:
            return ["broker unreachable"] * len(events)
        self.delivered.extend(events)
        return [None] * len(events)


def registered(label: str) -> Envelope[UserRegistered]:
    """A registration of the user called ``label`` (tests read the label back)."""
    return Envelope(UserRegistered(uuid5(NAMESPACE_OID, label)))


def label(envelope: Envelope[Any]) -> str:
    """The label of the user ``envelope`` registers (see :func:`registered`)."""
    return _LABELS[envelope.event.user_id]


_LABELS = {uuid5(NAMESPACE_OID, name): name
           for name in ["a", "stuck", "early", "late", "first", "second", "b",
                        *(f"k{i}" for i in range(20))]}


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[None]:
    """``relay.run_forever()`` for the duration of the block."""
    task = asyncio.create_task(relay.run_forever())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def add_event(system: EmbeddedSystem, key: str) -> Envelope[UserRegistered]:
    event = registered(key)
    async with system.sso.engine.begin() as conn:
        await OutboxWriter(conn, outbox, SSO_EVENTS).add(event)
    return event


async def rows(system: EmbeddedSystem) -> list[tuple[str, int, str | None]]:
    async with system.sso.engine.connect() as conn:
        result = await conn.execute(
            select(outbox.c.status, outbox.c.attempts, outbox.c.last_error).order_by(outbox.c.id))
    return [(r.status, r.attempts, r.last_error) for r in result]


async def test_failed_delivery_is_recorded_and_retried_after_backoff(
        system: EmbeddedSystem) -> None:
    publisher = FlakyPublisher()
    relay = OutboxRelay(system.sso.database, outbox, SSO_EVENTS, publisher)
    await add_event(system, "a")
    publisher.down = True
    assert await relay.run_once() == 1
    assert await rows(system) == [(FAILED, 1, "broker unreachable")]
    assert await relay.run_once() == 0  # backing off
    assert (await relay.backlog())[0] == 1
    async with system.sso.engine.begin() as conn:  # let the backoff elapse
        await conn.execute(update(outbox).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    publisher.down = False
    assert await relay.run_once() == 1
    assert await rows(system) == [(SUCCESSFUL, 2, None)]
    assert [label(e) for e in publisher.delivered] == ["a"]
    assert (await relay.backlog())[0] == 0


async def test_competing_relays_never_publish_a_row_twice(system: EmbeddedSystem) -> None:
    publisher = FlakyPublisher(delay=0.05)
    relays = [OutboxRelay(system.sso.database, outbox, SSO_EVENTS, publisher, batch_size=5)
              for _ in range(3)]
    for i in range(20):
        await add_event(system, f"k{i}")
    for _ in range(10):
        await asyncio.gather(*(r.run_once() for r in relays))
    keys = [label(e) for e in publisher.delivered]
    assert sorted(keys) == sorted(f"k{i}" for i in range(20))


async def test_row_committed_late_is_still_published(system: EmbeddedSystem) -> None:
    if system.sso.target.is_sqlite:
        pytest.skip("SQLite serialises writers; there is no late commit to observe")
    publisher = FlakyPublisher()
    relay = OutboxRelay(system.sso.database, outbox, SSO_EVENTS, publisher)
    late = registered("late")
    async with system.sso.engine.connect() as slow:
        await slow.begin()
        await OutboxWriter(slow, outbox, SSO_EVENTS).add(late)  # takes the lower id, commits last
        await add_event(system, "early")
        await relay.run_once()
        assert [label(e) for e in publisher.delivered] == ["early"]
        await slow.commit()
    await relay.run_once()
    assert [label(e) for e in publisher.delivered] == ["early", "late"]


async def test_commit_during_a_pass_is_relayed_without_waiting_for_the_poll(
        system: EmbeddedSystem) -> None:
    publisher = FlakyPublisher(delay=0.3)
    relay = OutboxRelay(system.sso.database, outbox, SSO_EVENTS, publisher, poll_interval=30.0)
    async with running(relay):
        await add_event(system, "first")
        relay.notify()
        await asyncio.sleep(0.1)  # the relay is now inside its (slow) pass
        await add_event(system, "second")
        relay.notify()
        for _ in range(30):
            if len(publisher.delivered) == 2:
                break
            await asyncio.sleep(0.1)
        assert [label(e) for e in publisher.delivered] == ["first", "second"]


class PerEventPublisher:
    """Acknowledges each event on its own: at once, or (key ``stuck``) when released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.sent: list[str] = []
        self._waiting: set[asyncio.Task[None]] = set()

    async def publish(self, events: Sequence[Envelope[Any]]) -> list[str | None]:
        return list(await asyncio.gather(*await self.send(events)))

    async def send(self, events: Sequence[Envelope[Any]]) -> list[asyncio.Future[str | None]]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[str | None]] = []
        for event in events:
            self.sent.append(label(event))
            future: asyncio.Future[str | None] = loop.create_future()
            if label(event) == "stuck":
                task = asyncio.create_task(self._ack_when_released(future))
                self._waiting.add(task)
            else:
                future.set_result(None)
            futures.append(future)
        return futures

    async def _ack_when_released(self, future: asyncio.Future[str | None]) -> None:
        await self.release.wait()
        future.set_result(None)


async def statuses(system: EmbeddedSystem) -> list[str]:
    return [status for status, _, _ in await rows(system)]


async def _statuses_are(system: EmbeddedSystem, expected: list[str]) -> bool:
    return await statuses(system) == expected


async def eventually(check: Callable[[], Awaitable[bool]]) -> bool:
    """Whether ``check`` comes true within 5 s."""
    for _ in range(100):
        if await check():
            return True
        await asyncio.sleep(0.05)
    return await check()


async def test_an_unacknowledged_event_holds_back_no_other_row(system: EmbeddedSystem) -> None:
    # A Kafka partition without a leader acknowledges nothing until a new one is elected; the
    # events of the other partitions are published and marked meanwhile.
    publisher = PerEventPublisher()
    relay = OutboxRelay(system.sso.database, outbox, SSO_EVENTS, publisher, poll_interval=0.05)
    await add_event(system, "stuck")
    await add_event(system, "a")
    async with running(relay):
        assert await eventually(lambda: _statuses_are(system, ["in_progress", SUCCESSFUL]))
        await add_event(system, "b")
        relay.notify()
        assert await eventually(
            lambda: _statuses_are(system, ["in_progress", SUCCESSFUL, SUCCESSFUL]))
        publisher.release.set()
        assert await eventually(lambda: _statuses_are(system, [SUCCESSFUL] * 3))
        assert publisher.sent == ["stuck", "a", "b"]  # claimed rows are not handed out twice


async def test_rows_of_a_relay_that_died_mid_delivery_are_published_after_its_lease(
        system: EmbeddedSystem) -> None:
    dying, heir = PerEventPublisher(), PerEventPublisher()
    first = OutboxRelay(system.sso.database, outbox, SSO_EVENTS, dying, poll_interval=0.05)
    second = OutboxRelay(system.sso.database, outbox, SSO_EVENTS, heir, lease_seconds=30.0)
    await add_event(system, "stuck")
    task = asyncio.create_task(first.run_forever())
    assert await eventually(lambda: asyncio.sleep(0, len(dying.sent) == 1))
    task.cancel()  # dies before the acknowledgement
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert await second.run_once() == 0  # leased to the dead relay
    async with system.sso.engine.begin() as conn:  # let the lease run out
        await conn.execute(update(outbox).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    heir.release.set()
    assert await second.run_once() == 1
    assert await statuses(system) == [SUCCESSFUL]


async def test_rows_written_as_untyped_json_are_relayed_as_typed_events(
        system: EmbeddedSystem) -> None:
    # The payload's JSON shape predates typed events; rows already in an outbox must still go.
    user_id, session_id = uuid4(), uuid4()
    until = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    legacy = [("user_registered", {"user_id": str(user_id)}),
              ("session_revoked", {"session_id": str(session_id), "user_id": str(user_id),
                                   "until": until.isoformat(), "reason": "logout"})]
    async with system.sso.engine.begin() as conn:
        for name, payload in legacy:
            await conn.execute(outbox.insert().values(
                event_id=uuid4(), event_type=name, event_key=str(user_id), payload=payload,
                headers={}, created_at=utcnow(), status="in_progress", attempts=0,
                next_attempt_at=utcnow()))
    publisher = FlakyPublisher()
    assert await OutboxRelay(system.sso.database, outbox, SSO_EVENTS, publisher).run_once() == 2
    assert [e.event for e in publisher.delivered] == [
        UserRegistered(user_id), SessionRevoked(session_id, user_id, until, "logout")]


async def test_typed_events_are_stored_in_the_json_shape_of_earlier_rows(
        system: EmbeddedSystem) -> None:
    user_id, session_id = uuid4(), uuid4()
    until = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    async with system.sso.engine.begin() as conn:
        writer = OutboxWriter(conn, outbox, SSO_EVENTS)
        await writer.add(Envelope(UserRegistered(user_id)))
        await writer.add(Envelope(SessionRevoked(session_id, user_id, until, "logout")))
    async with system.sso.engine.connect() as conn:
        stored = (await conn.execute(select(outbox.c.event_type, outbox.c.event_key,
                                            outbox.c.payload).order_by(outbox.c.id))).all()
    assert [tuple(row) for row in stored] == [
        ("user_registered", str(user_id), {"user_id": str(user_id)}),
        ("session_revoked", str(user_id),
         {"session_id": str(session_id), "user_id": str(user_id),
          "until": "2030-01-02T03:04:05.678901+00:00", "reason": "logout"})]


async def commit_event(system: EmbeddedSystem, relay: OutboxRelay, key: str, *,
                       commit: bool = True) -> None:
    """Write the registration of ``key`` the way sso's use cases do, through its unit of work."""
    async with SqlSsoUnitOfWork(system.sso.database, relay=relay) as uow:
        await uow.outbox.add(registered(key))
        if commit:
            await uow.commit()


async def next_attempts(system: EmbeddedSystem) -> list[datetime]:
    async with system.sso.engine.connect() as conn:
        result = await conn.execute(select(outbox.c.next_attempt_at).order_by(outbox.c.id))
    return [as_utc(at) for (at,) in result]


class GatedDatabase(Database):
    """The relay's view of the database, whose writing transactions wait while ``open`` is
    clear (reads pass)."""

    def __init__(self, inner: Database) -> None:
        self._inner = inner
        self.dialect = inner.dialect
        self.open = asyncio.Event()
        self.open.set()

    async def connect(self, *, read_only: bool = False) -> Connection:
        if not read_only:
            await self.open.wait()
        return await self._inner.connect(read_only=read_only)

    async def dispose(self) -> None:
        """The inner database belongs to the system."""


async def test_a_committed_row_is_handed_to_the_running_relay_without_a_claim(
        system: EmbeddedSystem) -> None:
    # The writing process's relay publishes its rows at commit, with no transaction of its own
    # before the publication (here its transactions cannot even start); the row is leased to it
    # from the start, so no other relay publishes it meanwhile, and no poll is needed.
    publisher, rival = PerEventPublisher(), PerEventPublisher()
    gated = GatedDatabase(system.sso.database)
    relay = OutboxRelay(gated, outbox, SSO_EVENTS, publisher, poll_interval=30.0)
    async with running(relay):
        await asyncio.sleep(0.2)  # the first pass (nothing due) is over; next poll in 30 s
        gated.open.clear()
        before = utcnow()
        await commit_event(system, relay, "a")
        assert await eventually(lambda: asyncio.sleep(0, publisher.sent == ["a"]))
        [leased_until] = await next_attempts(system)
        assert leased_until > before + timedelta(seconds=20)
        assert await OutboxRelay(system.sso.database, outbox, SSO_EVENTS, rival).run_once() == 0
        gated.open.set()  # the acknowledgement is recorded
        assert await eventually(lambda: _statuses_are(system, [SUCCESSFUL]))
        assert rival.sent == []


async def test_a_rolled_back_transaction_hands_nothing_over(system: EmbeddedSystem) -> None:
    publisher = PerEventPublisher()
    relay = OutboxRelay(system.sso.database, outbox, SSO_EVENTS, publisher, poll_interval=0.05)
    async with running(relay):
        await asyncio.sleep(0.1)
        await commit_event(system, relay, "a", commit=False)
        await commit_event(system, relay, "b")
        assert await eventually(lambda: _statuses_are(system, [SUCCESSFUL]))
        assert publisher.sent == ["b"]


class Refused(Exception):
    """A step of a use case that fails after writing its event, inside a savepoint."""


async def test_a_row_written_in_a_savepoint_that_rolls_back_is_not_handed_over(
        system: EmbeddedSystem) -> None:
    # The transaction goes on and commits without the savepoint's row; the relay must not
    # publish it from memory either (nor one released into a savepoint that then rolls back).
    publisher = PerEventPublisher()
    relay = OutboxRelay(system.sso.database, outbox, SSO_EVENTS, publisher, poll_interval=30.0)
    async with running(relay):
        await asyncio.sleep(0.1)  # the first pass is over; the next poll is 30 s away
        async with SqlSsoUnitOfWork(system.sso.database, relay=relay) as uow:
            await uow.outbox.add(registered("first"))
            with contextlib.suppress(Refused):
                async with uow.connection.savepoint():
                    await uow.outbox.add(registered("a"))
                    raise Refused
            with contextlib.suppress(Refused):
                async with uow.connection.savepoint():
                    async with uow.connection.savepoint():
                        await uow.outbox.add(registered("b"))
                    raise Refused
            async with uow.connection.savepoint():
                await uow.outbox.add(registered("second"))
            await uow.commit()
        assert await eventually(lambda: _statuses_are(system, [SUCCESSFUL, SUCCESSFUL]))
        assert sorted(publisher.sent) == ["first", "second"]


async def test_a_row_leased_to_a_relay_that_stopped_is_published_after_the_lease(
        system: EmbeddedSystem) -> None:
    # The process died between its commit and the publication: nothing is lost, the row waits
    # for the lease like any row of a dead relay.
    dying, heir = PerEventPublisher(), PerEventPublisher()
    relay = OutboxRelay(system.sso.database, outbox, SSO_EVENTS, dying, poll_interval=30.0)
    task = asyncio.create_task(relay.run_forever())
    await asyncio.sleep(0.1)
    async with SqlSsoUnitOfWork(system.sso.database, relay=relay) as uow:
        await uow.outbox.add(registered("a"))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await uow.commit()  # the hand-over finds the relay gone
    assert dying.sent == []
    successor = OutboxRelay(system.sso.database, outbox, SSO_EVENTS, heir)
    assert await successor.run_once() == 0  # still leased
    async with system.sso.engine.begin() as conn:  # let the lease run out
        await conn.execute(update(outbox).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    assert await successor.run_once() == 1
    assert heir.sent == ["a"]
    assert await statuses(system) == [SUCCESSFUL]


async def test_rows_written_while_no_relay_runs_here_are_due_at_once(
        system: EmbeddedSystem) -> None:
    # `authloyalty sso --no-relay`: the relay processes publish the rows, without any lease.
    idle = OutboxRelay(system.sso.database, outbox, SSO_EVENTS, PerEventPublisher())
    await commit_event(system, idle, "a")
    publisher = PerEventPublisher()
    assert await OutboxRelay(system.sso.database, outbox, SSO_EVENTS, publisher).run_once() == 1
    assert publisher.sent == ["a"]
