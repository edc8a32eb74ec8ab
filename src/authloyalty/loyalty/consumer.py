"""loyalty's event handlers: the welcome bonus and session revocations."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from uuid import UUID

from authloyalty.events import SessionRevoked, UserDeleted, UserRegistered, UserRestored
from authloyalty.loyalty.domain import REGISTRATION_COMMENT, LoyaltyUnitOfWork, Movement
from authloyalty.loyalty.movements import apply_in
from authloyalty.loyalty.revocations import RevokedSessions
from authloyalty.platform import metrics
from authloyalty.platform.bus import Envelope, EventHandler, IntegrationEvent
from authloyalty.platform.clock import utcnow

log = logging.getLogger(__name__)


class LoyaltyEventHandlers:
    """Consumes sso's events; each handler is idempotent, so redeliveries change nothing."""

    def __init__(self, uow: Callable[[], LoyaltyUnitOfWork], revoked: RevokedSessions,
                 welcome_bonus: int, clock: Callable[[], datetime] = utcnow,
                 bonus_lifetime: timedelta | None = None) -> None:
        self._uow = uow
        self._revoked = revoked
        self._bonus = welcome_bonus
        self._bonus_lifetime = bonus_lifetime  # None: the bonus never expires
        self._now = clock

    def by_event(self) -> dict[type[IntegrationEvent], EventHandler]:
        """The handler of each event loyalty acts on."""
        return {UserRegistered: self.user_registered, SessionRevoked: self.session_revoked,
                UserDeleted: self.user_deleted, UserRestored: self.user_restored}

    async def user_registered(self, event: Envelope[UserRegistered]) -> None:
        """Open the user's account with the welcome bonus, once per user whatever happens."""
        user_id = event.event.user_id
        now = self._now()
        async with self._uow() as uow:
            if not await uow.inbox.add(event.id, event.name, now):
                metrics.EVENTS_CONSUMED.labels(event.name, "duplicate").inc()
                return
            opened = await self._open(uow, user_id, now)
            await uow.commit()
        metrics.EVENTS_CONSUMED.labels(event.name, "processed").inc()
        if opened:
            log.info("account %s opened with a welcome bonus of %d points (event %s)", user_id,
                     self._bonus, event.id)

    async def _open(self, uow: LoyaltyUnitOfWork, user_id: UUID, now: datetime) -> bool:
        # The account's primary key makes a second bonus impossible even if the same
        # registration arrives again under another event id.
        opened = await uow.accounts.open(user_id, now)
        if opened and self._bonus > 0:
            expires_at = None if self._bonus_lifetime is None else now + self._bonus_lifetime
            await apply_in(uow, Movement(user_id, "deposit", self._bonus, REGISTRATION_COMMENT,
                                         now, expires_at=expires_at))
            metrics.BONUSES.inc()
        return opened

    async def user_deleted(self, event: Envelope[UserDeleted]) -> None:
        """Freeze the account of a deleted user (its history stays), unless a newer change
        of the user came first."""
        await self._set_frozen(event, event.event.at)

    async def user_restored(self, event: Envelope[UserRestored]) -> None:
        """Unfreeze the account of a restored user, balance intact, unless a newer change of
        the user came first."""
        await self._set_frozen(event, None)

    async def _set_frozen(self, event: Envelope[UserDeleted] | Envelope[UserRestored],
                          frozen_at: datetime | None) -> None:
        user_id = event.event.user_id
        now = self._now()
        async with self._uow() as uow:
            # The inbox drops a redelivery; the version, a change older than one applied
            # (a restore may arrive before its deletion: the relay retries a failed row while
            # later ones go out, and several replicas relay).
            if not await uow.inbox.add(event.id, event.name, now):
                metrics.EVENTS_CONSUMED.labels(event.name, "duplicate").inc()
                return
            # Registration and deletion travel on different topics: a deletion may come first.
            # The account is due (sso registered the user before), so it opens here, bonus
            # included, and the registration that follows finds it open.
            await self._open(uow, user_id, now)
            applied = await uow.accounts.set_frozen(user_id, frozen_at, event.event.version)
            await uow.commit()
        metrics.EVENTS_CONSUMED.labels(event.name, "processed").inc()
        if not applied:
            log.info("%s of %s (version %d) ignored: a newer change was applied (event %s)",
                     event.name, user_id, event.event.version, event.id)

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
