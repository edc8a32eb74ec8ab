"""Password hashing runs on a pool of its own, never more hashes at once than it is sized for."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time

import pytest

from authloyalty.sso.passwords import PasswordHasher, available_cpus
from authloyalty.sso.settings import Argon2Settings

CHEAP = {"time_cost": 1, "memory_kib": 64, "parallelism": 1}


class _Counting:
    """Wraps the hasher's verification: how many calls ran at the same time, at most."""

    def __init__(self, verify) -> None:  # type: ignore[no-untyped-def]
        self._verify = verify
        self._lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.threads: set[str] = set()

    def __call__(self, password_hash: str | None, password: str) -> bool:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.threads.add(threading.current_thread().name)
        try:
            time.sleep(0.02)  # long enough for the others to pile up if the pool let them
            return bool(self._verify(password_hash, password))
        finally:
            with self._lock:
                self.running -= 1


@pytest.mark.parametrize("threads", [1, 3])
async def test_no_more_hashes_at_once_than_threads(threads: int) -> None:
    hasher = PasswordHasher(Argon2Settings(**CHEAP, threads=threads))
    try:
        good = await hasher.hash("correct horse")
        counting = _Counting(hasher._verify_sync)
        hasher._verify_sync = counting  # type: ignore[method-assign]
        answers = await asyncio.gather(
            *(hasher.verify(good, "correct horse" if i % 2 else "wrong") for i in range(12)))
        assert answers == [bool(i % 2) for i in range(12)]  # each caller gets its own answer
        assert counting.peak == threads
        assert all(name.startswith("argon2") for name in counting.threads)
    finally:
        hasher.close()


async def test_default_is_the_cpus_this_process_may_use() -> None:
    hasher = PasswordHasher(Argon2Settings(**CHEAP))
    try:
        assert hasher.threads == available_cpus() >= 1
        assert await hasher.verify(None, "anything") is False  # unknown email: same work, refused
    finally:
        hasher.close()


def test_threads_must_be_positive() -> None:
    with pytest.raises(ValueError, match="threads"):
        Argon2Settings(**CHEAP, threads=0)



def _own_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
@pytest.mark.parametrize("nice", [0, 7])
async def test_hashes_run_below_the_event_loop(nice: int) -> None:
    hasher = PasswordHasher(Argon2Settings(**CHEAP, threads=2, nice=nice))
    loop_nice = _own_nice()
    try:
        seen = await asyncio.gather(*(asyncio.get_running_loop().run_in_executor(
            hasher._pool, _own_nice) for _ in range(4)))
        assert seen == [min(19, loop_nice + nice)] * 4
        # Only the hashing threads: the event loop's thread keeps its priority.
        assert _own_nice() == loop_nice
        assert await hasher.verify(await hasher.hash("pw"), "pw") is True
    finally:
        hasher.close()
