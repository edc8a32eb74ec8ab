"""Who is calling sso's gRPC methods that need a caller (``GetUser``), and what they may read.

A caller proves itself with the ``authorization`` metadata entry:

* ``Bearer <access token>``: a user; checked as ``/auth/info`` checks it (signature, type,
  expiry, session not ended) and the user's admin flag read from the database;
* ``Basic <base64(client_id:client_secret)>``: a service listed in ``sso.grpc_clients``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from authloyalty.platform.errors import Forbidden, InvalidToken, MissingToken
from authloyalty.sso.service import AuthService
from authloyalty.sso.settings import GrpcClientSettings

MISSING = ("authorization metadata required: 'Bearer <access token>' or "
           "'Basic <base64 client_id:client_secret>'")
# Compared against when the client id is unknown, so both failures take the same time.
_NO_DIGEST = hashlib.sha256(b"no such client").digest()


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: a user (``user_id``) or a configured service (``client_id``)."""

    user_id: UUID | None = None
    is_admin: bool = False
    client_id: str | None = None

    def check_may_read(self, user_id: UUID) -> None:
        """:class:`Forbidden` unless this caller may read ``user_id``'s profile."""
        if self.client_id is None and not self.is_admin and self.user_id != user_id:
            raise Forbidden("you may only read your own user")


class ServiceClients:
    """The services of ``sso.grpc_clients``; holds digests of their secrets only."""

    def __init__(self, clients: Sequence[GrpcClientSettings] = ()) -> None:
        self._digests = {c.id: bytes.fromhex(c.secret_sha256) for c in clients}

    def verify(self, client_id: str, secret: str) -> bool:
        """True when ``secret`` is ``client_id``'s; in constant time for a known id."""
        presented = hashlib.sha256(secret.encode()).digest()
        expected = self._digests.get(client_id)
        matches = hmac.compare_digest(presented, expected or _NO_DIGEST)
        return matches and expected is not None


class CallerResolver:
    """Turns the ``authorization`` metadata value into a :class:`Caller` or refuses it."""

    def __init__(self, service: AuthService, clients: ServiceClients) -> None:
        self._service = service
        self._clients = clients

    async def caller(self, authorization: str | None) -> Caller:
        """The caller behind ``authorization``; UNAUTHENTICATED errors when there is none."""
        scheme, _, credential = (authorization or "").strip().partition(" ")
        credential = credential.strip()
        if not scheme:
            raise MissingToken(MISSING)
        if scheme.lower() == "bearer" and credential:
            # Rights are decided on the leader: a promotion counts at once.
            user = await self._service.user_info(credential, current=True)
            return Caller(user_id=user.id, is_admin=user.is_admin)
        if scheme.lower() == "basic" and credential:
            return self._service_caller(credential)
        raise InvalidToken(MISSING)

    def _service_caller(self, credential: str) -> Caller:
        try:
            decoded = base64.b64decode(credential, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidToken("malformed client credentials") from None
        client_id, colon, secret = decoded.partition(":")
        if not colon or not self._clients.verify(client_id, secret):
            raise InvalidToken("invalid client credentials")
        return Caller(client_id=client_id)
