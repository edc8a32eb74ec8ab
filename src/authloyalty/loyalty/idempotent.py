"""Every keyed write of the ledger, one way: at most once per (caller, key).

In one transaction: look the key up (a stored answer is returned as it is, nothing runs
again), act, store the answer under the key, commit. Two requests with the same key may both
find it free; the second to store it gets :class:`KeyTaken`, its transaction is rolled back
with everything it did, and it starts over to find and replay the first one's answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from authloyalty.loyalty.domain import (
    IdempotencyClaim,
    IdempotencyRecord,
    KeyTaken,
    LoyaltyUnitOfWork,
    StoredResult,
)

R = TypeVar("R", bound=StoredResult)


async def write_once(uow: Callable[[], LoyaltyUnitOfWork], once: IdempotencyClaim | None,
                     act: Callable[[LoyaltyUnitOfWork, datetime], Awaitable[R]],
                     clock: Callable[[], datetime]) -> R | IdempotencyRecord:
    """``act``'s answer, committed with the key's record; or the record an earlier request
    stored under ``once``. Without a key, ``act`` simply runs in a transaction of its own.
    ``clock`` is read once per attempt: the moment ``act`` and the record are stamped with."""
    while True:
        now = clock()
        async with uow() as work:
            if once is not None:
                stored = await work.idempotency.get(once.caller_id, once.key)
                if stored is not None:
                    return stored
            result = await act(work, now)
            if once is not None:
                try:
                    await work.idempotency.add(IdempotencyRecord(
                        caller_id=once.caller_id, key=once.key, fingerprint=once.fingerprint,
                        result=result, created_at=now))
                except KeyTaken:
                    continue  # a concurrent twin committed first: replay theirs
            await work.commit()
        return result
