"""Argon2id password hashing, off the event loop, on a pool sized to the cores."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher as _Argon2
from argon2.exceptions import InvalidHashError, VerificationError

from authloyalty.sso.settings import Argon2Settings


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def lower_thread_priority(increment: int) -> None:
    """Run the calling thread ``increment`` nice levels lower than it runs now.

    On Linux the nice value belongs to the thread (``setpriority(PRIO_PROCESS, tid)``), so only
    this thread yields to the others of its process, and to nothing outside it that it did
    not already; elsewhere, or when not allowed, it stays as it is."""
    if increment <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    # A sandbox refusing it: hashing works the same, at the same priority.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, tid,
                       min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))


class PasswordHasher:
    """Hashes and verifies with Argon2id in worker threads of its own (argon2 drops the GIL).

    At most ``params.threads`` hashes (default: the CPUs available) run at once; the others
    wait in the pool's queue. The event loop's default executor would run up to cores + 4 of
    them, and Argon2 hashes that outnumber the cores evict each other's 19 MiB from the caches:
    each costs ~20 % more CPU and none finishes sooner. The threads run ``params.nice``
    levels below the event loop (:func:`lower_thread_priority`).
    """

    def __init__(self, params: Argon2Settings) -> None:
        self._argon2 = _Argon2(time_cost=params.time_cost, memory_cost=params.memory_kib,
                               parallelism=params.parallelism)
        self.threads = params.threads or available_cpus()
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="argon2",
                                        initializer=lower_thread_priority,
                                        initargs=(params.nice,))
        # Verified against when the email is unknown, so both paths cost the same.
        self._dummy = self._argon2.hash("timing-equaliser-not-a-password")

    async def hash(self, password: str) -> str:
        """A new hash of ``password``."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self._argon2.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True if ``password`` matches; with no hash, spends the same time and fails."""
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self._verify_sync, password_hash, password)

    def _verify_sync(self, password_hash: str | None, password: str) -> bool:
        try:
            ok = self._argon2.verify(password_hash or self._dummy, password)
        except (VerificationError, InvalidHashError):
            return False
        return ok and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the stored hash used other parameters than the current ones."""
        return self._argon2.check_needs_rehash(password_hash)

    def close(self) -> None:
        """Let the worker threads end once the hashes already asked for are done."""
        self._pool.shutdown(wait=False)
