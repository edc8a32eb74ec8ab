"""platform.database._Lane: the connection list behind coalesced statements."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from authloyalty.platform.database import _Lane


class FakeConnection:
    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = False

    def is_closed(self) -> bool:
        return self.closed

    def terminate(self) -> None:
        self.closed = True

    async def close(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - as asyncpg
        self.closed = True


def lane(size: int, fail: list[bool] | None = None) -> tuple[_Lane, list[FakeConnection]]:
    made: list[FakeConnection] = []

    async def connect() -> Any:
        await asyncio.sleep(0)
        if fail and fail.pop(0):
            raise ConnectionRefusedError("down")
        made.append(FakeConnection(len(made)))
        return made[-1]

    return _Lane(connect, size), made


async def test_connections_are_reused_and_capped() -> None:
    pool, made = lane(2)
    first = await pool.acquire()
    pool.release(first)
    assert await pool.acquire() is first  # reused, not reconnected
    second = await pool.acquire()
    third = asyncio.ensure_future(pool.acquire())
    await asyncio.sleep(0.01)
    assert not third.done()  # at the cap: waits
    pool.release(second)
    assert await third is second
    assert len(made) == 2


async def test_a_closed_connection_frees_its_slot_for_a_waiter() -> None:
    pool, made = lane(1)
    conn = await pool.acquire()
    waiting = asyncio.ensure_future(pool.acquire())
    await asyncio.sleep(0.01)
    conn.terminate()
    pool.release(conn)  # broken: dropped, and the waiter connects a new one
    fresh = await waiting
    assert fresh is not conn
    assert not fresh.is_closed()
    assert len(made) == 2


async def test_a_failed_connect_gives_its_slot_back() -> None:
    pool, made = lane(1, fail=[True, False])
    with pytest.raises(ConnectionRefusedError):
        await pool.acquire()
    conn = await pool.acquire()
    assert conn is made[0]


async def test_a_cancelled_waiter_does_not_leak_the_connection_it_was_handed() -> None:
    pool, _ = lane(1)
    conn = await pool.acquire()
    waiting = asyncio.ensure_future(pool.acquire())
    await asyncio.sleep(0.01)
    pool.release(conn)  # handed to the waiter ...
    waiting.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await asyncio.wait_for(pool.acquire(), 1) is conn  # back in the lane


async def test_close_closes_idle_connections() -> None:
    pool, made = lane(2)
    first, second = await pool.acquire(), await pool.acquire()
    pool.release(first)
    pool.release(second)
    await pool.close()
    assert all(c.closed for c in made)


async def test_expire_drops_idle_connections_now_and_lent_ones_when_they_return() -> None:
    pool, made = lane(3)
    idle, lent = await pool.acquire(), await pool.acquire()
    pool.release(idle)
    pool.expire()  # their server went away or is no longer the leader
    assert idle.closed
    assert not lent.closed
    pool.release(lent)
    assert lent.closed  # never handed out again
    fresh = await pool.acquire()
    assert fresh not in (idle, lent)
    assert not fresh.closed
    pool.release(fresh)
    assert await pool.acquire() is fresh  # made after the expiry: kept
    assert len(made) == 3
