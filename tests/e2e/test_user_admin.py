"""User administration by admins: finding users, one user's details, the admin right and
ending a user's sessions, seen from sso and from loyalty."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.e2e_helpers import (
    Account,
    Api,
    admin_server,
    bearer,
    error_code,
    unique_email,
)
from tests.e2e.test_sessions import _accepted_everywhere, _refused_everywhere

pytestmark = pytest.mark.e2e

USERS = "/auth/admin/users"
ITEM_KEYS = {"user_id", "email", "name", "is_admin", "created_at", "deleted_at", "purged_at"}


def _get(api: Api, headers: dict[str, str], path: str = USERS, **params: Any) -> dict[str, Any]:
    r = api.sso("GET", path, headers=headers, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["status"] == "Success"
    return body


def _set_admin(api: Api, headers: dict[str, str], user_id: str,
               is_admin: bool) -> httpx.Response:
    return api.sso("PUT", f"{USERS}/{user_id}/admin", headers=headers,
                   json={"is_admin": is_admin})


def _make_admin(api: Api, headers: dict[str, str]) -> Account:
    """A new user made an admin, logged in again so that the token says so."""
    user = api.user()
    r = _set_admin(api, headers, user.user_id, True)
    assert r.status_code == 200, r.text
    return api.login(user.email, user.password)


# --- refusals first -----------------------------------------------------------------------

def _routes(user_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [("GET", USERS, None), ("GET", f"{USERS}/{user_id}", None),
            ("PUT", f"{USERS}/{user_id}/admin", {"is_admin": True}),
            ("POST", f"{USERS}/{user_id}/sessions/revoke", None)]


def test_without_a_token_the_admin_routes_answer_401(api: Api) -> None:
    for method, path, body in _routes(str(uuid.uuid4())):
        r = api.sso(method, path, json=body)
        assert r.status_code == 401, (method, path, r.text)
        assert error_code(r) == "missing_token"


def test_a_user_who_is_not_an_admin_gets_403_and_changes_nothing(api: Api,
                                                                admin: dict[str, str]) -> None:
    user, other = api.user(), api.user()
    for method, path, body in _routes(other.user_id):
        r = api.sso(method, path, headers=user.auth, json=body)
        assert r.status_code == 403, (method, path, r.text)
        assert error_code(r) == "forbidden"
    details = _get(api, admin, f"{USERS}/{other.user_id}")
    assert details["is_admin"] is False
    assert details["sessions"] == 1
    _accepted_everywhere(api, other.access)


def test_unknown_users_are_404_and_malformed_input_422(api: Api,
                                                      admin: dict[str, str]) -> None:
    for method, path, body in _routes(str(uuid.uuid4()))[1:]:
        r = api.sso(method, path, headers=admin, json=body)
        assert r.status_code == 404, (method, path, r.text)
        assert error_code(r) == "user_not_found"
    for method, path, body in _routes("not-a-uuid")[1:]:
        r = api.sso(method, path, headers=admin, json=body)
        assert r.status_code == 422, (method, path, r.text)
    user = api.register()
    for bad in ({"is_admin": "yes"}, {}, {"is_admin": None}):
        r = api.sso("PUT", f"{USERS}/{user.user_id}/admin", headers=admin, json=bad)
        assert r.status_code == 422, (bad, r.text)
    for params in ({"limit": 0}, {"limit": 101}, {"cursor": "not a cursor"}):
        r = api.sso("GET", USERS, headers=admin, params=params)
        assert r.status_code == 422, (params, r.text)
        assert error_code(r) == "validation_error"
    # A query parameter is named as such, not as the body.
    r = api.sso("GET", USERS, headers=admin, params={"query": "a" * 255})
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith("query: "), r.text
    assert [f["field"] for f in r.json()["fields"]] == ["query"]


# --- the routes at work ---------------------------------------------------------------------

def test_the_list_pages_through_an_email_prefix_in_any_case(api: Api,
                                                           admin: dict[str, str]) -> None:
    prefix = f"page-{uuid.uuid4().hex[:10]}"
    emails = sorted(f"{prefix}-{n}@example.com" for n in range(7))
    for email in emails:
        api.register(email=email, name="Pat Page")
    api.register(email=unique_email("other"))  # not matched

    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"query": prefix.upper(), "limit": 3}
        if cursor:
            params["cursor"] = cursor
        body = _get(api, admin, **params)
        pages += 1
        assert len(body["items"]) <= 3
        seen += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [item["email"] for item in seen] == emails
    assert all(set(item) == ITEM_KEYS for item in seen)
    assert all(item["name"] == "Pat Page" and item["is_admin"] is False
               and item["deleted_at"] is None and item["created_at"].endswith("Z")
               for item in seen)

    # Wildcards in the query are plain characters.
    assert _get(api, admin, query=f"{prefix[:-1]}_")["items"] == []
    assert _get(api, admin, query=f"{prefix}%")["items"] == []


def test_a_user_id_finds_that_user_and_the_details_count_active_sessions(
        api: Api, admin: dict[str, str]) -> None:
    user = api.user()
    api.login(user.email, user.password)
    found = _get(api, admin, query=user.user_id)["items"]
    assert [item["email"] for item in found] == [user.email]
    details = _get(api, admin, f"{USERS}/{user.user_id}")
    assert set(details) == ITEM_KEYS | {"status", "sessions"}
    assert details["user_id"] == user.user_id
    assert details["sessions"] == 2
    assert _get(api, admin, query=str(uuid.uuid4()))["items"] == []


def test_revoking_a_users_sessions_is_honoured_by_loyalty(api: Api,
                                                         admin: dict[str, str]) -> None:
    user = api.user()
    other = api.login(user.email, user.password)
    bystander = api.user()
    r = api.sso("POST", f"{USERS}/{user.user_id}/sessions/revoke", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "Success", "ended": 2}
    for account in (user, other):
        _refused_everywhere(api, account.access)
    _accepted_everywhere(api, bystander.access)
    assert _get(api, admin, f"{USERS}/{user.user_id}")["sessions"] == 0
    r = api.sso("POST", f"{USERS}/{user.user_id}/sessions/revoke", headers=admin)
    assert r.json() == {"status": "Success", "ended": 0}
    api.login(user.email, user.password)  # the account itself is untouched


def test_granting_and_revoking_the_admin_right(api: Api, admin: dict[str, str]) -> None:
    new_admin = _make_admin(api, admin)
    assert _get(api, admin, f"{USERS}/{new_admin.user_id}")["is_admin"] is True
    # The new right works in loyalty too.
    target = api.user()
    r = api.loy("POST", f"/loyalty/admin/accounts/{target.user_id}/deposits",
                headers=new_admin.auth, json={"amount": 5, "comment": "bonus"})
    assert r.status_code in (200, 201), r.text
    # Granting again changes nothing.
    r = _set_admin(api, admin, new_admin.user_id, True)
    assert r.status_code == 200, r.text
    _accepted_everywhere(api, new_admin.access)

    r = _set_admin(api, admin, new_admin.user_id, False)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "Success"}
    _refused_everywhere(api, new_admin.access)
    r = api.sso("POST", "/auth/refresh", json={"token": new_admin.refresh})
    assert r.status_code == 401, r.text
    again = api.login(new_admin.email, new_admin.password)
    r = api.sso("GET", "/auth/info", headers=again.auth)
    assert r.json()["is_admin"] is False
    r = api.sso("GET", USERS, headers=again.auth)
    assert r.status_code == 403, r.text
    r = api.loy("POST", f"/loyalty/admin/accounts/{target.user_id}/deposits",
                headers=again.auth, json={"amount": 5, "comment": "bonus"})
    assert r.status_code == 403, r.text
    # Revoking a right the user does not have ends nothing.
    r = _set_admin(api, admin, new_admin.user_id, False)
    assert r.status_code == 200, r.text
    _accepted_everywhere(api, again.access)


# --- the last admin, on a server of its own ---------------------------------------------------

@pytest.fixture
def lone(tmp_path: Path, http: httpx.Client) -> Iterator[tuple[Api, Account]]:
    """A server whose bootstrap admin is its only admin, and that admin logged in."""
    with admin_server(tmp_path / "data", http, "lone-admin") as lone:
        yield lone


def test_the_last_admin_keeps_the_right(lone: tuple[Api, Account]) -> None:
    api, root = lone
    r = _set_admin(api, root.auth, root.user_id, False)
    assert r.status_code == 409, r.text
    assert error_code(r) == "last_admin"
    _accepted_everywhere(api, root.access)

    # With a second admin, an admin may give the right up; then the other is the last.
    second = _make_admin(api, root.auth)
    r = _set_admin(api, root.auth, root.user_id, False)
    assert r.status_code == 200, r.text
    _refused_everywhere(api, root.access)
    r = _set_admin(api, second.auth, second.user_id, False)
    assert r.status_code == 409, r.text
    assert error_code(r) == "last_admin"
    r = _set_admin(api, second.auth, root.user_id, True)
    assert r.status_code == 200, r.text


def test_a_deleted_admin_does_not_count_and_the_last_live_admin_cannot_leave(
        lone: tuple[Api, Account]) -> None:
    api, root = lone
    second = _make_admin(api, root.auth)
    r = api.sso("DELETE", "/auth/me", headers=second.auth, json={"password": second.password})
    assert r.status_code == 200, r.text
    r = _set_admin(api, root.auth, root.user_id, False)
    assert r.status_code == 409, r.text
    assert error_code(r) == "last_admin"
    r = api.sso("DELETE", "/auth/me", headers=root.auth, json={"password": root.password})
    assert r.status_code == 409, r.text
    assert error_code(r) == "last_admin"
    _accepted_everywhere(api, root.access)
    details = _get(api, root.auth, f"{USERS}/{root.user_id}")
    assert (details["is_admin"], details["deleted_at"]) == (True, None)


def test_two_admins_revoking_each_other_at_once_leave_an_admin(
        lone: tuple[Api, Account]) -> None:
    api, root = lone
    first, second = _make_admin(api, root.auth), _make_admin(api, root.auth)
    r = _set_admin(api, first.auth, root.user_id, False)
    assert r.status_code == 200, r.text
    for _ in range(3):
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(
                lambda pair: _set_admin(api, pair[0].auth, pair[1].user_id, False),
                [(first, second), (second, first)]))
        statuses = sorted(a.status_code for a in answers)
        assert statuses in ([200, 401], [200, 409]), [a.text for a in answers]
        admins = [a for a in (first, second)
                  if api.sso("GET", "/auth/info",
                             headers=bearer(api.login(a.email, a.password).access)
                             ).json()["is_admin"]]
        assert len(admins) == 1
        # Put the loser back as an admin for the next round.
        winner = api.login(admins[0].email, admins[0].password)
        loser = second if admins[0] is first else first
        r = _set_admin(api, winner.auth, loser.user_id, True)
        assert r.status_code == 200, r.text
        first, second = (api.login(a.email, a.password) for a in (first, second))
