"""No cache keeps tokens or personal data (item 6 of the hardening issue): every such answer
says ``Cache-Control: no-store`` (token answers also ``Pragma: no-cache``, RFC 6749 §5.1),
replayed idempotent answers and hand-resolved routes included."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.e2e_helpers import PASSWORD, Api, bearer, unique_email

pytestmark = pytest.mark.e2e


def assert_not_stored(response: httpx.Response, expected: int) -> None:
    label = f"{response.request.method} {response.request.url.path}"
    assert response.status_code == expected, (label, response.text)
    assert response.headers.get("cache-control") == "no-store", (label, response.headers)
    assert response.headers.get("pragma") == "no-cache", (label, response.headers)


def test_token_answers_of_sso_are_never_stored(api: Api) -> None:
    email = unique_email()
    registered = api.sso("POST", "/auth/registration", json={"email": email,
                                                             "password": PASSWORD})
    assert_not_stored(registered, 201)
    login = api.sso("POST", "/auth/login", json={"email": email, "password": PASSWORD})
    assert_not_stored(login, 200)
    refreshed = api.sso("POST", "/auth/refresh", json={"token": login.json()["refresh_token"]})
    assert_not_stored(refreshed, 200)
    info = api.sso("GET", "/auth/info", headers=bearer(refreshed.json()["access_token"]))
    assert_not_stored(info, 200)


def test_personal_answers_of_loyalty_are_never_stored(api: Api,
                                                      admin_auth: dict[str, str]) -> None:
    user = api.user()
    me, admin = user.auth, admin_auth
    account = f"/loyalty/admin/accounts/{user.user_id}"
    assert_not_stored(api.loy("GET", "/loyalty/me", headers=me), 200)
    assert_not_stored(api.loy("GET", "/loyalty/me/transactions", headers=me), 200)
    assert_not_stored(api.loy("GET", f"/loyalty/{user.user_id}", headers=me), 200)
    assert_not_stored(api.loy("POST", "/loyalty/me/withdrawals", headers=me,
                              json={"amount": 1, "comment": "coffee"}), 201)
    assert_not_stored(api.loy("POST", "/loyalty", headers=me,
                              json={"operation": "w", "balance": 1, "comment": "tea"}), 200)
    assert_not_stored(api.loy("GET", account, headers=admin), 200)
    assert_not_stored(api.loy("GET", f"{account}/transactions", headers=admin), 200)
    assert_not_stored(api.loy("POST", f"{account}/deposits", headers=admin,
                              json={"amount": 2, "comment": "gift"}), 201)
    assert_not_stored(api.loy("POST", f"{account}/withdrawals", headers=admin,
                              json={"amount": 1, "comment": "coffee"}), 201)


@pytest.mark.parametrize(("path", "body", "status"), [
    ("/loyalty/me/withdrawals", {"amount": 1, "comment": "coffee"}, 201),
    ("/loyalty", {"operation": "w", "balance": 1, "comment": "tea"}, 200),
])
def test_replayed_idempotent_answers_are_never_stored(
        api: Api, path: str, body: dict[str, object], status: int) -> None:
    user = api.user()
    headers = {**user.auth, "Idempotency-Key": f"cache-{unique_email()}"}
    first = api.loy("POST", path, headers=headers, json=body)
    replay = api.loy("POST", path, headers=headers, json=body)
    assert_not_stored(first, status)
    assert_not_stored(replay, status)
    assert replay.content == first.content  # it was a replay
