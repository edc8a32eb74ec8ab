"""loyalty's HTTP edge: parse, call one use case, shape the answer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.requests import HTTPConnection

from authloyalty.loyalty.domain import (
    Hold,
    HoldOutcome,
    HoldState,
    Kind,
    LedgerEntry,
    LegacyReply,
    Lot,
    MovementResult,
    Principal,
)
from authloyalty.loyalty.hold_service import HoldService
from authloyalty.loyalty.revocations import Authenticator
from authloyalty.loyalty.schemas import (
    AccountOut,
    AdminAccountOut,
    BalanceOut,
    CaptureIn,
    CaptureOut,
    DepositIn,
    ExpiringOut,
    HistoryOut,
    HoldAnswerOut,
    HoldIn,
    HoldOut,
    HoldsOut,
    MovementIn,
    MovementOut,
    OwnerOut,
    ReversalIn,
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


async def _holds(request: Request) -> HoldService:
    holds: HoldService = request.app.state.container.holds
    return holds


CurrentUser = Annotated[Principal, Depends(_Caller())]
AdminUser = Annotated[Principal, Depends(_admin)]
Service = Annotated[LedgerService, Depends(_service)]
Holds = Annotated[HoldService, Depends(_holds)]
StateFilter = Annotated[Literal["held", "captured", "released", "expired"] | None, Query(
    description="Only holds in this state (as of the request)")]
HoldId = Annotated[int, Path(ge=1, le=2**63 - 1)]
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
    description="Repeat a request safely: same key and body → same answer, applied once")]
Limit = Annotated[int, Query(ge=1, le=100)]
TransactionId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Cursor = Annotated[str | None, Query(max_length=32)]


def _time(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _transaction(entry: LedgerEntry) -> TransactionOut:
    return TransactionOut(
        id=entry.id, kind=entry.kind, amount=entry.amount, comment=entry.comment,
        balance_after=entry.balance_after, created_at=_time(entry.created_at),
        hold_id=entry.hold_id, reverses=entry.reverses)


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
                   comment=body.comment,
                   expires_at=body.expires_at if isinstance(body, DepositIn) else None)
    idem = Idempotency.of(key, route, account_id, body.model_dump(
        mode="json", exclude_none=True)) if key else None
    return _movement_out(await service.operate(op, idem))


def _expiring(lots: list[Lot]) -> list[ExpiringOut]:
    return [ExpiringOut(amount=lot.remaining, expires_at=_time(lot.expires_at)) for lot in lots]


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


@hot_router.get("/me", response_model=AccountOut, responses=errors(401, 404, 503))
async def my_balance(user: CurrentUser, service: Service) -> AccountOut:
    """Your balance and what holds leave available (404 until the welcome event has been
    processed)."""
    account = await service.balance(user, user.user_id)
    return AccountOut(uuid=str(account.user_id), balance=account.balance,
                      available=account.available, held=account.held,
                      expiring=_expiring(await service.expiring(account)))


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
                           available=view.account.available, held=view.account.held,
                           expiring=_expiring(await service.expiring(view.account)),
                           owner=owner, owner_status=view.owner_status,
                           state=view.account.state)


@router.post("/admin/accounts/{uuid}/deposits", status_code=201, response_model=MovementOut,
             responses=errors(*BODY_ERRORS, 401, 403, 404, 409, 503))
async def admin_deposit(uuid: UUID, body: DepositIn, admin: AdminUser, service: Service,
                        key: IdempotencyKey = None) -> MovementOut | Response:
    """Credit points to an account; with ``expires_at`` (in the future, else 422), the points
    left unspent by then expire (withdrawals take the soonest-expiring points first)."""
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


def _hold_out(hold: Hold, now: datetime) -> HoldOut:
    return HoldOut(id=hold.id, amount=hold.amount, captured_amount=hold.captured_amount,
                   comment=hold.comment, state=hold.state_at(now),
                   expires_at=_time(hold.expires_at), created_at=_time(hold.created_at))


def _hold_answer(outcome: HoldOutcome) -> HoldAnswerOut:
    # As of the write: a replay answers what the first request answered.
    return HoldAnswerOut(hold=_hold_out(outcome.hold, outcome.hold.created_at),
                         balance=outcome.balance, available=outcome.available)


def _capture_answer(outcome: HoldOutcome) -> CaptureOut:
    assert outcome.entry is not None  # a capture always writes its withdrawal
    return CaptureOut(hold=_hold_out(outcome.hold, outcome.hold.created_at),
                      transaction=_transaction(outcome.entry), balance=outcome.balance,
                      available=outcome.available)


async def _place(holds: HoldService, actor: Principal, account_id: UUID, body: HoldIn,
                 key: str | None, route: str) -> HoldAnswerOut:
    idem = Idempotency.of(key, route, account_id, body.model_dump()) if key else None
    return _hold_answer(await holds.hold(actor, account_id, body.amount, body.comment,
                                         body.ttl_seconds, idem))


async def _capture(holds: HoldService, actor: Principal, account_id: UUID, hold_id: int,
                   body: CaptureIn | None, key: str | None, route: str) -> CaptureOut:
    amount = None if body is None else body.amount
    idem = (Idempotency.of(key, route, account_id, {"hold_id": hold_id, "amount": amount})
            if key else None)
    return _capture_answer(await holds.capture(actor, account_id, hold_id, amount, idem))


async def _release(holds: HoldService, actor: Principal, account_id: UUID, hold_id: int,
                   key: str | None, route: str) -> HoldAnswerOut:
    idem = Idempotency.of(key, route, account_id, {"hold_id": hold_id}) if key else None
    return _hold_answer(await holds.release(actor, account_id, hold_id, idem))


async def _list_holds(holds: HoldService, actor: Principal, account_id: UUID,
                      state: HoldState | None, limit: int, cursor: str | None) -> HoldsOut:
    page = await holds.holds(actor, account_id, state, limit, cursor)
    return HoldsOut(items=[_hold_out(h, page.now) for h in page.items],
                    next_cursor=page.next_cursor)


@router.post("/me/holds", status_code=201, response_model=HoldAnswerOut,
             responses=errors(*BODY_ERRORS, 401, 404, 409, 503))
async def my_hold(body: HoldIn, user: CurrentUser, holds: Holds,
                  key: IdempotencyKey = None) -> HoldAnswerOut:
    """Reserve some of your available points until captured, released or expired."""
    return await _place(holds, user, user.user_id, body, key, "me/hold")


@router.get("/me/holds", response_model=HoldsOut, responses=errors(401, 404, 422, 503))
async def my_holds(user: CurrentUser, holds: Holds, state: StateFilter = None,
                   limit: Limit = 20, cursor: Cursor = None) -> HoldsOut:
    """Your holds, newest first; pass ``next_cursor`` back for the next page."""
    return await _list_holds(holds, user, user.user_id, state, limit, cursor)


@router.post("/me/holds/{hold_id}/capture", response_model=CaptureOut,
             responses=errors(*BODY_ERRORS, 401, 404, 409, 503))
async def my_capture(hold_id: HoldId, user: CurrentUser, holds: Holds,
                     body: CaptureIn | None = None, key: IdempotencyKey = None) -> CaptureOut:
    """Withdraw the held points (or ``amount`` of them: the rest is released)."""
    return await _capture(holds, user, user.user_id, hold_id, body, key, "me/capture")


@router.post("/me/holds/{hold_id}/release", response_model=HoldAnswerOut,
             responses=errors(401, 404, 409, 422, 503))
async def my_release(hold_id: HoldId, user: CurrentUser, holds: Holds,
                     key: IdempotencyKey = None) -> HoldAnswerOut:
    """Give the held points back."""
    return await _release(holds, user, user.user_id, hold_id, key, "me/release")


@router.post("/admin/accounts/{uuid}/holds", status_code=201, response_model=HoldAnswerOut,
             responses=errors(*BODY_ERRORS, 401, 403, 404, 409, 503))
async def admin_hold(uuid: UUID, body: HoldIn, admin: AdminUser, holds: Holds,
                     key: IdempotencyKey = None) -> HoldAnswerOut:
    """Reserve points of an account (audited)."""
    return await _place(holds, admin, uuid, body, key, "admin/hold")


@router.get("/admin/accounts/{uuid}/holds", response_model=HoldsOut,
            responses=errors(401, 403, 404, 422, 503))
async def admin_holds(uuid: UUID, admin: AdminUser, holds: Holds, state: StateFilter = None,
                      limit: Limit = 20, cursor: Cursor = None) -> HoldsOut:
    """Any account's holds, newest first."""
    return await _list_holds(holds, admin, uuid, state, limit, cursor)


@router.post("/admin/accounts/{uuid}/holds/{hold_id}/capture", response_model=CaptureOut,
             responses=errors(*BODY_ERRORS, 401, 403, 404, 409, 503))
async def admin_capture(uuid: UUID, hold_id: HoldId, admin: AdminUser, holds: Holds,
                        body: CaptureIn | None = None,
                        key: IdempotencyKey = None) -> CaptureOut:
    """Capture an account's hold (audited)."""
    return await _capture(holds, admin, uuid, hold_id, body, key, "admin/capture")


@router.post("/admin/accounts/{uuid}/holds/{hold_id}/release", response_model=HoldAnswerOut,
             responses=errors(401, 403, 404, 409, 422, 503))
async def admin_release(uuid: UUID, hold_id: HoldId, admin: AdminUser, holds: Holds,
                        key: IdempotencyKey = None) -> HoldAnswerOut:
    """Release an account's hold (audited)."""
    return await _release(holds, admin, uuid, hold_id, key, "admin/release")


@router.post("/admin/transactions/{transaction_id}/reversal", status_code=201,
             response_model=MovementOut,
             responses=errors(*BODY_ERRORS, 401, 403, 404, 409, 503))
async def admin_reversal(transaction_id: TransactionId, body: ReversalIn, admin: AdminUser,
                         service: Service, key: IdempotencyKey = None
                         ) -> MovementOut | Response:
    """Undo a deposit or withdrawal once: a withdrawal's points go back to the lots they came
    from (with their expiry), a deposit's are taken back (409 ``insufficient_points`` if
    spent or held). 409 ``already_reversed``, ``not_reversible`` (expiries, reversals),
    ``account_frozen``; 404 ``transaction_not_found``."""
    # The fingerprint's target is the transaction (as a UUID, the type accounts' ids have).
    idem = Idempotency.of(key, "admin/reversal", UUID(int=transaction_id),
                          body.model_dump(mode="json")) if key else None
    return _movement_out(await service.reverse(admin, transaction_id, body.comment, idem))


def install(app: FastAPI) -> None:
    """Add loyalty's routes to ``app``."""
    app.include_router(health_router("/loyalty"))
    app.include_router(hot_router)
    app.include_router(router)
