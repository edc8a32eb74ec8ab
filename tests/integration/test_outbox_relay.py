"""The outbox relay: delivery state, retries with backoff, late commits, competing relays."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
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
