"""gRPC over the wire: malformed request bytes are the client's mistake (INVALID_ARGUMENT, no
traceback in the server's log), and GetUser answers only the user themself or an admin."""

from __future__ import annotations

import grpc
import pytest

from authloyalty.rpc.sso import sso_pb2, sso_pb2_grpc
from tests.e2e.e2e_helpers import ADMIN_EMAIL, ADMIN_PASSWORD, Api, Server

pytestmark = pytest.mark.e2e


def _identity(raw: bytes) -> bytes:
    return raw


async def _refusal(call: grpc.aio.UnaryUnaryCall[object, object]
                   ) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


@pytest.mark.parametrize("payload", [b"\x0a\x02\xff\xfe", b"\xff\xff\xff"])
async def test_malformed_protobuf_is_invalid_argument_and_logs_no_traceback(
    channel: grpc.aio.Channel, target: Server, payload: bytes
) -> None:
    login = channel.unary_unary("/auth.Auth/Login", request_serializer=_identity,
                                response_deserializer=_identity)
    code, details = await _refusal(login(payload))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT,
                               "request is not a valid auth.LoginRequest protobuf")
    assert "Traceback" not in target.output()
    assert "DecodeError" not in target.output()


async def test_get_user_answers_only_the_user_themself_or_an_admin(
    channel: grpc.aio.Channel, api: Api
) -> None:
    stub = sso_pb2_grpc.AuthStub(channel)
    ann, bob = api.register(name="Ann"), api.register()
    admin = api.login(ADMIN_EMAIL, ADMIN_PASSWORD)
    request = sso_pb2.GetUserRequest(user_id=ann.user_id)

    def bearer(token: str) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {token}"),)

    code, details = await _refusal(stub.GetUser(request))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert ann.email not in details
    code, _ = await _refusal(stub.GetUser(request, metadata=bearer(bob.access)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    for token in (ann.access, admin.access):
        reply = await stub.GetUser(request, metadata=bearer(token))
        assert (reply.user_id, reply.email, reply.name) == (ann.user_id, ann.email, "Ann")
    # A session that ended (logout) no longer proves anything.
    assert api.sso("POST", "/auth/logout", json={"token": ann.refresh}).status_code == 200
    code, _ = await _refusal(stub.GetUser(request, metadata=bearer(ann.access)))
    assert code == grpc.StatusCode.UNAUTHENTICATED
