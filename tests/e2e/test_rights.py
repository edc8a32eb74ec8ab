"""Who may do what at loyalty."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.e2e_helpers import Api, bearer, error_code, history

pytestmark = pytest.mark.e2e


def test_user_cannot_deposit(api: Api) -> None:
    user = api.user()
    for body in ({"operation": "d", "comment": "free money", "balance": 10},
                 {"uuid": user.user_id, "operation": "d", "comment": "free money",
                  "balance": 10}):
        r = api.loy("POST", "/loyalty", headers=user.auth, json=body)
        assert r.status_code == 403, r.text
        assert error_code(r) == "forbidden"
    assert api.balance(user) == 100
    assert len(history(api, user.auth)) == 1


def test_user_cannot_touch_another_account(api: Api) -> None:
    user, other = api.user(), api.user()
    r = api.loy("POST", "/loyalty", headers=user.auth,
                json={"uuid": other.user_id, "operation": "w", "comment": "steal",
                      "balance": 10})
    assert r.status_code == 403, r.text
    assert error_code(r) == "forbidden"
    r = api.loy("GET", f"/loyalty/{other.user_id}", headers=user.auth)
    assert r.status_code == 403, r.text
    assert error_code(r) == "forbidden"
    assert api.balance(other) == 100
    assert api.balance(user) == 100
    # Naming one's own uuid is fine.
    r = api.loy("POST", "/loyalty", headers=user.auth,
                json={"uuid": user.user_id, "operation": "w", "comment": "mine",
                      "balance": 10})
    assert r.status_code == 200, r.text
    assert r.json()["balance"] == 90


def test_user_is_refused_on_every_admin_call(api: Api) -> None:
    user = api.user()
    base = f"/loyalty/admin/accounts/{user.user_id}"
    calls = [("GET", base, None), ("GET", f"{base}/transactions", None),
             ("POST", f"{base}/deposits", {"amount": 5, "comment": "x"}),
             ("POST", f"{base}/withdrawals", {"amount": 5, "comment": "x"})]
    for method, path, body in calls:
        r = api.loy(method, path, headers=user.auth, json=body)
        assert r.status_code == 403, (method, path, r.text)
        assert error_code(r) == "forbidden"
    assert api.balance(user) == 100


def test_admin_on_unknown_account(api: Api, admin: dict[str, str]) -> None:
    ghost = str(uuid.uuid4())
    r = api.loy("POST", f"/loyalty/admin/accounts/{ghost}/deposits", headers=admin,
                json={"amount": 5, "comment": "to nobody"})
    assert r.status_code == 404, r.text
    assert error_code(r) == "account_not_found"
    r = api.loy("POST", "/loyalty", headers=admin,
                json={"uuid": ghost, "operation": "d", "comment": "to nobody", "balance": 5})
    assert r.status_code == 404, r.text
    assert error_code(r) == "account_not_found"
    for path in (f"/loyalty/{ghost}", f"/loyalty/admin/accounts/{ghost}",
                 f"/loyalty/admin/accounts/{ghost}/transactions"):
        r = api.loy("GET", path, headers=admin)
        assert r.status_code == 404, (path, r.text)
        assert error_code(r) == "account_not_found"


def test_admin_seed_operation_needs_uuid(api: Api, admin: dict[str, str]) -> None:
    r = api.loy("POST", "/loyalty", headers=admin,
                json={"operation": "d", "comment": "whom?", "balance": 5})
    assert r.status_code == 422, r.text
    assert error_code(r) == "validation_error"
    assert "uuid" in r.json()["error"]


def test_operation_registration_is_refused(api: Api, admin: dict[str, str]) -> None:
    user = api.user()
    for headers, body in (
            (user.auth, {"operation": "registration", "comment": "bonus", "balance": 100}),
            (admin, {"uuid": user.user_id, "operation": "registration", "comment": "bonus",
                     "balance": 100})):
        r = api.loy("POST", "/loyalty", headers=headers, json=body)
        assert r.status_code == 422, r.text
        assert error_code(r) == "validation_error"
        assert "operation" in r.json()["error"]
    assert api.balance(user) == 100


def test_refresh_token_is_not_an_access_token(api: Api) -> None:
    user = api.user()
    for path in ("/loyalty/me", f"/loyalty/{user.user_id}", "/loyalty/me/transactions"):
        r = api.loy("GET", path, headers=bearer(user.refresh))
        assert r.status_code == 401, (path, r.text)
        assert error_code(r) == "invalid_token"
    r = api.loy("POST", "/loyalty/me/withdrawals", headers=bearer(user.refresh),
                json={"amount": 1, "comment": "x"})
    assert r.status_code == 401, r.text
    r = api.sso("GET", "/auth/info", headers=bearer(user.refresh))
    assert r.status_code == 401, r.text
    assert error_code(r) == "invalid_token"
    assert api.balance(user) == 100


def test_admin_withdrawal_respects_the_balance(api: Api, admin: dict[str, str]) -> None:
    user = api.user()
    r = api.loy("POST", f"/loyalty/admin/accounts/{user.user_id}/withdrawals", headers=admin,
                json={"amount": 101, "comment": "too much"})
    assert r.status_code == 409, r.text
    assert error_code(r) == "insufficient_points"
    r = api.loy("POST", "/loyalty", headers=admin,
                json={"uuid": user.user_id, "operation": "w", "comment": "too much",
                      "balance": 101})
    assert r.status_code == 409, r.text
    assert error_code(r) == "insufficient_points"
    assert api.balance(user) == 100
