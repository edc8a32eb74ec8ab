"""loyalty's HTTP edge: parse, call one use case, shape the answer."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.requests import HTTPConnection

from authloyalty.loyalty.domain import Kind, LedgerEntry, LegacyReply, MovementResult, Principal
from authloyalty.loyalty.revocations import Authenticator
from authloyalty.loyalty.schemas import (
    AdminAccountOut,
    BalanceOut,
    HistoryOut,
    MovementIn,
    MovementOut,
    OwnerOut,
    SeedOperationIn,
    TransactionOut,
)
from authloyalty.loyalty.service import Idempotency, LedgerService, Operation
from authloyalty.platform.audit import AuditQuery
from authloyalty.platform.errors import Forbidden, ValidationFailed
from authloyalty.platform.http.audit import (
    ActorFilter,
    AuditCursor,
    AuditLimit,
    AuditPageOut,
    TargetFilter,
    audit_page_out,
)
from authloyalty.platform.http.auth import BearerToken, bearer_token
from authloyalty.platform.http.fast import FastRoute
from authloyalty.platform.http.health import health_router
from authloyalty.platform.http.responses import NO_STORE, PrivateJSONResponse
from authloyalty.platform.schemas import BODY_ERRORS, errors


class _Caller(BearerToken):
    """The caller behind the bearer token: one dependency where a token dependency under a
    principal dependency cost a visible share of a short request."""

    async def __call__(self, request: HTTPConnection) -> Principal:  # type: ignore[override]
        token = bearer_token(request.scope)
        authenticator: Authenticator = request.app.state.container.authenticator
        return authenticator.known_principal(token) or await authenticator.principal(token)


async def _admin(principal: Annotated[Principal, Depends(_Caller())]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("admin rights required")
    return principal


async def _service(request: Request) -> LedgerService:
    # async: a plain def dependency would hop to a worker thread on every request
    service: LedgerService = request.app.state.container.service
    return service


CurrentUser = Annotated[Principal, Depends(_Caller())]
AdminUser = Annotated[Principal, Depends(_admin)]
Service = Annotated[LedgerService, Depends(_service)]
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
    description="Repeat a request safely: same key and body → same answer, applied once")]
Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=32)]


def _transaction(entry: LedgerEntry) -> TransactionOut:
    return TransactionOut(
        id=entry.id, kind=entry.kind, amount=entry.amount, comment=entry.comment,
        balance_after=entry.balance_after,
        created_at=entry.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"))


def _legacy(reply: LegacyReply) -> Response:
    # Replayed as stored; as private as the first answer was.
    return Response(reply.body, status_code=reply.status, media_type="application/json",
                    headers=NO_STORE)


def _movement_out(result: MovementResult) -> MovementOut | Response:
    if isinstance(result, LegacyReply):
        return _legacy(result)
    return MovementOut(balance=result.balance_after, transaction=_transaction(result))


def _seed_out(result: MovementResult) -> BalanceOut | Response:
    if isinstance(result, LegacyReply):
        return _legacy(result)
    return BalanceOut(uuid=str(result.account_id), balance=result.balance_after)


async def _move(service: LedgerService, actor: Principal, account_id: UUID, kind: Kind,
                body: MovementIn, key: str | None, route: str) -> MovementOut | Response:
    op = Operation(actor=actor, account_id=account_id, kind=kind, amount=body.amount,
                   comment=body.comment)
    idem = Idempotency.of(key, route, account_id, body.model_dump()) if key else None
    return _movement_out(await service.operate(op, idem))


def _history(page_items: list[LedgerEntry], next_cursor: str | None) -> HistoryOut:
    return HistoryOut(items=[_transaction(e) for e in page_items], next_cursor=next_cursor)


def _router(route_class: type[APIRoute] = APIRoute) -> APIRouter:
    # Every answer of these routes is personal: PrivateJSONResponse says no-store.
    return APIRouter(prefix="/loyalty", tags=["loyalty"],
                     default_response_class=PrivateJSONResponse, route_class=route_class)


router = _router()
# The hottest routes skip FastAPI's per-request dependency resolution; everything else
# about them (documentation, validation, answers) comes from their declaration, as for the
# others (platform.http.fast). Included first: /me must match before /{uuid}.
hot_router = _router(FastRoute)


@hot_router.get("/me", response_model=BalanceOut, responses=errors(401, 404, 503))
async def my_balance(user: CurrentUser, service: Service) -> BalanceOut:
    """Your balance (404 until the welcome event has been processed)."""
    account = await service.balance(user, user.user_id)
    return BalanceOut(uuid=str(account.user_id), balance=account.balance)


@hot_router.post("/me/withdrawals", status_code=201, response_model=MovementOut,
                 responses=errors(*BODY_ERRORS, 401, 404, 409, 503))
async def my_withdrawal(body: MovementIn, user: CurrentUser, service: Service,
                        key: IdempotencyKey = None) -> MovementOut | Response:
    """Spend your points."""
    return await _move(service, user, user.user_id, "withdrawal", body, key, "me/withdrawal")


# The original's routes take the same fast path as the two above: existing clients of the
# original call them as often as new clients call /me. Declared after /me, which must match
# first.
_SEED_KINDS: dict[Literal["w", "d"], Kind] = {"w": "withdrawal", "d": "deposit"}


@hot_router.post("", response_model=BalanceOut,
                 summary="Withdraw or deposit (original API)",
                 responses=errors(*BODY_ERRORS, 401, 403, 404, 409, 503))
async def seed_operation(body: SeedOperationIn, user: CurrentUser, service: Service,
                         key: IdempotencyKey = None) -> BalanceOut | Response:
    """The original API: admins act on ``uuid``; users withdraw from their own account."""
    if user.is_admin and body.uuid is None:
        raise ValidationFailed("uuid: required for admin operations")
    account_id = body.uuid or user.user_id
    op = Operation(actor=user, account_id=account_id, kind=_SEED_KINDS[body.operation],
                   amount=body.balance, comment=body.comment)
    idem = (Idempotency.of(key, "seed", account_id, body.model_dump(mode="json"))
            if key else None)
    return _seed_out(await service.operate(op, idem))


@hot_router.get("/{uuid}", response_model=BalanceOut,
                summary="Account balance (original API)", responses=errors(401, 403, 404, 422, 503))
async def seed_balance(uuid: UUID, user: CurrentUser, service: Service) -> BalanceOut:
    """The original API: an account's balance, for its owner or an admin."""
    account = await service.balance(user, uuid)
    return BalanceOut(uuid=str(account.user_id), balance=account.balance)


@router.get("/me/transactions", response_model=HistoryOut,
            responses=errors(401, 404, 422, 503))
async def my_history(user: CurrentUser, service: Service, limit: Limit = 20,
                     cursor: Cursor = None) -> HistoryOut:
    """Your history, newest first; pass ``next_cursor`` back for the next page."""
    page = await service.history(user, user.user_id, limit, cursor)
    return _history(page.items, page.next_cursor)


@router.get("/admin/accounts/{uuid}", response_model=AdminAccountOut,
            responses=errors(401, 403, 404, 422, 503))
async def admin_balance(uuid: UUID, admin: AdminUser, service: Service,
                        request: Request) -> AdminAccountOut:
    """Any account's balance and its owner (``owner_status`` says whether sso answered)."""
    # sso's GetUser answers only a caller who may see that user: the admin's own token is the
    # proof, forwarded as it came.
    view = await service.account_view(admin, uuid, bearer_token(request.scope))
    owner = None
    if view.owner is not None:
        owner = OwnerOut(user_id=str(view.owner.user_id), email=view.owner.email,
                         name=view.owner.name, birthday=view.owner.birthday,
                         is_admin=view.owner.is_admin)
    return AdminAccountOut(uuid=str(view.account.user_id), balance=view.account.balance,
                           owner=owner, owner_status=view.owner_status,
                           state=view.account.state)


@router.post("/admin/accounts/{uuid}/deposits", status_code=201, response_model=MovementOut,
             responses=errors(*BODY_ERRORS, 401, 403, 404, 409, 503))
async def admin_deposit(uuid: UUID, body: MovementIn, admin: AdminUser, service: Service,
                        key: IdempotencyKey = None) -> MovementOut | Response:
    """Credit points to an account."""
    return await _move(service, admin, uuid, "deposit", body, key, "admin/deposit")


@router.post("/admin/accounts/{uuid}/withdrawals", status_code=201, response_model=MovementOut,
             responses=errors(*BODY_ERRORS, 401, 403, 404, 409, 503))
async def admin_withdrawal(uuid: UUID, body: MovementIn, admin: AdminUser, service: Service,
                           key: IdempotencyKey = None) -> MovementOut | Response:
    """Debit points from an account."""
    return await _move(service, admin, uuid, "withdrawal", body, key, "admin/withdrawal")


@router.get("/admin/accounts/{uuid}/transactions", response_model=HistoryOut,
            responses=errors(401, 403, 404, 422, 503))
async def admin_history(uuid: UUID, admin: AdminUser, service: Service, limit: Limit = 20,
                        cursor: Cursor = None) -> HistoryOut:
    """Any account's history, newest first."""
    page = await service.history(admin, uuid, limit, cursor)
    return _history(page.items, page.next_cursor)


@router.get("/admin/audit", response_model=AuditPageOut, responses=errors(401, 403, 422, 503))
async def audit(admin: AdminUser, service: Service, actor: ActorFilter = None,
                target: TargetFilter = None, limit: AuditLimit = 20,
                cursor: AuditCursor = None) -> AuditPageOut:
    """Admins' deposits and withdrawals, newest first; pass ``next_cursor`` back for more."""
    page = await service.audit(admin, AuditQuery(actor, target), limit, cursor)
    return audit_page_out(page)


def install(app: FastAPI) -> None:
    """Add loyalty's routes to ``app``."""
    app.include_router(health_router("/loyalty"))
    app.include_router(hot_router)
    app.include_router(router)
