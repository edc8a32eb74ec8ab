"""sso's HTTP edge: parse, call one use case, shape the answer."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response

from authloyalty.platform.http.auth import BearerToken
from authloyalty.platform.http.health import health_router
from authloyalty.platform.http.responses import json_response, private_success, success
from authloyalty.platform.schemas import BODY_ERRORS, StatusOut, errors
from authloyalty.sso.schemas import LoginIn, RegisterIn, TokenIn, TokensOut, UserInfoOut
from authloyalty.sso.service import AuthService, IssuedTokens, Registration

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


router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/registration", status_code=201, response_model=TokensOut,
             responses=errors(*BODY_ERRORS, 409, 503))
async def register(body: RegisterIn, service: Service) -> Response:
    """Create a user; the answer already carries a session's tokens."""
    issued = await service.register(Registration(
        email=body.email, password=body.password, name=body.name,
        birthday=body.birthday_date()))
    return _tokens(201, issued)


@router.post("/login", response_model=TokensOut,
             responses=errors(*BODY_ERRORS, 401, 429, 503))
async def login(body: LoginIn, request: Request, service: Service) -> Response:
    """Exchange email and password for a new session's tokens."""
    return _tokens(200, await service.login(body.email, body.password, client_address(request)))


@router.post("/refresh", response_model=TokensOut, responses=errors(*BODY_ERRORS, 401, 503))
async def refresh(body: TokenIn, service: Service) -> Response:
    """Spend a refresh token for a new pair."""
    return _tokens(200, await service.refresh(body.token))


@router.post("/logout", response_model=StatusOut, responses=errors(*BODY_ERRORS, 401, 503))
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


def install(app: FastAPI) -> None:
    """Add sso's routes to ``app``."""
    app.include_router(health_router("/auth"))
    app.include_router(router)

    @app.get("/.well-known/jwks.json", tags=["auth"])
    async def jwks(request: Request) -> Response:
        """The public keys that verify our tokens."""
        document: dict[str, Any] = request.app.state.container.keys.jwks()
        return json_response(200, document, {"Cache-Control": "public, max-age=300"})
