"""sso's user administration routes (admins only): find users, see one, grant or revoke the
admin right, end a user's sessions, read the audit log of these actions."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query
from fastapi.responses import Response

from authloyalty.platform.audit import AuditQuery
from authloyalty.platform.http.audit import (
    ActorFilter,
    AuditCursor,
    AuditLimit,
    AuditPageOut,
    TargetFilter,
    audit_page_out,
)
from authloyalty.platform.http.responses import PrivateJSONResponse, private_success, success
from authloyalty.platform.schemas import BODY_ERRORS, StatusOut, errors
from authloyalty.sso.domain import User
from authloyalty.sso.http import AccessToken, Service, iso
from authloyalty.sso.schemas import (
    AdminRightIn,
    AdminUserDetailsOut,
    AdminUsersOut,
    EndedOut,
)

router = APIRouter(prefix="/auth/admin/users", tags=["auth admin"])
audit_router = APIRouter(prefix="/auth/admin", tags=["auth admin"])

Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=36)]
UserSearch = Annotated[str | None, Query(max_length=254, description=(
    "An email prefix (any case) or an exact user id; empty for everyone"))]


def _item(user: User) -> dict[str, Any]:
    return {"user_id": str(user.id),
            "email": None if user.purged_at is not None else user.email, "name": user.name,
            "is_admin": user.is_admin, "created_at": iso(user.created_at),
            "deleted_at": iso(user.deleted_at), "purged_at": iso(user.purged_at)}


@router.get("", response_model=AdminUsersOut, responses=errors(401, 403, 422, 503))
async def find_users(token: AccessToken, service: Service, query: UserSearch = None,
                     limit: Limit = 20, cursor: Cursor = None) -> Response:
    """Users ordered by email, a page at a time."""
    page = await service.find_users(token, query, limit, cursor)
    return private_success(200, items=[_item(u) for u in page.users],
                           next_cursor=page.next_cursor)


@router.get("/{user_id}", response_model=AdminUserDetailsOut,
            responses=errors(401, 403, 404, 422, 503))
async def user_details(user_id: UUID, token: AccessToken, service: Service) -> Response:
    """One user and the number of their active sessions; unknown → 404 ``user_not_found``."""
    user, sessions = await service.user_details(token, user_id)
    return private_success(200, **_item(user), sessions=sessions)


@router.put("/{user_id}/admin", response_model=StatusOut,
            responses=errors(*BODY_ERRORS, 401, 403, 404, 409, 503))
async def set_admin_right(user_id: UUID, body: AdminRightIn, token: AccessToken,
                          service: Service) -> Response:
    """Grant or revoke the admin right; revoking ends the user's sessions, and revoking the
    last admin's answers 409 ``last_admin``."""
    await service.set_admin_right(token, user_id, body.is_admin)
    return success(200)


@router.post("/{user_id}/sessions/revoke", response_model=EndedOut,
             responses=errors(401, 403, 404, 422, 503))
async def revoke_sessions(user_id: UUID, token: AccessToken, service: Service) -> Response:
    """End every session of the user."""
    return success(200, ended=await service.revoke_sessions_of(token, user_id))


@audit_router.get("/audit", response_model=AuditPageOut, responses=errors(401, 403, 422, 503))
async def audit(token: AccessToken, service: Service, actor: ActorFilter = None,
                target: TargetFilter = None, limit: AuditLimit = 20,
                cursor: AuditCursor = None) -> Response:
    """Admin actions, newest first (grants and revocations of the admin right, restores,
    ended sessions, admins made at the command line); pass ``next_cursor`` back for more."""
    page = await service.audit(token, AuditQuery(actor, target), limit, cursor)
    return PrivateJSONResponse.of(audit_page_out(page))
