"""sso's gRPC server, called over the wire by a client of the original's contract.

The server runs on the in-memory fakes. Most calls go through a client generated here, at test
time, from a .proto with only the original's definitions: old clients must keep working unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from authloyalty.events import UserRegistered
from authloyalty.loyalty.domain import OwnerUnavailable
from authloyalty.loyalty.owners import GrpcOwnerDirectory
from authloyalty.platform import telemetry
from authloyalty.platform.grpc import stop_server
from authloyalty.platform.tokens import (
    KeyStore,
    SigningKey,
    TokenIssuer,
    TokenVerifier,
    generate_private_key,
)
from authloyalty.rpc.sso import sso_pb2, sso_pb2_grpc
from authloyalty.sso.grpc import build_grpc_server
from authloyalty.sso.passwords import PasswordHasher
from authloyalty.sso.service import AuthService, Origin
from authloyalty.sso.settings import GrpcClientSettings, SsoSettings
from tests.conftest import FAST_ARGON2
from tests.fakes import FakeSsoStore

# The original's commands/proto/sso/sso.proto, field for field.
ORIGINAL_PROTO = """
syntax = "proto3";

package auth;

option go_package = "alexblacknn.sso.v1;ssov1";

service Auth {
  rpc Register (RegisterRequest) returns (RegisterResponse);
  rpc Login (LoginRequest) returns (LoginResponse);
  rpc Refresh (RefreshRequest) returns (RefreshResponse);
  rpc IsAdmin (IsAdminRequest) returns (IsAdminResponse);
  rpc Logout (LogoutRequest) returns (LogoutResponse);
  rpc Validate (ValidateRequest) returns (ValidateResponse);
}

message RegisterRequest { string email = 1; string password = 2; }
message RegisterResponse { string user_id = 1; }
message LoginRequest { string email = 1; string password = 2; }
message LoginResponse { string access_token = 1; string refresh_token = 2; }
message RefreshRequest { string refresh_token = 1; }
message RefreshResponse { string access_token = 1; string refresh_token = 2; }
message IsAdminRequest { string user_id = 1; }
message IsAdminResponse { bool is_admin = 1; }
message LogoutRequest { string token = 1; }
message LogoutResponse { bool success = 1; }
message ValidateRequest { string token = 1; }
message ValidateResponse { bool success = 1; }
"""

PASSWORD = "long enough"
Code = grpc.StatusCode
SERVICE_ID, SERVICE_SECRET = "reports", "s3cr3t-of-the-reports-service-0123456789"
SERVICE_CLIENTS = [GrpcClientSettings(
    id=SERVICE_ID, secret_sha256=hashlib.sha256(SERVICE_SECRET.encode()).hexdigest())]


@contextmanager
def _own_descriptor_pool() -> Iterator[None]:
    # Generated modules register into the process-wide pool, which already holds the server's
    # richer auth.* messages; the old client gets a pool of its own (the wire does not care).
    default = descriptor_pool.Default
    pool = descriptor_pool.DescriptorPool()
    descriptor_pool.Default = lambda: pool  # type: ignore[assignment]
    try:
        yield
    finally:
        descriptor_pool.Default = default  # type: ignore[assignment]


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Message classes and stub generated from the original-only .proto."""
    root = tmp_path_factory.mktemp("original-proto")
    (root / "sso").mkdir()
    (root / "sso" / "sso.proto").write_text(ORIGINAL_PROTO)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(root), f"--python_out={root}",
         f"--grpc_python_out={root}", "sso/sso.proto"], check=True, capture_output=True)
    sys.path.insert(0, str(root))
    try:
        with _own_descriptor_pool():
            pb2 = importlib.import_module("sso.sso_pb2")
            pb2_grpc = importlib.import_module("sso.sso_pb2_grpc")
    finally:
        sys.path.remove(str(root))
        for name in ("sso", "sso.sso_pb2", "sso.sso_pb2_grpc"):
            sys.modules.pop(name, None)
    assert "user_id" not in pb2.LoginResponse.DESCRIPTOR.fields_by_name  # really the old one
    return SimpleNamespace(pb=pb2, stub=pb2_grpc.AuthStub)


def make_service(store: FakeSsoStore) -> AuthService:
    cfg = SsoSettings.model_validate({"argon2": FAST_ARGON2.model_dump()})
    keys = KeyStore([SigningKey.from_private(generate_private_key("EdDSA"))])
    issuer = TokenIssuer(keys, cfg.issuer, cfg.access_token_ttl_seconds,
                         cfg.refresh_token_ttl_seconds)
    return AuthService(store.uow, PasswordHasher(cfg.argon2), issuer,
                       TokenVerifier(keys, cfg.issuer), cfg)


@pytest.fixture
def store() -> FakeSsoStore:
    return FakeSsoStore()


@pytest.fixture
def service(store: FakeSsoStore) -> AuthService:
    return make_service(store)


@pytest.fixture
async def server(service: AuthService) -> AsyncIterator[tuple[grpc.aio.Server, int]]:
    built, port = build_grpc_server(service, "127.0.0.1", 0, SERVICE_CLIENTS)
    await built.start()
    try:
        yield built, port
    finally:
        await stop_server(built, grace=0)


@pytest.fixture
async def channel(server: tuple[grpc.aio.Server, int]) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server[1]}") as opened:
        yield opened


@pytest.fixture
def old(original: SimpleNamespace, channel: grpc.aio.Channel) -> Any:
    """A stub of the original's client."""
    return original.stub(channel)


@pytest.fixture
def new(channel: grpc.aio.Channel) -> sso_pb2_grpc.AuthStub:
    """A stub of today's contract (new fields, GetUser)."""
    return sso_pb2_grpc.AuthStub(channel)


async def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    padded = payload + "=" * (-len(payload) % 4)
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return decoded


async def register(old: Any, original: SimpleNamespace, email: str) -> str:
    reply = await old.Register(original.pb.RegisterRequest(email=email, password=PASSWORD))
    user_id: str = reply.user_id
    return user_id


async def login(old: Any, original: SimpleNamespace, email: str) -> Any:
    return await old.Login(original.pb.LoginRequest(email=email, password=PASSWORD))


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def basic(client_id: str, secret: str) -> tuple[tuple[str, str]]:
    credentials = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return (("authorization", f"Basic {credentials}"),)


AS_SERVICE = basic(SERVICE_ID, SERVICE_SECRET)


async def test_is_admin_true_for_a_seeded_admin_and_false_for_a_user(
    old: Any, original: SimpleNamespace, service: AuthService
) -> None:
    admin_id, _ = await service.ensure_admin("admin@example.com", PASSWORD)
    user_id = await register(old, original, "user@example.com")
    pb = original.pb
    assert (await old.IsAdmin(pb.IsAdminRequest(user_id=str(admin_id)))).is_admin is True
    assert (await old.IsAdmin(pb.IsAdminRequest(user_id=user_id))).is_admin is False


async def test_is_admin_is_false_for_an_admin_who_deleted_the_account(
    old: Any, original: SimpleNamespace, service: AuthService
) -> None:
    await service.ensure_admin("keeper@example.com", PASSWORD)  # the last admin stays
    admin_id, _ = await service.ensure_admin("leaver@example.com", PASSWORD)
    issued = await service.login("leaver@example.com", PASSWORD, "x")
    await service.delete_account(issued.tokens.access_token, PASSWORD, Origin("x"))
    request = original.pb.IsAdminRequest(user_id=str(admin_id))
    assert (await old.IsAdmin(request)).is_admin is False


async def test_is_admin_refuses_missing_malformed_and_unknown_ids(
    old: Any, original: SimpleNamespace
) -> None:
    pb = original.pb
    assert await status_of(old.IsAdmin(pb.IsAdminRequest())) == (
        Code.INVALID_ARGUMENT, "userid is required")
    code, _ = await status_of(old.IsAdmin(pb.IsAdminRequest(user_id="not-a-uuid")))
    assert code == Code.INVALID_ARGUMENT
    code, _ = await status_of(old.IsAdmin(pb.IsAdminRequest(user_id=str(uuid4()))))
    assert code == Code.NOT_FOUND


async def test_register_then_login_gives_tokens_with_the_users_claims(
    old: Any, original: SimpleNamespace, store: FakeSsoStore
) -> None:
    user_id = await register(old, original, "claims@example.com")
    [event] = store.state.outbox  # same use case as HTTP: the welcome bonus is announced
    assert event.event == UserRegistered(UUID(user_id))
    reply = await login(old, original, "claims@example.com")
    access, refresh = claims(reply.access_token), claims(reply.refresh_token)
    assert access["uid"] == access["sub"] == refresh["uid"] == user_id
    assert (access["token_type"], refresh["token_type"]) == ("access", "refresh")
    assert access["sid"] == refresh["sid"]
    assert "email" not in access


async def test_register_answers_tokens_name_and_birthday_in_new_fields(
    new: sso_pb2_grpc.AuthStub,
) -> None:
    reply = await new.Register(sso_pb2.RegisterRequest(
        email="Ann@Example.com", password=PASSWORD, name="Ann", birthday="1990-05-17"))
    assert claims(reply.access_token)["uid"] == reply.user_id
    assert claims(reply.refresh_token)["token_type"] == "refresh"
    user = await new.GetUser(sso_pb2.GetUserRequest(user_id=reply.user_id),
                             metadata=bearer(reply.access_token))
    assert (user.user_id, user.email, user.name, user.birthday, user.is_admin) == (
        reply.user_id, "Ann@Example.com", "Ann", "1990-05-17", False)
    login = await new.Login(sso_pb2.LoginRequest(email="ann@example.com", password=PASSWORD))
    assert login.user_id == reply.user_id


async def test_register_refuses_a_bad_birthday_with_its_field(
    new: sso_pb2_grpc.AuthStub,
) -> None:
    code, message = await status_of(new.Register(sso_pb2.RegisterRequest(
        email="bday@example.com", password=PASSWORD, birthday="17.05.1990")))
    assert code == Code.INVALID_ARGUMENT
    assert message.startswith("birthday:")


async def test_duplicate_registration_is_already_exists(
    old: Any, original: SimpleNamespace
) -> None:
    await register(old, original, "dup@example.com")
    request = original.pb.RegisterRequest(email="DUP@example.com", password="another one")
    assert await status_of(old.Register(request)) == (
        Code.ALREADY_EXISTS, "user already exists")


@pytest.mark.parametrize("method", ["Register", "Login"])
@pytest.mark.parametrize(("email", "password", "message"), [
    ("", "", "email is required"),  # email is checked first
    ("", PASSWORD, "email is required"),
    ("someone@example.com", "", "password is required"),
])
async def test_empty_email_or_password_is_invalid_argument_with_the_originals_messages(
    old: Any, original: SimpleNamespace, method: str, email: str, password: str, message: str
) -> None:
    request = getattr(original.pb, f"{method}Request")(email=email, password=password)
    assert await status_of(getattr(old, method)(request)) == (Code.INVALID_ARGUMENT, message)


async def test_bad_credentials_are_unauthenticated_and_throttled_per_peer_host(
    old: Any, original: SimpleNamespace, store: FakeSsoStore
) -> None:
    await register(old, original, "creds@example.com")
    request = original.pb.LoginRequest(email="creds@example.com", password="wrong password")
    code, _ = await status_of(old.Login(request))
    assert code == Code.UNAUTHENTICATED
    assert [client for _, client, _ in store.state.failures] == ["127.0.0.1"]
    for _ in range(4):
        await status_of(old.Login(request))
    code, _ = await status_of(old.Login(request))
    assert code == Code.RESOURCE_EXHAUSTED


async def test_refresh_rotates_and_reuse_is_unauthenticated(
    old: Any, original: SimpleNamespace
) -> None:
    await register(old, original, "refresh@example.com")
    first = await login(old, original, "refresh@example.com")
    pb = original.pb
    second = await old.Refresh(pb.RefreshRequest(refresh_token=first.refresh_token))
    assert second.refresh_token != first.refresh_token
    assert claims(second.access_token)["sid"] == claims(first.access_token)["sid"]
    code, _ = await status_of(old.Refresh(pb.RefreshRequest(refresh_token=first.refresh_token)))
    assert code == Code.UNAUTHENTICATED
    # Reuse ended the session: the rotated token is refused too.
    code, _ = await status_of(old.Refresh(pb.RefreshRequest(refresh_token=second.refresh_token)))
    assert code == Code.UNAUTHENTICATED


async def test_validate_then_logout_then_validate_is_unauthenticated(
    old: Any, original: SimpleNamespace, new: sso_pb2_grpc.AuthStub
) -> None:
    user_id = await register(old, original, "logout@example.com")
    tokens = await login(old, original, "logout@example.com")
    pb = original.pb
    assert (await old.Validate(pb.ValidateRequest(token=tokens.access_token))).success is True
    full = await new.Validate(sso_pb2.ValidateRequest(token=tokens.access_token))
    assert (full.success, full.user_id, full.is_admin, full.token_type, full.session_id) == (
        True, user_id, False, "access", claims(tokens.access_token)["sid"])
    assert (await old.Logout(pb.LogoutRequest(token=tokens.refresh_token))).success is True
    code, _ = await status_of(old.Validate(pb.ValidateRequest(token=tokens.access_token)))
    assert code == Code.UNAUTHENTICATED
    code, _ = await status_of(old.Logout(pb.LogoutRequest(token=tokens.access_token)))
    assert code == Code.UNAUTHENTICATED


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "refresh"])
async def test_validate_refuses_bad_tokens_with_unauthenticated_never_unknown(
    old: Any, original: SimpleNamespace, token: str
) -> None:
    if token == "refresh":
        await register(old, original, "validate@example.com")
        token = (await login(old, original, "validate@example.com")).refresh_token
    code, _ = await status_of(old.Validate(original.pb.ValidateRequest(token=token)))
    assert code == Code.UNAUTHENTICATED


async def test_get_user_of_an_unknown_or_malformed_id(new: sso_pb2_grpc.AuthStub) -> None:
    code, _ = await status_of(new.GetUser(sso_pb2.GetUserRequest(user_id=str(uuid4())),
                                          metadata=AS_SERVICE))
    assert code == Code.NOT_FOUND
    code, _ = await status_of(new.GetUser(sso_pb2.GetUserRequest(user_id="nope"),
                                          metadata=AS_SERVICE))
    assert code == Code.INVALID_ARGUMENT


async def test_get_user_with_no_name_or_birthday_answers_empty_strings(
    old: Any, original: SimpleNamespace, new: sso_pb2_grpc.AuthStub
) -> None:
    user_id = await register(old, original, "plain@example.com")
    user = await new.GetUser(sso_pb2.GetUserRequest(user_id=user_id), metadata=AS_SERVICE)
    assert (user.email, user.name, user.birthday) == ("plain@example.com", "", "")



async def test_get_user_says_whether_the_account_is_deleted_and_purged(
    new: sso_pb2_grpc.AuthStub, service: AuthService, store: FakeSsoStore
) -> None:
    reply = await new.Register(sso_pb2.RegisterRequest(
        email="Gone@Example.com", password=PASSWORD, name="Ann", birthday="1990-05-17"))
    request = sso_pb2.GetUserRequest(user_id=reply.user_id)
    assert (await new.GetUser(request, metadata=AS_SERVICE)).deleted is False

    await service.delete_account(reply.access_token, PASSWORD, Origin("127.0.0.1"))
    user = await new.GetUser(request, metadata=AS_SERVICE)
    # Deleted but restorable: the profile is still there.
    assert (user.user_id, user.email, user.name, user.birthday, user.deleted) == (
        reply.user_id, "Gone@Example.com", "Ann", "1990-05-17", True)

    now = datetime.now(UTC)
    async with store.uow() as uow:
        assert await uow.users.purge_deleted(now + timedelta(seconds=1), now, 500) == [
            UUID(reply.user_id)]
        await uow.commit()
    user = await new.GetUser(request, metadata=AS_SERVICE)
    assert (user.user_id, user.email, user.name, user.birthday, user.deleted) == (
        reply.user_id, "", "", "", True)

def requests_counted(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value("authloyalty_grpc_requests_total",
                                      {"method": f"/auth.Auth/{method}", "code": code})
    return value or 0.0


async def test_an_unexpected_exception_is_internal_and_the_server_keeps_serving(
    old: Any, original: SimpleNamespace, service: AuthService,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*_: object) -> None:
        raise RuntimeError("database exploded: secret detail")

    user_id = await register(old, original, "internal@example.com")
    before = requests_counted("IsAdmin", "INTERNAL")
    monkeypatch.setattr(service, "get_user", broken)
    request = original.pb.IsAdminRequest(user_id=user_id)
    assert await status_of(old.IsAdmin(request)) == (Code.INTERNAL, "internal error")
    assert "database exploded" in caplog.text  # logged for us, not told to the client
    assert requests_counted("IsAdmin", "INTERNAL") == before + 1
    monkeypatch.undo()
    assert (await old.IsAdmin(request)).is_admin is False


async def test_a_call_past_its_deadline_is_cancelled_and_the_server_keeps_serving(
    old: Any, original: SimpleNamespace, service: AuthService, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id = await register(old, original, "slow@example.com")
    cancelled = asyncio.Event()
    real_get_user = service.get_user

    async def slow(*_: object) -> None:
        try:
            await asyncio.sleep(30)
        finally:
            cancelled.set()

    monkeypatch.setattr(service, "get_user", slow)
    request = original.pb.IsAdminRequest(user_id=user_id)
    before = requests_counted("IsAdmin", "DEADLINE_EXCEEDED")
    code, _ = await status_of(old.IsAdmin(request, timeout=0.2))
    assert code == Code.DEADLINE_EXCEEDED
    await asyncio.wait_for(cancelled.wait(), 5)  # the handler did not run on
    assert requests_counted("IsAdmin", "DEADLINE_EXCEEDED") == before + 1
    monkeypatch.setattr(service, "get_user", real_get_user)
    assert (await old.IsAdmin(request)).is_admin is False


async def test_graceful_stop_finishes_calls_in_flight_and_refuses_new_ones(
    old: Any, original: SimpleNamespace, service: AuthService,
    server: tuple[grpc.aio.Server, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id = await register(old, original, "graceful@example.com")
    real_get_user = service.get_user
    started = asyncio.Event()

    async def slow(user: Any) -> Any:
        started.set()
        await asyncio.sleep(0.3)
        return await real_get_user(user)

    monkeypatch.setattr(service, "get_user", slow)
    request = original.pb.IsAdminRequest(user_id=user_id)
    in_flight = asyncio.ensure_future(old.IsAdmin(request))
    await started.wait()
    await stop_server(server[0], grace=5)
    assert (await in_flight).is_admin is False
    code, _ = await status_of(old.IsAdmin(request, timeout=1))
    assert code == Code.UNAVAILABLE


async def test_logs_name_the_call_but_never_passwords_or_tokens(
    old: Any, original: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await register(old, original, "quiet@example.com")
    tokens = await login(old, original, "quiet@example.com")
    await old.Validate(original.pb.ValidateRequest(token=tokens.access_token))
    assert "/auth.Auth/Login OK" in caplog.text
    for secret in (PASSWORD, tokens.access_token, tokens.refresh_token):
        assert secret not in caplog.text


async def test_health_reports_serving_for_the_server_and_auth(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", "auth.Auth"):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    code, _ = await status_of(stub.Check(health_pb2.HealthCheckRequest(service="nope.Nope")))
    assert code == Code.NOT_FOUND


async def test_reflection_lists_auth_and_describes_the_new_method(
    channel: grpc.aio.Channel,
) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="auth.Auth")]
    replies = [reply async for reply in stub.ServerReflectionInfo(iter(requests))]
    services = {s.name for s in replies[0].list_services_response.service}
    assert {"auth.Auth", "grpc.health.v1.Health"} <= services
    [serialized] = replies[1].file_descriptor_response.file_descriptor_proto
    assert b"GetUser" in serialized


def _identity(raw: bytes) -> bytes:
    return raw


@pytest.mark.parametrize("method", ["Login", "Register", "GetUser"])
@pytest.mark.parametrize("payload", [
    b"\x0a\x02\xff\xfe",  # field 1 (a string) holding invalid UTF-8
    b"\xff\xff\xff",  # not protobuf wire format at all
])
async def test_malformed_protobuf_bytes_are_invalid_argument_without_a_traceback(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture, method: str, payload: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    before = requests_counted(method, "INVALID_ARGUMENT")
    call = channel.unary_unary(f"/auth.Auth/{method}", request_serializer=_identity,
                               response_deserializer=_identity)
    code, message = await status_of(call(payload))
    assert code == Code.INVALID_ARGUMENT
    assert message == f"request is not a valid auth.{method}Request protobuf"
    for leak in ("DecodeError", "class", "Unexpected"):
        assert leak not in message
    for leak in ("DecodeError", "Traceback"):
        assert leak not in caplog.text
    # The server logs and counts the call once its answer is on the way: the client may hear
    # the answer first.
    for _ in range(100):
        if requests_counted(method, "INVALID_ARGUMENT") == before + 1 \
                and f"/auth.Auth/{method} INVALID_ARGUMENT" in caplog.text:
            break
        await asyncio.sleep(0.05)
    assert f"/auth.Auth/{method} INVALID_ARGUMENT" in caplog.text
    assert requests_counted(method, "INVALID_ARGUMENT") == before + 1
    assert not [r for r in caplog.records if r.exc_info]
    # The server keeps serving well-formed calls.
    health = health_pb2_grpc.HealthStub(channel)
    assert (await health.Check(health_pb2.HealthCheckRequest())).status == (
        health_pb2.HealthCheckResponse.SERVING)


async def test_with_tracing_on_calls_and_malformed_requests_are_spans_with_their_codes(
    service: AuthService,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_provider(provider)
    try:
        built, port = build_grpc_server(service, "127.0.0.1", 0)
    finally:
        telemetry.use_provider(None)
    await built.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = sso_pb2_grpc.AuthStub(channel)
            await stub.Register(sso_pb2.RegisterRequest(email="span@example.com",
                                                        password=PASSWORD))
            raw = channel.unary_unary("/auth.Auth/Login", request_serializer=_identity,
                                      response_deserializer=_identity)
            code, _ = await status_of(raw(b"\xff\xff\xff"))
            assert code == Code.INVALID_ARGUMENT
    finally:
        await stop_server(built, grace=0)
        provider.shutdown()
    codes = {span.name: (span.attributes or {}).get("rpc.grpc.status_code")
             for span in exporter.get_finished_spans()}
    assert codes == {"/auth.Auth/Register": Code.OK.value[0],
                     "/auth.Auth/Login": Code.INVALID_ARGUMENT.value[0]}


async def test_get_user_answers_only_the_user_an_admin_or_a_configured_service(
    old: Any, original: SimpleNamespace, new: sso_pb2_grpc.AuthStub, service: AuthService
) -> None:
    ann = await register(old, original, "ann-getuser@example.com")
    bob = await register(old, original, "bob-getuser@example.com")
    await service.ensure_admin("admin-getuser@example.com", PASSWORD)
    ann_token = (await login(old, original, "ann-getuser@example.com")).access_token
    bob_token = (await login(old, original, "bob-getuser@example.com")).access_token
    admin_token = (await login(old, original, "admin-getuser@example.com")).access_token
    request = sso_pb2.GetUserRequest(user_id=ann)

    async def refused(metadata: Any = None, req: Any = request) -> grpc.StatusCode:
        code, message = await status_of(new.GetUser(req, metadata=metadata))
        assert "ann-getuser" not in message
        return code

    # Nobody proven: no metadata at all, or a malformed id asked for anonymously.
    assert await refused() == Code.UNAUTHENTICATED
    assert await refused(req=sso_pb2.GetUserRequest(user_id="nope")) == Code.UNAUTHENTICATED
    # Another user: proven, but not allowed (also for ids that do not exist).
    assert await refused(bearer(bob_token)) == Code.PERMISSION_DENIED
    ghost = sso_pb2.GetUserRequest(user_id=str(uuid4()))
    assert await refused(bearer(bob_token), ghost) == Code.PERMISSION_DENIED
    # The user themself, an admin and a configured service are answered.
    for metadata in (bearer(ann_token), bearer(admin_token), AS_SERVICE):
        reply = await new.GetUser(request, metadata=metadata)
        assert (reply.user_id, reply.email) == (ann, "ann-getuser@example.com")
    assert (await new.GetUser(sso_pb2.GetUserRequest(user_id=bob),
                              metadata=bearer(admin_token))).email == "bob-getuser@example.com"


@pytest.mark.parametrize("authorization", [
    "Basic " + base64.b64encode(f"{SERVICE_ID}:wrong secret".encode()).decode(),
    "Basic " + base64.b64encode(f"someone-else:{SERVICE_SECRET}".encode()).decode(),
    "Basic " + base64.b64encode(SERVICE_ID.encode()).decode(),  # no secret at all
    "Basic !!not-base64!!",
    "Basic ",
    "Bearer ",
    "Bearer not.a.token",
    "Token abc",
    SERVICE_SECRET,
])
async def test_get_user_refuses_wrong_credentials_as_unauthenticated(
    old: Any, original: SimpleNamespace, new: sso_pb2_grpc.AuthStub, authorization: str
) -> None:
    user_id = await register(old, original, "wrong-creds@example.com")
    code, message = await status_of(new.GetUser(
        sso_pb2.GetUserRequest(user_id=user_id), metadata=(("authorization", authorization),)))
    assert code == Code.UNAUTHENTICATED
    assert SERVICE_SECRET not in message


async def test_get_user_refuses_refresh_tokens_and_tokens_of_ended_sessions(
    old: Any, original: SimpleNamespace, new: sso_pb2_grpc.AuthStub
) -> None:
    user_id = await register(old, original, "ended@example.com")
    tokens = await login(old, original, "ended@example.com")
    request = sso_pb2.GetUserRequest(user_id=user_id)
    code, _ = await status_of(new.GetUser(request, metadata=bearer(tokens.refresh_token)))
    assert code == Code.UNAUTHENTICATED
    assert (await new.GetUser(request, metadata=bearer(tokens.access_token))).user_id == user_id
    await old.Logout(original.pb.LogoutRequest(token=tokens.refresh_token))
    code, _ = await status_of(new.GetUser(request, metadata=bearer(tokens.access_token)))
    assert code == Code.UNAUTHENTICATED


async def test_loyaltys_owner_directory_asks_with_the_admins_token(
    old: Any, original: SimpleNamespace, service: AuthService,
    server: tuple[grpc.aio.Server, int]
) -> None:
    user_id = await register(old, original, "owned-grpc@example.com")
    user_token = (await login(old, original, "owned-grpc@example.com")).access_token
    await service.ensure_admin("admin-owners@example.com", PASSWORD)
    admin_token = (await login(old, original, "admin-owners@example.com")).access_token
    directory = GrpcOwnerDirectory(f"127.0.0.1:{server[1]}", deadline_seconds=5)
    try:
        owner = await directory.owner(UUID(user_id), admin_token)
        assert owner is not None
        assert (str(owner.user_id), owner.email) == (user_id, "owned-grpc@example.com")
        assert await directory.owner(uuid4(), admin_token) is None
        with pytest.raises(OwnerUnavailable, match="PERMISSION_DENIED"):
            await directory.owner(uuid4(), user_token)
    finally:
        await directory.close()
