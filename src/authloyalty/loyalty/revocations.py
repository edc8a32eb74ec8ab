"""Sessions loyalty refuses, held in memory so no request waits on the network."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from uuid import UUID

from authloyalty.loyalty.domain import Principal
from authloyalty.platform import metrics
from authloyalty.platform.clock import utcnow
from authloyalty.platform.errors import DomainError, ErrorKind, InvalidToken
from authloyalty.platform.tokens import TokenVerifier, UnknownSigningKey


class RevocationsCatchingUp(DomainError):
    """This replica may not know every revocation yet: it refuses to authenticate anyone."""

    kind = ErrorKind.UNAVAILABLE
    code = "revocations_catching_up"
    default_message = "this replica is still reading session revocations; retry shortly"
    retry_after = 1


class RevokedSessions:
    """session id → the time after which none of its access tokens can still be valid.

    ``complete`` is False while revocations may be missing (a replica reading the revocation
    stream has not reached the end it saw at start): nobody is authenticated meanwhile.
    """

    def __init__(self, *, complete: bool = True) -> None:
        self._until: dict[UUID, datetime] = {}
        self._complete = complete
        metrics.REVOCATIONS_COMPLETE.labels("loyalty").set(int(complete))

    @property
    def complete(self) -> bool:
        """Whether every revocation published before this replica started is known."""
        return self._complete

    def set_complete(self, complete: bool) -> None:
        """Open (True) or close (False) the gate in front of authentication."""
        self._complete = complete
        metrics.REVOCATIONS_COMPLETE.labels("loyalty").set(int(complete))

    def add(self, session_id: UUID, until: datetime) -> None:
        """Refuse ``session_id`` until ``until``."""
        self._until[session_id] = max(until, self._until.get(session_id, until))
        metrics.REVOKED_SESSIONS_CACHED.set(len(self._until))

    def load(self, entries: Iterable[tuple[UUID, datetime]]) -> None:
        """Add many (the state rebuilt from the database at start)."""
        for session_id, until in entries:
            self.add(session_id, until)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._until

    def __len__(self) -> int:
        return len(self._until)

    def prune(self, now: datetime | None = None) -> int:
        """Forget revocations whose tokens have expired anyway."""
        now = now or utcnow()
        expired = [sid for sid, until in self._until.items() if until <= now]
        for sid in expired:
            del self._until[sid]
        metrics.REVOKED_SESSIONS_CACHED.set(len(self._until))
        return len(expired)


class Authenticator:
    """Turns an access token into a :class:`Principal`, locally: signature, claims, revocation.

    Tokens that verified are remembered until they expire, so a client's repeated requests
    skip the signature check (about 0.2 ms each): only successes, keyed by the whole token
    string, expiry checked on every hit, revocation checked on every request. A key retired
    from the JWKS keeps its remembered tokens valid until they expire, which is why keys are
    retired only after their tokens' lifetime.

    ``knows_key`` (a JWKS cache in a separate process) gets a chance to learn a new signing key
    before a token with an unknown ``kid`` is refused.
    """

    def __init__(self, verifier: TokenVerifier, revoked: RevokedSessions,
                 knows_key: Callable[[str], Awaitable[bool]] | None = None,
                 max_remembered: int = 50_000) -> None:
        self._verifier = verifier
        self._revoked = revoked
        self._knows_key = knows_key
        self._max = max_remembered
        # token -> (its principal, its expiry as a timestamp)
        self._known: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def known_principal(self, token: str) -> Principal | None:
        """The caller without waiting, when the token verified before (the common case);
        :class:`InvalidToken` if its session has ended; None when :meth:`principal` must
        decide; :class:`RevocationsCatchingUp` while revocations may be missing."""
        if not self._revoked.complete:
            raise RevocationsCatchingUp()
        hit = self._known.get(token)
        if hit is None or hit[1] <= time.time():
            return None
        if hit[0].session_id in self._revoked:
            raise InvalidToken("session has ended")
        return hit[0]

    async def principal(self, token: str) -> Principal:
        """The caller, or :class:`InvalidToken` (:class:`RevocationsCatchingUp` while
        revocations may be missing)."""
        known = self.known_principal(token)
        if known is not None:
            return known
        try:
            claims = self._verifier.verify(token, "access")
        except UnknownSigningKey as exc:
            if self._knows_key is None or not await self._knows_key(exc.kid):
                raise
            claims = self._verifier.verify(token, "access")
        principal = Principal(user_id=claims.user_id, session_id=claims.session_id,
                              is_admin=claims.admin)
        self._known[token] = (principal, claims.expires_at.timestamp())
        if len(self._known) > self._max:
            self._known.popitem(last=False)
        if principal.session_id in self._revoked:
            raise InvalidToken("session has ended")
        return principal
