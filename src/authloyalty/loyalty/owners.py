"""Account owners from sso over gRPC, when loyalty runs on its own.

(Embedded, the composition root answers from sso's use case: ``bootstrap.SsoOwnerDirectory``.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import grpc

from authloyalty.loyalty.domain import Owner, OwnerUnavailable
from authloyalty.rpc.sso import sso_pb2, sso_pb2_grpc

# The generated module has no annotations; this gives the stub's constructor a type.
_stub_for: Callable[[grpc.aio.Channel], Any] = sso_pb2_grpc.AuthStub


class GrpcOwnerDirectory:
    """Asks sso's ``auth.Auth/GetUser`` with a deadline; never waits longer than that.

    The caller's access token travels as ``authorization: Bearer <token>`` metadata: sso checks
    it (signature, session not ended, admin or the user themself) before it answers.
    """

    def __init__(self, target: str, deadline_seconds: float = 0.5) -> None:
        self._target = target
        self._deadline = deadline_seconds
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    def _client(self) -> Any:
        # Created lazily: a grpc.aio channel belongs to the event loop that first uses it.
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self._target)
            self._stub = _stub_for(self._channel)
        return self._stub

    async def owner(self, user_id: UUID, access_token: str) -> Owner | None:
        """The owner of ``user_id`` according to sso, asked with ``access_token``."""
        try:
            reply = await self._client().GetUser(
                sso_pb2.GetUserRequest(user_id=str(user_id)), timeout=self._deadline,
                metadata=(("authorization", f"Bearer {access_token}"),))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise OwnerUnavailable(f"sso: {exc.code().name}") from exc
        return Owner(user_id=UUID(reply.user_id), email=reply.email, name=reply.name or None,
                     birthday=reply.birthday or None, is_admin=reply.is_admin)

    async def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            await self._channel.close()

