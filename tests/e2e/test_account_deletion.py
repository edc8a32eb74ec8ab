"""Deleting one's account and its restore by an admin, seen from sso and from loyalty."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.e2e_helpers import PASSWORD, Account, Api, error_code, poll
from tests.e2e.test_sessions import PROPAGATION, _refused_everywhere

pytestmark = pytest.mark.e2e

THROTTLE_LIMIT = 5  # sso.login_throttle.max_failures_per_email, the default


def _delete(api: Api, account: Account, password: str = PASSWORD) -> httpx.Response:
    return api.sso("DELETE", "/auth/me", headers=account.auth, json={"password": password})


def _restore(api: Api, headers: dict[str, str], user_id: str) -> httpx.Response:
    return api.sso("POST", f"/auth/admin/users/{user_id}/restore", headers=headers)


def _login(api: Api, account: Account) -> httpx.Response:
    return api.sso("POST", "/auth/login",
                   json={"email": account.email, "password": account.password})


# --- refusals first -----------------------------------------------------------------------

def test_deletion_needs_a_token_and_a_password(api: Api) -> None:
    r = api.sso("DELETE", "/auth/me", json={"password": PASSWORD})
    assert r.status_code == 401, r.text
    assert error_code(r) == "missing_token"
    user = api.register()
    r = api.sso("DELETE", "/auth/me", headers=user.auth)
    assert r.status_code == 422, r.text
    assert error_code(r) == "validation_error"
    r = api.sso("GET", "/auth/info", headers=user.auth)
    assert r.status_code == 200, r.text


def test_a_wrong_password_is_401_then_throttled_and_deletes_nothing(api: Api) -> None:
    user = api.register()
    for _ in range(THROTTLE_LIMIT):
        r = _delete(api, user, "not my password")
        assert r.status_code == 401, r.text
        assert error_code(r) == "invalid_credentials"
    r = _delete(api, user, "not my password")
    assert r.status_code == 429, r.text
    assert error_code(r) == "too_many_attempts"
    assert int(r.headers["Retry-After"]) >= 1
    # Throttled even with the right password, and login shares the count.
    r = _delete(api, user)
    assert r.status_code == 429, r.text
    r = _login(api, user)
    assert r.status_code == 429, r.text
    r = api.sso("GET", "/auth/info", headers=user.auth)
    assert r.status_code == 200, r.text


def test_restore_is_for_admins_and_known_deleted_users_only(
        api: Api, admin: dict[str, str]) -> None:
    user, other = api.register(), api.register()
    assert _delete(api, other).status_code == 200
    r = _restore(api, user.auth, other.user_id)
    assert r.status_code == 403, r.text
    assert error_code(r) == "forbidden"
    r = _restore(api, {}, other.user_id)
    assert r.status_code == 401, r.text
    r = _restore(api, admin, user.user_id)
    assert r.status_code == 409, r.text
    assert error_code(r) == "user_not_deleted"
    r = _restore(api, admin, str(uuid.uuid4()))
    assert r.status_code == 404, r.text
    assert error_code(r) == "user_not_found"
    r = _restore(api, admin, "not-a-uuid")
    assert r.status_code == 422, r.text
    # The refusals restored nobody.
    assert _login(api, other).status_code == 401


# --- the routes at work ---------------------------------------------------------------------

def test_deletion_ends_every_session_and_restore_brings_the_login_back(
        api: Api, admin: dict[str, str]) -> None:
    user = api.user()
    other = api.login(user.email, user.password)
    r = _delete(api, user)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "Success"}

    for access in (user.access, other.access):
        _refused_everywhere(api, access)
    r = api.sso("POST", "/auth/refresh", json={"token": other.refresh})
    assert r.status_code == 401, r.text
    r = _login(api, user)
    assert r.status_code == 401, r.text
    assert error_code(r) == "invalid_credentials"
    # The email stays reserved, in any case.
    r = api.sso("POST", "/auth/registration",
                json={"email": user.email.upper(), "password": PASSWORD})
    assert r.status_code == 409, r.text
    assert error_code(r) == "user_exists"

    r = _restore(api, admin, user.user_id)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "Success"}
    back = api.login(user.email, PASSWORD)
    assert back.user_id == user.user_id
    r = api.sso("GET", "/auth/info", headers=back.auth)
    assert r.status_code == 200, r.text
    assert api.balance(back) > 0
    # Once restored, restoring again is a conflict.
    r = _restore(api, admin, user.user_id)
    assert r.status_code == 409, r.text
    assert error_code(r) == "user_not_deleted"


# --- loyalty's side: the account freezes with the deletion and thaws with the restore -------

def _admin_view(api: Api, admin: dict[str, str], user_id: str) -> dict[str, Any]:
    r = api.loy("GET", f"/loyalty/admin/accounts/{user_id}", headers=admin)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _movements(api: Api, admin: dict[str, str], user_id: str) -> list[httpx.Response]:
    """An admin's deposit and withdrawal on the account, by both APIs."""
    body = {"amount": 1, "comment": "while deleted"}
    return [
        api.loy("POST", f"/loyalty/admin/accounts/{user_id}/deposits", headers=admin,
                json=body),
        api.loy("POST", f"/loyalty/admin/accounts/{user_id}/withdrawals", headers=admin,
                json=body),
        api.loy("POST", "/loyalty", headers=admin,
                json={"uuid": user_id, "operation": "d", "balance": 1, "comment": "x"}),
        api.loy("POST", "/loyalty", headers=admin,
                json={"uuid": user_id, "operation": "w", "balance": 1, "comment": "x"}),
    ]


def test_deletion_freezes_the_loyalty_account_and_restore_thaws_it(
        api: Api, admin: dict[str, str]) -> None:
    user = api.user()
    balance = api.balance(user)
    history = api.loy("GET", f"/loyalty/admin/accounts/{user.user_id}/transactions",
                      headers=admin).json()["items"]
    assert _admin_view(api, admin, user.user_id)["state"] == "active"
    assert _delete(api, user).status_code == 200

    assert poll(lambda: _admin_view(api, admin, user.user_id)["state"] == "frozen",
                PROPAGATION), "loyalty did not freeze the account"
    view = _admin_view(api, admin, user.user_id)
    assert view["balance"] == balance
    for r in _movements(api, admin, user.user_id):
        assert r.status_code == 409, r.text
        assert error_code(r) == "account_frozen"
    # The history is kept, and the refusals wrote nothing.
    r = api.loy("GET", f"/loyalty/admin/accounts/{user.user_id}/transactions", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["items"] == history

    assert _restore(api, admin, user.user_id).status_code == 200
    assert poll(lambda: _admin_view(api, admin, user.user_id)["state"] == "active",
                PROPAGATION), "loyalty did not unfreeze the account"
    assert _admin_view(api, admin, user.user_id)["balance"] == balance
    back = api.login(user.email, PASSWORD)
    assert api.balance(back) == balance
    r = api.loy("POST", "/loyalty/me/withdrawals", headers=back.auth,
                json={"amount": 1, "comment": "after the restore"})
    assert r.status_code == 201, r.text
    assert api.balance(back) == balance - 1
