"""loyalty's event handlers: the welcome bonus and session revocations."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from uuid import UUID

from authloyalty.loyalty.domain import REGISTRATION_COMMENT, LoyaltyUnitOfWork, Movement
from authloyalty.loyalty.revocations import RevokedSessions
from authloyalty.platform import metrics
from authloyalty.platform.db import as_utc, utcnow
from authloyalty.platform.events import Event, PermanentEventError

log = logging.getLogger(__name__)


def _uuid(event: Event, field: str) -> UUID:
    try:
        return UUID(str(event.data[field]))
    except (KeyError, ValueError) as exc:
        raise PermanentEventError(f"{event.type}: missing or invalid {field}") from exc


def _revocation(event: Event) -> tuple[UUID, datetime]:
    session_id = _uuid(event, "session_id")
    try:
        until = as_utc(datetime.fromisoformat(str(event.data["until"])))
    except (KeyError, ValueError) as exc:
        raise PermanentEventError("session_revoked: missing or invalid until") from exc
    return session_id, until


class LoyaltyEventHandlers:
    """Consumes sso's events; each handler is idempotent, so redeliveries change nothing."""

    def __init__(self, uow: Callable[[], LoyaltyUnitOfWork], revoked: RevokedSessions,
                 welcome_bonus: int, clock: Callable[[], datetime] = utcnow) -> None:
        self._uow = uow
        self._revoked = revoked
        self._bonus = welcome_bonus
        self._now = clock

    async def user_registered(self, event: Event) -> None:
        """Open the user's account with the welcome bonus, once per user whatever happens."""
        user_id = _uuid(event, "user_id")
        now = self._now()
        async with self._uow() as uow:
            if not await uow.inbox.add(event.id, event.type, now):
                metrics.EVENTS_CONSUMED.labels(event.type, "duplicate").inc()
                return
            # The account's primary key makes a second bonus impossible even if the same
            # registration arrives again under another event id.
            if await uow.accounts.open(user_id, now) and self._bonus > 0:
                await uow.ledger.apply(Movement(user_id, "deposit", self._bonus,
                                                REGISTRATION_COMMENT, now))
                metrics.BONUSES.inc()
            await uow.commit()
        metrics.EVENTS_CONSUMED.labels(event.type, "processed").inc()

    async def session_revoked(self, event: Event) -> None:
        """Refuse the session's access tokens from now on, in this process and after restarts."""
        session_id, until = _revocation(event)
        # Refuse at once, persist after: a failed commit leaves memory stricter, never looser,
        # and the redelivered event persists it later.
        self._revoked.add(session_id, until)
        async with self._uow() as uow:
            await uow.revocations.add(session_id, until)
            await uow.commit()
        metrics.EVENTS_CONSUMED.labels(event.type, "processed").inc()

    async def remember_revocation(self, event: Event) -> None:
        """Refuse the session in this process only (a replica reading the revocation stream).

        The stream itself is that replica's memory: it is read again from (now - the longest
        access-token lifetime) at every start, so nothing needs the table, and a stalled
        database can neither delay the next revocation nor slow catching up at start."""
        self._revoked.add(*_revocation(event))

    async def load_revocations(self) -> int:
        """Rebuild the in-memory set from the database (at start)."""
        async with self._uow() as uow:
            entries = await uow.revocations.active(self._now())
        self._revoked.load(entries)
        return len(entries)

    async def purge_revocations(self) -> int:
        """Drop expired revocations from memory and the database."""
        now = self._now()
        self._revoked.prune(now)
        async with self._uow() as uow:
            removed = await uow.revocations.purge(now)
            await uow.commit()
        return removed
