"""Deletion of one's own account and its restore by an admin."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import Response

from authloyalty.platform.http.responses import success
from authloyalty.platform.schemas import BODY_ERRORS, StatusOut, errors
from authloyalty.sso.http import AccessToken, Service, origin
from authloyalty.sso.schemas import AccountDeletionIn

router = APIRouter(prefix="/auth", tags=["auth"])


@router.delete("/me", response_model=StatusOut,
               responses=errors(*BODY_ERRORS, 401, 409, 429, 503))
async def delete_account(body: AccountDeletionIn, token: AccessToken, request: Request,
                         service: Service) -> Response:
    """Delete the caller's account (the password confirms it): login is refused and every
    session ends; an admin can restore it during the retention window. A wrong password
    answers 401 ``invalid_credentials`` and counts against the login throttle; the last
    admin's answers 409 ``last_admin``."""
    await service.delete_account(token, body.password, origin(request))
    return success(200)


@router.post("/admin/users/{user_id}/restore", response_model=StatusOut,
             responses=errors(401, 403, 404, 409, 410, 422, 503))
async def restore_user(user_id: UUID, token: AccessToken, service: Service) -> Response:
    """Restore a deleted user (admins only): login works again with the same password.
    Not deleted → 409 ``user_not_deleted``; purged → 410 ``user_purged``; unknown → 404
    ``user_not_found``."""
    await service.restore_user(token, user_id)
    return success(200)
