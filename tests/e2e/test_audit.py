"""The audit log of admin actions, read over HTTP from sso and from loyalty: a row for every
admin action (who, what, on whom, the request id the client sent, what came of it), none for
a refused one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.e2e_helpers import (
    PASSWORD,
    Account,
    Api,
    Server,
    admin_server,
    error_code,
    run_cli,
    unique_email,
)

pytestmark = pytest.mark.e2e

SSO_AUDIT, LOYALTY_AUDIT = "/auth/admin/audit", "/loyalty/admin/audit"
ITEM_KEYS = {"id", "at", "actor", "actor_kind", "action", "target", "request_id", "outcome"}
USERS = "/auth/admin/users"


def _call(api: Api, path: str, method: str, url: str, **kw: Any) -> httpx.Response:
    return (api.sso if path.startswith("/auth") else api.loy)(method, url, **kw)


def _audit(api: Api, path: str, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    r = _call(api, path, "GET", path, headers=headers, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["status"] == "Success"
    assert all(set(item) == ITEM_KEYS for item in body["items"]), body
    return body


def _rows(api: Api, path: str, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    return list(_audit(api, path, headers, limit=100, **params)["items"])


def _request_id() -> str:
    return f"audit-{uuid.uuid4().hex}"


def _user_id(api: Api, headers: dict[str, str]) -> str:
    r = api.sso("GET", "/auth/info", headers=headers)
    assert r.status_code == 200, r.text
    user_id: str = r.json()["user_id"]
    return user_id


def _set_admin(api: Api, headers: dict[str, str], user_id: str, is_admin: bool,
               request_id: str | None = None) -> httpx.Response:
    extra = {"X-Request-Id": request_id} if request_id else {}
    return api.sso("PUT", f"{USERS}/{user_id}/admin", headers={**headers, **extra},
                   json={"is_admin": is_admin})


def _new_admin(api: Api, admin: dict[str, str]) -> Account:
    user = api.user()
    assert _set_admin(api, admin, user.user_id, True).status_code == 200
    return api.login(user.email, user.password)


# --- refusals first -------------------------------------------------------------------------

@pytest.mark.parametrize("path", [SSO_AUDIT, LOYALTY_AUDIT])
def test_the_audit_is_for_admins_only(api: Api, path: str) -> None:
    r = _call(api, path, "GET", path)
    assert r.status_code == 401, r.text
    assert error_code(r) == "missing_token"
    r = _call(api, path, "GET", path, headers=api.register().auth)
    assert r.status_code == 403, r.text
    assert error_code(r) == "forbidden"


@pytest.mark.parametrize("path", [SSO_AUDIT, LOYALTY_AUDIT])
def test_malformed_queries_are_422(api: Api, admin: dict[str, str], path: str) -> None:
    for params in ({"actor": "not-a-uuid"}, {"target": "42"}, {"limit": 0}, {"limit": 101},
                   {"limit": "many"}, {"cursor": "not a cursor"}, {"cursor": "-1"},
                   {"cursor": "9" * 40}):
        r = _call(api, path, "GET", path, headers=admin, params=params)
        assert r.status_code == 422, (params, r.text)
        assert error_code(r) == "validation_error"


def test_refused_sso_actions_leave_no_row(api: Api, admin: dict[str, str]) -> None:
    user, other = api.user(), api.user()
    # 403: a user is no admin
    assert _set_admin(api, user.auth, other.user_id, True).status_code == 403
    r = api.sso("POST", f"{USERS}/{other.user_id}/sessions/revoke", headers=user.auth)
    assert r.status_code == 403
    # 404: no such user
    unknown = str(uuid.uuid4())
    assert _set_admin(api, admin, unknown, True).status_code == 404
    assert api.sso("POST", f"{USERS}/{unknown}/restore", headers=admin).status_code == 404
    # 409: not deleted
    r = api.sso("POST", f"{USERS}/{other.user_id}/restore", headers=admin)
    assert r.status_code == 409, r.text
    for target in (other.user_id, unknown):
        assert _rows(api, SSO_AUDIT, admin, target=target) == []
    assert _rows(api, SSO_AUDIT, admin, actor=user.user_id) == []


def test_refused_loyalty_actions_leave_no_row(api: Api, admin: dict[str, str]) -> None:
    user = api.user()
    deposits = f"/loyalty/admin/accounts/{user.user_id}/deposits"
    withdrawals = f"/loyalty/admin/accounts/{user.user_id}/withdrawals"
    r = api.loy("POST", withdrawals, headers=admin, json={"amount": 101, "comment": "too much"})
    assert r.status_code == 409, r.text
    assert error_code(r) == "insufficient_points"
    r = api.loy("POST", deposits, headers=user.auth, json={"amount": 1, "comment": "mine"})
    assert r.status_code == 403, r.text
    r = api.loy("POST", "/loyalty", headers=admin,
                json={"uuid": str(uuid.uuid4()), "operation": "d", "comment": "x",
                      "balance": 1})
    assert r.status_code == 404, r.text
    r = api.loy("POST", deposits, headers=admin, json={"amount": 0, "comment": "zero"})
    assert r.status_code == 422, r.text
    # A user spending their own points is no admin action.
    r = api.loy("POST", "/loyalty/me/withdrawals", headers=user.auth,
                json={"amount": 1, "comment": "coffee"})
    assert r.status_code == 201, r.text
    assert _rows(api, LOYALTY_AUDIT, admin, target=user.user_id) == []
    assert api.balance(user) == 99


def test_the_last_admin_keeping_the_right_leaves_no_row(lone: tuple[Api, Account]) -> None:
    api, root = lone
    r = _set_admin(api, root.auth, root.user_id, False)
    assert r.status_code == 409, r.text
    assert error_code(r) == "last_admin"
    # Only the start-up admin's creation, at the command line.
    rows = _rows(api, SSO_AUDIT, root.auth, target=root.user_id)
    assert [(row["action"], row["actor"], row["actor_kind"], row["outcome"])
            for row in rows] == [
        ("create_admin", None, "cli", {"result": "created", "password_reset": False})]


# --- the log at work ------------------------------------------------------------------------

def test_each_sso_admin_action_is_recorded_with_the_clients_request_id(
        api: Api, admin: dict[str, str]) -> None:
    admin_id = _user_id(api, admin)
    user = api.user()
    ids = [_request_id() for _ in range(5)]
    assert _set_admin(api, admin, user.user_id, True, ids[0]).status_code == 200
    assert _set_admin(api, admin, user.user_id, True, ids[1]).status_code == 200  # no change
    again = api.login(user.email, user.password)
    assert _set_admin(api, admin, user.user_id, False, ids[2]).status_code == 200
    api.login(user.email, user.password)
    r = api.sso("POST", f"{USERS}/{user.user_id}/sessions/revoke",
                headers={**admin, "X-Request-Id": ids[3]})
    assert r.json()["ended"] == 1
    fresh = api.login(user.email, user.password)
    r = api.sso("DELETE", "/auth/me", headers=fresh.auth, json={"password": PASSWORD})
    assert r.status_code == 200, r.text
    r = api.sso("POST", f"{USERS}/{user.user_id}/restore",
                headers={**admin, "X-Request-Id": ids[4]})
    assert r.status_code == 200, r.text
    assert again.user_id == user.user_id

    rows = _rows(api, SSO_AUDIT, admin, target=user.user_id)
    assert [(row["action"], row["outcome"], row["request_id"]) for row in rows] == [
        ("restore_user", {"restored": True}, ids[4]),
        ("revoke_sessions", {"sessions_ended": 1}, ids[3]),
        ("revoke_admin", {"is_admin": False, "changed": True, "sessions_ended": 2}, ids[2]),
        ("grant_admin", {"is_admin": True, "changed": False, "sessions_ended": 0}, ids[1]),
        ("grant_admin", {"is_admin": True, "changed": True, "sessions_ended": 0}, ids[0]),
    ]
    assert all(row["actor"] == admin_id and row["actor_kind"] == "admin"
               and row["target"] == user.user_id and row["at"].endswith("Z")
               for row in rows)
    assert [row["id"] for row in rows] == sorted((row["id"] for row in rows), reverse=True)
    # Ids only: nothing personal in the log.
    assert user.email not in str(rows)


def test_admin_movements_are_recorded_once_with_their_outcome(
        api: Api, admin: dict[str, str]) -> None:
    admin_id = _user_id(api, admin)
    user = api.user()
    base = f"/loyalty/admin/accounts/{user.user_id}"
    ids = [_request_id() for _ in range(3)]
    key = {"Idempotency-Key": uuid.uuid4().hex}
    deposit = api.loy("POST", f"{base}/deposits", json={"amount": 10, "comment": "Secret note"},
                      headers={**admin, **key, "X-Request-Id": ids[0]})
    assert deposit.status_code == 201, deposit.text
    replay = api.loy("POST", f"{base}/deposits", json={"amount": 10, "comment": "Secret note"},
                     headers={**admin, **key, "X-Request-Id": _request_id()})
    assert replay.json() == deposit.json()
    withdrawal = api.loy("POST", f"{base}/withdrawals", json={"amount": 30, "comment": "w"},
                         headers={**admin, "X-Request-Id": ids[1]})
    assert withdrawal.status_code == 201, withdrawal.text
    seed = api.loy("POST", "/loyalty", headers={**admin, "X-Request-Id": ids[2]},
                   json={"uuid": user.user_id, "operation": "d", "comment": "c", "balance": 5})
    assert seed.json()["balance"] == 85

    rows = _rows(api, LOYALTY_AUDIT, admin, target=user.user_id)
    assert [(row["action"], row["request_id"]) for row in rows] == [
        ("deposit", ids[2]), ("withdrawal", ids[1]), ("deposit", ids[0])]
    assert rows[2]["outcome"] == {"amount": 10, "balance_after": 110,
                                  "transaction_id": deposit.json()["transaction"]["id"]}
    assert rows[1]["outcome"] == {"amount": 30, "balance_after": 80,
                                  "transaction_id": withdrawal.json()["transaction"]["id"]}
    assert rows[0]["outcome"]["balance_after"] == 85
    assert all(row["actor"] == admin_id and row["actor_kind"] == "admin" for row in rows)
    assert "Secret note" not in str(rows)


def test_filters_by_actor_and_target_and_pages_with_the_cursor(
        api: Api, admin: dict[str, str]) -> None:
    acting = _new_admin(api, admin)
    users = [api.register() for _ in range(5)]
    for user in users:
        r = api.sso("POST", f"{USERS}/{user.user_id}/sessions/revoke", headers=acting.auth)
        assert r.status_code == 200, r.text
    assert _set_admin(api, acting.auth, users[0].user_id, True).status_code == 200

    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"actor": acting.user_id, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = _audit(api, SSO_AUDIT, admin, **params)
        pages += 1
        assert len(body["items"]) <= 2
        seen += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [row["target"] for row in seen] == [users[0].user_id] + [
        u.user_id for u in reversed(users)]
    assert {row["actor"] for row in seen} == {acting.user_id}
    both = _rows(api, SSO_AUDIT, admin, actor=acting.user_id, target=users[0].user_id)
    assert [row["action"] for row in both] == ["grant_admin", "revoke_sessions"]
    # The grant that made the acting admin is the bootstrap admin's, about them.
    made = _rows(api, SSO_AUDIT, admin, target=acting.user_id)
    assert [row["action"] for row in made] == ["grant_admin"]
    assert made[0]["actor"] == _user_id(api, admin)


def test_command_line_actions_are_recorded_without_an_actor(
        api: Api, admin: dict[str, str], server: Server) -> None:
    email = unique_email("cli-audit")
    created = run_cli("admin", "create", "--email", email, "--password", PASSWORD,
                      "--data-dir", str(server.data_dir))
    assert created.returncode == 0, created.stdout + created.stderr
    new_admin = api.login(email, PASSWORD)
    ended = run_cli("admin", "revoke-sessions", "--email", email, "--data-dir",
                    str(server.data_dir))
    assert ended.returncode == 0, ended.stdout + ended.stderr
    rows = _rows(api, SSO_AUDIT, admin, target=new_admin.user_id)
    # Two sessions: the one the creation opened, and the login.
    assert [(row["action"], row["actor"], row["actor_kind"], row["request_id"], row["outcome"])
            for row in rows] == [
        ("revoke_sessions", None, "cli", None, {"sessions_ended": 2}),
        ("create_admin", None, "cli", None, {"result": "created", "password_reset": False}),
    ]


@pytest.fixture
def lone(tmp_path: Path, http: httpx.Client) -> Iterator[tuple[Api, Account]]:
    """A server whose bootstrap admin is its only admin, and that admin logged in."""
    with admin_server(tmp_path / "data", http, "lone-audit") as lone:
        yield lone
