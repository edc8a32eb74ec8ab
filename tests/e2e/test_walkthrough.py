"""The README walkthrough, step by step, as a user would do it with curl."""

from __future__ import annotations

import re
from datetime import datetime
from uuid import UUID

import pytest

from tests.e2e.e2e_helpers import Api, bearer, history, unique_email

pytestmark = pytest.mark.e2e

ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def _check_transaction(tx: dict[str, object], kind: str, amount: int, comment: str,
                       balance_after: int) -> None:
    assert set(tx) == {"id", "kind", "amount", "comment", "balance_after", "created_at",
                       "hold_id", "reverses"}, tx
    assert tx["hold_id"] is None, tx  # no hold here
    assert tx["reverses"] is None, tx  # no reversal here
    assert isinstance(tx["id"], int)
    assert tx["kind"] == kind
    assert tx["amount"] == amount
    assert tx["comment"] == comment
    assert tx["balance_after"] == balance_after
    assert isinstance(tx["created_at"], str)
    assert ISO_UTC.match(tx["created_at"]), tx["created_at"]
    datetime.fromisoformat(tx["created_at"].replace("Z", "+00:00"))


def test_readme_walkthrough(api: Api, admin: dict[str, str]) -> None:
    email = unique_email("walk")
    # 1. Register: tokens at once.
    r = api.sso("POST", "/auth/registration", json={
        "email": email, "password": "correct horse battery", "name": "Ann Walker",
        "birthday": "1990-05-17"})
    assert r.status_code == 201, r.text
    assert r.headers["content-type"].startswith("application/json")
    reg = r.json()
    assert reg["status"] == "Success"
    user_id = reg["user_id"]
    assert str(UUID(user_id)) == user_id
    assert reg["access_token"].count(".") == 2
    assert reg["refresh_token"].count(".") == 2
    assert reg["access_token"] != reg["refresh_token"]
    me = bearer(reg["access_token"])

    # 2. The welcome bonus arrives asynchronously.
    account = api.wait_account(reg["access_token"])
    assert account == {"status": "Success", "uuid": user_id, "balance": 100, "available": 100,
                       "held": 0, "expiring": []}
    items = history(api, me)
    assert len(items) == 1
    _check_transaction(items[0], "deposit", 100, "registration", 100)

    # 3. Profile with name and birthday.
    r = api.sso("GET", "/auth/info", headers=me)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "Success", "user_id": user_id, "email": email,
                        "name": "Ann Walker", "birthday": "1990-05-17", "is_admin": False}

    # 4. Spend points.
    r = api.loy("POST", "/loyalty/me/withdrawals", headers=me,
                json={"amount": 30, "comment": "coffee"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "Success"
    assert body["balance"] == 70
    _check_transaction(body["transaction"], "withdrawal", 30, "coffee", 70)
    assert api.balance_of(me) == 70

    # 5. An admin credits points through the admin API ...
    r = api.loy("POST", f"/loyalty/admin/accounts/{user_id}/deposits", headers=admin,
                json={"amount": 50, "comment": "birthday gift"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["balance"] == 120
    _check_transaction(body["transaction"], "deposit", 50, "birthday gift", 120)

    # ... and through the seed-compatible call.
    r = api.loy("POST", "/loyalty", headers=admin,
                json={"uuid": user_id, "operation": "d", "comment": "promo", "balance": 25})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "Success", "uuid": user_id, "balance": 145}

    # ... and an admin withdrawal.
    r = api.loy("POST", f"/loyalty/admin/accounts/{user_id}/withdrawals", headers=admin,
                json={"amount": 5, "comment": "correction"})
    assert r.status_code == 201, r.text
    assert r.json()["balance"] == 140
    _check_transaction(r.json()["transaction"], "withdrawal", 5, "correction", 140)

    # 6. The user spends everything with the seed call; balance 0 is still reported.
    r = api.loy("POST", "/loyalty", headers=me,
                json={"operation": "w", "comment": "all in", "balance": 140})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "Success", "uuid": user_id, "balance": 0}

    # 7. Balance reads: owner and admin, both APIs.
    for headers in (me, admin):
        r = api.loy("GET", f"/loyalty/{user_id}", headers=headers)
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "Success", "uuid": user_id, "balance": 0}
    r = api.loy("GET", f"/loyalty/admin/accounts/{user_id}", headers=admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["uuid"], body["balance"]) == ("Success", user_id, 0)
    # Admins also see who owns the account (asked of sso; in process when embedded).
    assert body["owner_status"] == "ok"
    assert body["owner"]["user_id"] == user_id
    assert (body["owner"]["name"], body["owner"]["birthday"]) == ("Ann Walker", "1990-05-17")

    # 8. History: newest first, paginated with a cursor.
    expected = [("withdrawal", 140, "all in", 0), ("withdrawal", 5, "correction", 140),
                ("deposit", 25, "promo", 145), ("deposit", 50, "birthday gift", 120),
                ("withdrawal", 30, "coffee", 70), ("deposit", 100, "registration", 100)]
    r = api.loy("GET", "/loyalty/me/transactions", headers=me, params={"limit": 4})
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["status"] == "Success"
    assert len(first["items"]) == 4
    assert isinstance(first["next_cursor"], str)
    assert first["next_cursor"]
    r = api.loy("GET", "/loyalty/me/transactions", headers=me,
                params={"limit": 4, "cursor": first["next_cursor"]})
    assert r.status_code == 200, r.text
    second = r.json()
    assert len(second["items"]) == 2
    assert second["next_cursor"] is None
    items = first["items"] + second["items"]
    for tx, (kind, amount, comment, after) in zip(items, expected, strict=True):
        _check_transaction(tx, kind, amount, comment, after)
    ids = [tx["id"] for tx in items]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == len(ids)
    # The balance equals the sum of the transactions.
    total = sum(tx["amount"] if tx["kind"] == "deposit" else -tx["amount"] for tx in items)
    assert total == 0

    # An exact page boundary ends with next_cursor null, not with an empty page.
    r = api.loy("GET", "/loyalty/me/transactions", headers=me, params={"limit": 3})
    page = r.json()
    assert len(page["items"]) == 3
    r = api.loy("GET", "/loyalty/me/transactions", headers=me,
                params={"limit": 3, "cursor": page["next_cursor"]})
    last = r.json()
    assert [tx["id"] for tx in last["items"]] == ids[3:]

    # 9. The admin sees the same history.
    assert history(api, admin, f"/loyalty/admin/accounts/{user_id}/transactions",
                   limit=2) == items


def test_default_history_page_and_limit(api: Api) -> None:
    user = api.user()
    for i in range(3):
        r = api.loy("POST", "/loyalty/me/withdrawals", headers=user.auth,
                    json={"amount": 1, "comment": f"w{i}"})
        assert r.status_code == 201, r.text
    r = api.loy("GET", "/loyalty/me/transactions", headers=user.auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [tx["comment"] for tx in body["items"]] == ["w2", "w1", "w0", "registration"]
    assert body["next_cursor"] is None
    r = api.loy("GET", "/loyalty/me/transactions", headers=user.auth, params={"limit": 1})
    body = r.json()
    assert [tx["comment"] for tx in body["items"]] == ["w2"]
    assert body["next_cursor"] is not None


def test_admin_info(api: Api, admin: dict[str, str]) -> None:
    r = api.sso("GET", "/auth/info", headers=admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["is_admin"] is True
    assert body["email"] == "root-admin@example.com"
    # The bootstrap admin's account was opened too.
    r = api.loy("GET", "/loyalty/me", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["uuid"] == body["user_id"]


def test_register_without_optional_fields(api: Api) -> None:
    user = api.register()
    r = api.sso("GET", "/auth/info", headers=user.auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] is None
    assert body["birthday"] is None
    assert body["user_id"] == user.user_id


def test_email_login_is_case_insensitive(api: Api) -> None:
    email = unique_email("Case")
    user = api.register(email=email)
    again = api.login(email.upper(), user.password)
    assert again.user_id == user.user_id
