"""The outbox relay: delivery state, retries with backoff, late commits, competing relays."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from authloyalty.bootstrap import EmbeddedSystem
from authloyalty.platform.db import utcnow
from authloyalty.platform.events import Event
from authloyalty.platform.outbox import FAILED, SUCCESSFUL, OutboxRelay, OutboxWriter
from authloyalty.sso.tables import outbox


class FlakyPublisher:
    """Fails while ``down`` is set; records every event it delivered."""

    def __init__(self, delay: float = 0.0) -> None:
        self.down = False
        self.delivered: list[Event] = []
        self.delay = delay

    async def publish(self, events: Sequence[Event]) -> list[str | None]:
        await asyncio.sleep(self.delay)
        if self.down:
            return ["broker unreachable"] * len(events)
        self.delivered.extend(events)
        return [None] * len(events)


async def add_event(system: EmbeddedSystem, key: str) -> Event:
    event = Event(type="user_registered", key=key, data={"user_id": key})
    async with system.sso.engine.begin() as conn:
        await OutboxWriter(conn, outbox).add(event)
    return event


async def rows(system: EmbeddedSystem) -> list[tuple[str, int, str | None]]:
    async with system.sso.engine.connect() as conn:
        result = await conn.execute(
            select(outbox.c.status, outbox.c.attempts, outbox.c.last_error).order_by(outbox.c.id))
    return [(r.status, r.attempts, r.last_error) for r in result]


async def test_failed_delivery_is_recorded_and_retried_after_backoff(
        system: EmbeddedSystem) -> None:
    publisher = FlakyPublisher()
    relay = OutboxRelay(system.sso.database, outbox, publisher)
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
    assert [e.key for e in publisher.delivered] == ["a"]
    assert (await relay.backlog())[0] == 0


async def test_competing_relays_never_publish_a_row_twice(system: EmbeddedSystem) -> None:
    publisher = FlakyPublisher(delay=0.05)
    relays = [OutboxRelay(system.sso.database, outbox, publisher, batch_size=5) for _ in range(3)]
    for i in range(20):
        await add_event(system, f"k{i}")
    for _ in range(10):
        await asyncio.gather(*(r.run_once() for r in relays))
    keys = [e.key for e in publisher.delivered]
    assert sorted(keys) == sorted(f"k{i}" for i in range(20))


async def test_row_committed_late_is_still_published(system: EmbeddedSystem) -> None:
    if system.sso.target.is_sqlite:
        pytest.skip("SQLite serialises writers; there is no late commit to observe")
    publisher = FlakyPublisher()
    relay = OutboxRelay(system.sso.database, outbox, publisher)
    late = Event(type="user_registered", key="late", data={"user_id": "late"})
    async with system.sso.engine.connect() as slow:
        await slow.begin()
        await OutboxWriter(slow, outbox).add(late)  # takes the lower id, commits last
        await add_event(system, "early")
        await relay.run_once()
        assert [e.key for e in publisher.delivered] == ["early"]
        await slow.commit()
    await relay.run_once()
    assert [e.key for e in publisher.delivered] == ["early", "late"]


async def test_commit_during_a_pass_is_relayed_without_waiting_for_the_poll(
        system: EmbeddedSystem) -> None:
    publisher = FlakyPublisher(delay=0.3)
    relay = OutboxRelay(system.sso.database, outbox, publisher, poll_interval=30.0)
    task = asyncio.create_task(relay.run_forever())
    try:
        await add_event(system, "first")
        relay.notify()
        await asyncio.sleep(0.1)  # the relay is now inside its (slow) pass
        await add_event(system, "second")
        relay.notify()
        for _ in range(30):
            if len(publisher.delivered) == 2:
                break
            await asyncio.sleep(0.1)
        assert [e.key for e in publisher.delivered] == ["first", "second"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class PerEventPublisher:
    """Acknowledges each event on its own: at once, or (key ``stuck``) when released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.sent: list[str] = []
        self._waiting: set[asyncio.Task[None]] = set()

    async def publish(self, events: Sequence[Event]) -> list[str | None]:
        return list(await asyncio.gather(*await self.send(events)))

    async def send(self, events: Sequence[Event]) -> list[asyncio.Future[str | None]]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[str | None]] = []
        for event in events:
            self.sent.append(event.key)
            future: asyncio.Future[str | None] = loop.create_future()
            if event.key == "stuck":
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
    relay = OutboxRelay(system.sso.database, outbox, publisher, poll_interval=0.05)
    await add_event(system, "stuck")
    await add_event(system, "a")
    task = asyncio.create_task(relay.run_forever())
    try:
        async def marked(expected: list[str]) -> bool:
            return await statuses(system) == expected
        assert await eventually(lambda: marked(["in_progress", SUCCESSFUL]))
        await add_event(system, "b")
        relay.notify()
        assert await eventually(lambda: marked(["in_progress", SUCCESSFUL, SUCCESSFUL]))
        publisher.release.set()
        assert await eventually(lambda: marked([SUCCESSFUL] * 3))
        assert publisher.sent == ["stuck", "a", "b"]  # claimed rows are not handed out twice
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_rows_of_a_relay_that_died_mid_delivery_are_published_after_its_lease(
        system: EmbeddedSystem) -> None:
    dying, heir = PerEventPublisher(), PerEventPublisher()
    first = OutboxRelay(system.sso.database, outbox, dying, poll_interval=0.05)
    second = OutboxRelay(system.sso.database, outbox, heir, lease_seconds=30.0)
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
