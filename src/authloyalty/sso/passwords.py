"""Argon2id password hashing, off the event loop."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher as _Argon2
from argon2.exceptions import InvalidHashError, VerificationError

from authloyalty.sso.settings import Argon2Settings


class PasswordHasher:
    """Hashes and verifies with Argon2id; hashing runs in a worker thread (argon2 drops the GIL)."""

    def __init__(self, params: Argon2Settings) -> None:
        self._argon2 = _Argon2(time_cost=params.time_cost, memory_cost=params.memory_kib,
                               parallelism=params.parallelism)
        # Verified against when the email is unknown, so both paths cost the same.
        self._dummy = self._argon2.hash("timing-equaliser-not-a-password")

    async def hash(self, password: str) -> str:
        """A new hash of ``password``."""
        return await asyncio.to_thread(self._argon2.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True if ``password`` matches; with no hash, spends the same time and fails."""
        return await asyncio.to_thread(self._verify_sync, password_hash, password)

    def _verify_sync(self, password_hash: str | None, password: str) -> bool:
        try:
            ok = self._argon2.verify(password_hash or self._dummy, password)
        except (VerificationError, InvalidHashError):
            return False
        return ok and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the stored hash used other parameters than the current ones."""
        return self._argon2.check_needs_rehash(password_hash)
