"""sso's HTTP edge: parse, call one use case, shape the answer."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import ip_address, ip_network
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response

from authloyalty.platform.http.auth import BearerToken
from authloyalty.platform.http.fast import FastRoute
from authloyalty.platform.http.health import health_router
from authloyalty.platform.http.responses import (
    PrivateJSONResponse,
    json_response,
    private_success,
    success,
)
from authloyalty.platform.schemas import BODY_ERRORS, StatusOut, errors
from authloyalty.sso.domain import Session
from authloyalty.sso.schemas import (
    EndedOut,
    LoginIn,
    PasswordChangedOut,
    PasswordChangeIn,
    RegisterIn,
    SessionsOut,
    TokenIn,
    TokensOut,
    UserInfoOut,
)
from authloyalty.sso.service import AuthService, IssuedTokens, Origin, Registration

AccessToken = Annotated[str, Depends(BearerToken())]


def _tokens(status: int, issued: IssuedTokens) -> Response:
    return private_success(status, user_id=str(issued.user_id),
                           access_token=issued.tokens.access_token,
                           refresh_token=issued.tokens.refresh_token)


async def _service(request: Request) -> AuthService:
    service: AuthService = request.app.state.container.service
    return service


Service = Annotated[AuthService, Depends(_service)]


def client_address(request: Request) -> str:
    """The caller's address; X-Forwarded-For is believed only from a trusted proxy."""
    peer = request.client.host if request.client else "unknown"
    trusted = request.app.state.container.settings.trusted_proxies
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded and trusted and _is_trusted(peer, trusted):
        return forwarded.split(",")[0].strip()[:64]
    return peer


def _is_trusted(peer: str, trusted: list[str]) -> bool:
    try:
        address = ip_address(peer)
    except ValueError:
        return False
    return any(address in ip_network(net, strict=False) for net in trusted)


def origin(request: Request) -> Origin:
    """Where a session-opening request came from: its client address and User-Agent."""
    return Origin(client_address(request), request.headers.get("User-Agent") or None)


def iso(moment: datetime | None) -> str | None:
    """``moment`` in UTC, ISO 8601 with a ``Z``."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


def _session_item(session: Session, current: UUID) -> dict[str, Any]:
    return {"id": str(session.id), "created_at": iso(session.created_at),
            "last_used_at": iso(session.last_used_at), "user_agent": session.user_agent,
            "ip": session.ip, "current": session.id == current}


router = APIRouter(prefix="/auth", tags=["auth"])
# The routes every client calls again and again (a refresh per access token's lifetime) skip
# FastAPI's per-request dependency resolution; everything else about them comes from their
# declaration, as for the others (platform.http.fast).
hot_router = APIRouter(prefix="/auth", tags=["auth"],
                       default_response_class=PrivateJSONResponse, route_class=FastRoute)


@router.post("/registration", status_code=201, response_model=TokensOut,
             responses=errors(*BODY_ERRORS, 409, 503))
async def register(body: RegisterIn, request: Request, service: Service) -> Response:
    """Create a user; the answer already carries a session's tokens."""
    issued = await service.register(Registration(
        email=body.email, password=body.password, name=body.name,
        birthday=body.birthday_date()), origin=origin(request))
    return _tokens(201, issued)


@router.post("/login", response_model=TokensOut,
             responses=errors(*BODY_ERRORS, 401, 429, 503))
async def login(body: LoginIn, request: Request, service: Service) -> Response:
    """Exchange email and password for a new session's tokens."""
    where = origin(request)
    return _tokens(200, await service.login(body.email, body.password, where.ip or "unknown",
                                            where.user_agent))


@hot_router.post("/refresh", response_model=TokensOut, responses=errors(*BODY_ERRORS, 401, 503))
async def refresh(body: TokenIn, service: Service) -> Response:
    """Spend a refresh token for a new pair."""
    return _tokens(200, await service.refresh(body.token))


@hot_router.post("/logout", response_model=StatusOut, responses=errors(*BODY_ERRORS, 401, 503))
async def logout(body: TokenIn, service: Service) -> Response:
    """End the session of the given access or refresh token."""
    await service.logout(body.token)
    return success(200)


@router.get("/info", response_model=UserInfoOut, responses=errors(401, 503))
async def info(token: AccessToken, service: Service) -> Response:
    """The authenticated user's profile."""
    user = await service.user_info(token)
    return private_success(200, user_id=str(user.id), email=user.email, name=user.name,
                           birthday=user.birthday.isoformat() if user.birthday else None,
                           is_admin=user.is_admin)


@router.get("/sessions", response_model=SessionsOut, responses=errors(401, 503))
async def list_sessions(token: AccessToken, service: Service) -> Response:
    """The caller's active sessions, newest first; ``current`` marks this token's."""
    found = await service.sessions(token)
    return private_success(200, items=[_session_item(s, found.current)
                                       for s in found.sessions])


@router.delete("/sessions/{session_id}", response_model=StatusOut,
               responses=errors(401, 404, 422, 503))
async def end_session(session_id: UUID, token: AccessToken, service: Service) -> Response:
    """End one of the caller's sessions, as a logout of it would; an id that is not one of
    the caller's active sessions answers 404 ``session_not_found``, one that is not a UUID
    422 (as every UUID in a path)."""
    await service.end_session(token, session_id)
    return success(200)


@router.delete("/sessions", response_model=EndedOut, responses=errors(401, 503))
async def end_other_sessions(token: AccessToken, service: Service) -> Response:
    """End every session of the caller except the current one."""
    return success(200, ended=await service.end_other_sessions(token))


@router.post("/password", response_model=PasswordChangedOut,
             responses=errors(*BODY_ERRORS, 401, 429, 503))
async def change_password(body: PasswordChangeIn, token: AccessToken, request: Request,
                          service: Service) -> Response:
    """Change the password: every session of the user ends, the answer opens a new one."""
    issued = await service.change_password(token, body.current_password, body.new_password,
                                           origin(request))
    return private_success(200, access_token=issued.tokens.access_token,
                           refresh_token=issued.tokens.refresh_token)


def install(app: FastAPI) -> None:
    """Add sso's routes to ``app``."""
    app.include_router(health_router("/auth"))
    app.include_router(hot_router)
    app.include_router(router)
    # Imported here: these routes build on this module's dependencies.
    from authloyalty.sso import account_http
    app.include_router(account_http.router)
    # Imported here: the admin routes build on this module's dependencies.
    from authloyalty.sso import admin_http
    app.include_router(admin_http.router)
    app.include_router(admin_http.audit_router)

    @app.get("/.well-known/jwks.json", tags=["auth"])
    async def jwks(request: Request) -> Response:
        """The public keys that verify our tokens."""
        document: dict[str, Any] = request.app.state.container.keys.jwks()
        return json_response(200, document, {"Cache-Control": "public, max-age=300"})
