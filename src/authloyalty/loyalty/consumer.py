"""loyalty's event handlers: the welcome bonus and session revocations."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from authloyalty.events import SessionRevoked, UserRegistered
from authloyalty.loyalty.domain import REGISTRATION_COMMENT, LoyaltyUnitOfWork, Movement
from authloyalty.loyalty.revocations import RevokedSessions
from authloyalty.platform import metrics
from authloyalty.platform.bus import Envelope, EventHandler, IntegrationEvent
from authloyalty.platform.clock import utcnow

log = logging.getLogger(__name__)


class LoyaltyEventHandlers:
    """Consumes sso's events; each handler is idempotent, so redeliveries change nothing."""

    def __init__(self, uow: Callable[[], LoyaltyUnitOfWork], revoked: RevokedSessions,
                 welcome_bonus: int, clock: Callable[[], datetime] = utcnow) -> None:
        self._uow = uow
        self._revoked = revoked
        self._bonus = welcome_bonus
        self._now = clock

    def by_event(self) -> dict[type[IntegrationEvent], EventHandler]:
        """The handler of each event loyalty acts on."""
        return {UserRegistered: self.user_registered, SessionRevoked: self.session_revoked}

    async def user_registered(self, event: Envelope[UserRegistered]) -> None:
        """Open the user's account with the welcome bonus, once per user whatever happens."""
        user_id = event.event.user_id
        now = self._now()
        async with self._uow() as uow:
            if not await uow.inbox.add(event.id, event.name, now):
                metrics.EVENTS_CONSUMED.labels(event.name, "duplicate").inc()
                return
            # The account's primary key makes a second bonus impossible even if the same
            # registration arrives again under another event id.
            opened = await uow.accounts.open(user_id, now)
            if opened and self._bonus > 0:
                await uow.ledger.apply(Movement(user_id, "deposit", self._bonus,
                                                REGISTRATION_COMMENT, now))
                metrics.BONUSES.inc()
            await uow.commit()
        metrics.EVENTS_CONSUMED.labels(event.name, "processed").inc()
        if opened:
            log.info("account %s opened with a welcome bonus of %d points (event %s)", user_id,
                     self._bonus, event.id)

    async def session_revoked(self, event: Envelope[SessionRevoked]) -> None:
        """Refuse the session's access tokens from now on, in this process and after restarts."""
        session_id, until = event.event.session_id, event.event.until
        # Refuse at once, persist after: a failed commit leaves memory stricter, never looser,
        # and the redelivered event persists it later.
        self._revoked.add(session_id, until)
        async with self._uow() as uow:
            await uow.revocations.add(session_id, until)
            await uow.commit()
        metrics.EVENTS_CONSUMED.labels(event.name, "processed").inc()

    async def remember_revocation(self, event: Envelope[SessionRevoked]) -> None:
        """Refuse the session in this process only (a replica reading the revocation stream).

        The stream itself is that replica's memory: it is read again from (now - the longest
        access-token lifetime) at every start, so nothing needs the table, and a stalled
        database can neither delay the next revocation nor slow catching up at start."""
        self._revoked.add(event.event.session_id, event.event.until)

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
