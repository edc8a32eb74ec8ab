"""A user's own sessions and password change, seen from sso and from loyalty."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.e2e_helpers import PASSWORD, Account, Api, error_code
from tests.e2e.test_sessions import _accepted_everywhere, _refused_everywhere

pytestmark = pytest.mark.e2e

NEW_PASSWORD = "a brand new passphrase"
THROTTLE_LIMIT = 5  # sso.login_throttle.max_failures_per_email, the default


def _sessions(api: Api, account: Account) -> list[dict[str, Any]]:
    r = api.sso("GET", "/auth/sessions", headers=account.auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "Success"
    items: list[dict[str, Any]] = body["items"]
    return items


def _login_from(api: Api, account: Account, agent: str) -> Account:
    r = api.sso("POST", "/auth/login", headers={"User-Agent": agent},
                json={"email": account.email, "password": account.password})
    assert r.status_code == 200, r.text
    body = r.json()
    return Account(account.email, account.password, body["user_id"], body["access_token"],
                   body["refresh_token"])


def _change(api: Api, account: Account, current: str, new: str) -> httpx.Response:
    return api.sso("POST", "/auth/password", headers=account.auth,
                   json={"current_password": current, "new_password": new})


# --- refusals first -----------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/auth/sessions"), ("DELETE", "/auth/sessions"),
    ("DELETE", f"/auth/sessions/{uuid.uuid4()}"), ("POST", "/auth/password")])
def test_without_a_token_the_account_routes_answer_401(api: Api, method: str,
                                                       path: str) -> None:
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    r = api.sso(method, path, json=body if method == "POST" else None)
    assert r.status_code == 401, r.text
    assert error_code(r) == "missing_token"


def test_a_forwarded_address_is_not_believed_from_a_peer_that_is_no_trusted_proxy(
        api: Api) -> None:
    # The server's sso.trusted_proxies is empty: the peer (this test, on 127.0.0.1) is the
    # address, whatever X-Forwarded-For claims (it would dodge the per-client login throttle).
    account = api.register()
    r = api.sso("POST", "/auth/login", headers={"X-Forwarded-For": "203.0.113.9"},
                json={"email": account.email, "password": account.password})
    assert r.status_code == 200, r.text
    logged = Account(account.email, account.password, account.user_id,
                     r.json()["access_token"], r.json()["refresh_token"])
    current = next(s for s in _sessions(api, logged) if s["current"])
    assert current["ip"] == "127.0.0.1"


def test_ending_an_unknown_or_another_users_session_is_404(api: Api) -> None:
    alice, bob = api.register(), api.register()
    bobs_session = next(s["id"] for s in _sessions(api, bob) if s["current"])
    for session_id in (bobs_session, str(uuid.uuid4())):
        r = api.sso("DELETE", f"/auth/sessions/{session_id}", headers=alice.auth)
        assert r.status_code == 404, r.text
        assert error_code(r) == "session_not_found"
    r = api.sso("DELETE", "/auth/sessions/not-a-uuid", headers=alice.auth)
    assert r.status_code == 422, r.text
    assert error_code(r) == "validation_error"
    # Bob's session was left alone.
    r = api.sso("GET", "/auth/info", headers=bob.auth)
    assert r.status_code == 200, r.text


def test_an_ended_session_cannot_be_ended_again(api: Api) -> None:
    user = api.register()
    other = api.login(user.email, user.password)
    other_id = next(s["id"] for s in _sessions(api, other) if s["current"])
    r = api.sso("DELETE", f"/auth/sessions/{other_id}", headers=user.auth)
    assert r.status_code == 200, r.text
    r = api.sso("DELETE", f"/auth/sessions/{other_id}", headers=user.auth)
    assert r.status_code == 404, r.text
    assert error_code(r) == "session_not_found"


def test_wrong_current_password_is_401_then_throttled(api: Api) -> None:
    user = api.register()
    for _ in range(THROTTLE_LIMIT):
        r = _change(api, user, "not my password", NEW_PASSWORD)
        assert r.status_code == 401, r.text
        assert error_code(r) == "invalid_credentials"
    r = _change(api, user, "not my password", NEW_PASSWORD)
    assert r.status_code == 429, r.text
    assert error_code(r) == "too_many_attempts"
    assert int(r.headers["Retry-After"]) >= 1
    # Throttled even with the right password, and login shares the count.
    r = _change(api, user, PASSWORD, NEW_PASSWORD)
    assert r.status_code == 429, r.text
    r = api.sso("POST", "/auth/login", json={"email": user.email, "password": PASSWORD})
    assert r.status_code == 429, r.text
    # Nothing changed: the session still works.
    r = api.sso("GET", "/auth/info", headers=user.auth)
    assert r.status_code == 200, r.text


def test_a_weak_new_password_is_422_and_changes_nothing(api: Api) -> None:
    user = api.register()
    r = _change(api, user, PASSWORD, "short")
    assert r.status_code == 422, r.text
    assert error_code(r) == "validation_error"
    assert "new_password" in r.json()["error"]
    r = _change(api, user, PASSWORD, "")
    assert r.status_code == 422, r.text
    api.login(user.email, PASSWORD)
    r = api.sso("GET", "/auth/info", headers=user.auth)
    assert r.status_code == 200, r.text


# --- the routes at work ---------------------------------------------------------------------

def test_the_list_shows_each_session_newest_first_with_the_current_one_marked(
        api: Api) -> None:
    user = api.register()
    phone = _login_from(api, user, "Phone/1.0")
    laptop = _login_from(api, user, "Laptop/2.0 " + "x" * 1000)
    items = _sessions(api, phone)
    assert len(items) == 3
    assert [set(item) for item in items] == [
        {"id", "created_at", "last_used_at", "user_agent", "ip", "current"}] * 3
    assert [item["current"] for item in items] == [False, True, False]
    assert items[0]["user_agent"].startswith("Laptop/2.0 ")
    assert len(items[0]["user_agent"]) == 256  # truncated
    assert items[1]["user_agent"] == "Phone/1.0"
    assert all(item["ip"] == "127.0.0.1" for item in items)
    assert [item["created_at"] for item in items] == sorted(
        (item["created_at"] for item in items), reverse=True)
    assert [item["current"] for item in _sessions(api, laptop)] == [True, False, False]

    # A refresh counts as a use; it stays the same session.
    before = items[1]["last_used_at"]
    r = api.sso("POST", "/auth/refresh", json={"token": phone.refresh})
    assert r.status_code == 200, r.text
    refreshed = Account(user.email, user.password, user.user_id, r.json()["access_token"],
                        r.json()["refresh_token"])
    after = next(i for i in _sessions(api, refreshed) if i["current"])
    assert after["id"] == items[1]["id"]
    assert after["last_used_at"] >= before


def test_ending_one_session_is_honoured_by_loyalty_while_the_others_go_on(api: Api) -> None:
    user = api.user()
    other = api.login(user.email, user.password)
    other_id = next(s["id"] for s in _sessions(api, other) if s["current"])
    r = api.sso("DELETE", f"/auth/sessions/{other_id}", headers=user.auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "Success"}
    _refused_everywhere(api, other.access)
    r = api.sso("POST", "/auth/refresh", json={"token": other.refresh})
    assert r.status_code == 401, r.text
    _accepted_everywhere(api, user.access)
    assert other_id not in {s["id"] for s in _sessions(api, user)}


def test_ending_every_other_session_keeps_the_current_one(api: Api) -> None:
    user = api.user()
    others = [api.login(user.email, user.password) for _ in range(2)]
    stranger = api.register()
    r = api.sso("DELETE", "/auth/sessions", headers=user.auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "Success", "ended": 2}
    for other in others:
        _refused_everywhere(api, other.access)
    _accepted_everywhere(api, user.access)
    assert [s["current"] for s in _sessions(api, user)] == [True]
    r = api.sso("DELETE", "/auth/sessions", headers=user.auth)
    assert r.json() == {"status": "Success", "ended": 0}
    r = api.sso("GET", "/auth/info", headers=stranger.auth)
    assert r.status_code == 200, r.text


def test_changing_the_password_ends_every_session_and_opens_a_new_one(api: Api) -> None:
    user = api.user()
    other = api.login(user.email, user.password)
    r = _change(api, user, PASSWORD, NEW_PASSWORD)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"status", "access_token", "refresh_token"}
    assert body["status"] == "Success"
    assert r.headers["Cache-Control"] == "no-store"
    for old in (user.access, other.access):
        _refused_everywhere(api, old)
    r = api.sso("POST", "/auth/refresh", json={"token": user.refresh})
    assert r.status_code == 401, r.text

    fresh = Account(user.email, NEW_PASSWORD, user.user_id, body["access_token"],
                    body["refresh_token"])
    _accepted_everywhere(api, fresh.access)
    assert [s["current"] for s in _sessions(api, fresh)] == [True]
    r = api.sso("POST", "/auth/refresh", json={"token": fresh.refresh})
    assert r.status_code == 200, r.text

    r = api.sso("POST", "/auth/login", json={"email": user.email, "password": PASSWORD})
    assert r.status_code == 401, r.text
    assert error_code(r) == "invalid_credentials"
    api.login(user.email, NEW_PASSWORD)
    # The balance is the user's still.
    assert api.balance(fresh) > 0
