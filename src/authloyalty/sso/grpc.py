"""sso's gRPC edge (``auth.Auth``): parse, call one use case, shape the answer.

Domain errors become status codes in :mod:`authloyalty.platform.grpc`; messages of the original's
own checks ("email is required", ...) are kept so its clients see what they always saw.

The original's methods need no credentials (their requests carry what they check); ``GetUser``
answers only a caller of :mod:`authloyalty.sso.callers` allowed to read that user.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from uuid import UUID

import grpc
from pydantic import BaseModel, ValidationError

from authloyalty.platform import telemetry
from authloyalty.platform.errors import ValidationFailed
from authloyalty.platform.grpc import create_server
from authloyalty.rpc.sso import sso_pb2, sso_pb2_grpc
from authloyalty.sso.callers import CallerResolver, ServiceClients
from authloyalty.sso.schemas import LoginIn, RegisterIn, TokenIn
from authloyalty.sso.service import AuthService, Registration
from authloyalty.sso.settings import GrpcClientSettings

SERVICE_NAME = sso_pb2.DESCRIPTOR.services_by_name["Auth"].full_name
Context = grpc.aio.ServicerContext[Any, Any]


def _require_credentials(email: str, password: str) -> None:
    if not email:
        raise ValidationFailed("email is required")
    if not password:
        raise ValidationFailed("password is required")


def _user_id(value: str) -> UUID:
    if not value:
        raise ValidationFailed("userid is required")
    try:
        return UUID(value)
    except ValueError:
        raise ValidationFailed("userid must be a uuid") from None


Model = TypeVar("Model", bound=BaseModel)


def _validated(model: type[Model], fields: dict[str, Any]) -> Model:
    """``fields`` through the HTTP schema ``model``: one set of rules and limits for both
    transports (lengths, NUL and other control characters, email syntax, NFC)."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: "
                    f"{str(e['msg']).removeprefix('Value error, ')}" for e in exc.errors()]
        raise ValidationFailed("; ".join(problems)) from None


def _registration(request: sso_pb2.RegisterRequest) -> Registration:
    # proto3 sends "" for unset.
    body = _validated(RegisterIn, {
        "email": request.email, "password": request.password,
        "name": request.name or None, "birthday": request.birthday or None})
    return Registration(email=body.email, password=body.password, name=body.name,
                        birthday=body.birthday_date())


def _token(token: str) -> str:
    """A token within the HTTP limit (8 KiB); the original's clients send "" for none, which
    verification refuses as before."""
    return _validated(TokenIn, {"token": token}).token if token else token


def peer_address(peer: str) -> str:
    """The host of a gRPC peer string (``ipv4:1.2.3.4:5678``, ``ipv6:[::1]:5678``), for throttling
    per client rather than per connection."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]") or rest
    return peer or "unknown"


class AuthServicer(sso_pb2_grpc.AuthServicer):
    """``auth.Auth`` over :class:`AuthService`."""

    def __init__(self, service: AuthService, callers: CallerResolver) -> None:
        self._service = service
        self._callers = callers

    async def Register(self, request: sso_pb2.RegisterRequest,
                       context: Context) -> sso_pb2.RegisterResponse:
        _require_credentials(request.email, request.password)
        issued = await self._service.register(_registration(request))
        return sso_pb2.RegisterResponse(user_id=str(issued.user_id),
                                        access_token=issued.tokens.access_token,
                                        refresh_token=issued.tokens.refresh_token)

    async def Login(self, request: sso_pb2.LoginRequest,
                    context: Context) -> sso_pb2.LoginResponse:
        _require_credentials(request.email, request.password)
        body = _validated(LoginIn, {"email": request.email, "password": request.password})
        issued = await self._service.login(body.email, body.password,
                                           peer_address(context.peer()))
        return sso_pb2.LoginResponse(access_token=issued.tokens.access_token,
                                     refresh_token=issued.tokens.refresh_token,
                                     user_id=str(issued.user_id))

    async def Refresh(self, request: sso_pb2.RefreshRequest,
                      context: Context) -> sso_pb2.RefreshResponse:
        issued = await self._service.refresh(_token(request.refresh_token))
        return sso_pb2.RefreshResponse(access_token=issued.tokens.access_token,
                                       refresh_token=issued.tokens.refresh_token)

    async def IsAdmin(self, request: sso_pb2.IsAdminRequest,
                      context: Context) -> sso_pb2.IsAdminResponse:
        # A question about rights: answered by the leader, never by a lagging replica.
        user = await self._service.get_user(_user_id(request.user_id))
        # A deleted user has no rights (an unknown one stays NOT_FOUND, as in the original).
        return sso_pb2.IsAdminResponse(is_admin=user.is_admin and user.deleted_at is None)

    async def Logout(self, request: sso_pb2.LogoutRequest,
                     context: Context) -> sso_pb2.LogoutResponse:
        await self._service.logout(_token(request.token))
        return sso_pb2.LogoutResponse(success=True)

    async def Validate(self, request: sso_pb2.ValidateRequest,
                       context: Context) -> sso_pb2.ValidateResponse:
        claims = await self._service.authenticate(_token(request.token))
        return sso_pb2.ValidateResponse(success=True, user_id=str(claims.user_id),
                                        is_admin=claims.admin, token_type=claims.token_type,
                                        session_id=str(claims.session_id))

    async def GetUser(self, request: sso_pb2.GetUserRequest,
                      context: Context) -> sso_pb2.GetUserResponse:
        caller = await self._callers.caller(_authorization(context))
        user_id = _user_id(request.user_id)
        caller.check_may_read(user_id)
        user = await self._service.profile(user_id)
        return sso_pb2.GetUserResponse(
            user_id=str(user.id), email=user.email, name=user.name or "",
            birthday=user.birthday.isoformat() if user.birthday else "",
            is_admin=user.is_admin, deleted=user.deleted_at is not None)


def _authorization(context: Context) -> str | None:
    """The ``authorization`` metadata value; None when absent, "" (refused) when repeated."""
    values = [value for key, value in context.invocation_metadata() or ()
              if key == "authorization"]
    if len(values) > 1:
        return ""
    value = values[0] if values else None
    return value.decode("latin-1") if isinstance(value, bytes) else value


# The generated module has no annotations; this gives its registration function a type.
_add_servicer: Callable[[AuthServicer, grpc.aio.Server], None] = (
    sso_pb2_grpc.add_AuthServicer_to_server)


def build_grpc_server(service: AuthService, host: str, port: int,
                      clients: Sequence[GrpcClientSettings] = ()
                      ) -> tuple[grpc.aio.Server, int]:
    """sso's gRPC server, not yet started, and the port it will listen on (0 picks one);
    ``clients`` are the services that may read any user."""
    servicer = AuthServicer(service, CallerResolver(service, ServiceClients(clients)))
    return create_server(
        lambda server: _add_servicer(servicer, server),
        [SERVICE_NAME], host, port, interceptors=telemetry.grpc_server_interceptors())
