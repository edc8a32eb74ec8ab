"""Holds over HTTP: reserve points, then capture or release them; refusals first."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.e2e.e2e_helpers import Account, Api, error_code, history, poll

pytestmark = pytest.mark.e2e

HOLD_KEYS = {"id", "amount", "captured_amount", "comment", "state", "expires_at",
             "created_at"}


def _hold(api: Api, user: Account, amount: int, **extra: Any) -> dict[str, Any]:
    r = api.loy("POST", "/loyalty/me/holds", headers=user.auth,
                json={"amount": amount, "comment": "cart", **extra})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def _me(api: Api, user: Account) -> dict[str, Any]:
    r = api.loy("GET", "/loyalty/me", headers=user.auth)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_refusals_of_holds_captures_and_releases(api: Api) -> None:
    user, other = api.user(), api.user()
    r = api.loy("POST", "/loyalty/me/holds", headers=user.auth,
                json={"amount": 101, "comment": "too much"})
    assert (r.status_code, error_code(r)) == (409, "insufficient_points")
    r = api.loy("POST", "/loyalty/me/holds", headers=user.auth,
                json={"amount": 1, "comment": "long", "ttl_seconds": 7 * 24 * 3600 + 1})
    assert (r.status_code, error_code(r)) == (422, "validation_error")
    for body in ({"amount": 0, "comment": "x"}, {"amount": 1, "comment": "x",
                                                  "ttl_seconds": 0}):
        r = api.loy("POST", "/loyalty/me/holds", headers=user.auth, json=body)
        assert r.status_code == 422, r.text
    assert api.loy("POST", "/loyalty/me/holds", json={"amount": 1, "comment": "x"}
                   ).status_code == 401
    hold = _hold(api, user, 60)["hold"]
    path = f"/loyalty/me/holds/{hold['id']}"
    for action in ("capture", "release"):  # someone else's hold, an unknown one
        r = api.loy("POST", f"{path}/{action}", headers=other.auth)
        assert (r.status_code, error_code(r)) == (404, "hold_not_found")
        r = api.loy("POST", f"/loyalty/me/holds/{2**62}/{action}", headers=user.auth)
        assert (r.status_code, error_code(r)) == (404, "hold_not_found")
    r = api.loy("POST", f"{path}/capture", headers=user.auth, json={"amount": 61})
    assert (r.status_code, error_code(r)) == (422, "validation_error")
    r = api.loy("POST", "/loyalty/me/withdrawals", headers=user.auth,
                json={"amount": 41, "comment": "tea"})
    assert (r.status_code, error_code(r)) == (409, "insufficient_points")
    r = api.loy("POST", "/loyalty", headers=user.auth,
                json={"operation": "w", "comment": "tea", "balance": 41})
    assert (r.status_code, error_code(r)) == (409, "insufficient_points")
    assert api.loy("POST", f"{path}/release", headers=user.auth).status_code == 200
    for action in ("capture", "release"):
        r = api.loy("POST", f"{path}/{action}", headers=user.auth)
        assert (r.status_code, error_code(r)) == (409, "hold_not_active")
    r = api.loy("GET", "/loyalty/me/holds", headers=user.auth, params={"state": "nope"})
    assert r.status_code == 422


def test_an_expired_hold_frees_its_points_and_refuses_its_capture(api: Api) -> None:
    user = api.user()
    hold = _hold(api, user, 80, ttl_seconds=1)["hold"]
    assert poll(lambda: _me(api, user)["available"] == 100, 10.0)
    r = api.loy("POST", f"/loyalty/me/holds/{hold['id']}/capture", headers=user.auth)
    assert (r.status_code, error_code(r)) == (409, "hold_expired")
    r = api.loy("POST", "/loyalty/me/withdrawals", headers=user.auth,
                json={"amount": 100, "comment": "all"})
    assert r.status_code == 201, r.text
    r = api.loy("GET", "/loyalty/me/holds", headers=user.auth, params={"state": "expired"})
    assert [h["id"] for h in r.json()["items"]] == [hold["id"]]


def test_hold_capture_release_and_listing(api: Api) -> None:
    user = api.user()
    placed = _hold(api, user, 70, ttl_seconds=600)
    assert set(placed["hold"]) == HOLD_KEYS
    assert (placed["balance"], placed["available"], placed["hold"]["state"]) == (100, 30, "held")
    me = _me(api, user)
    assert (me["balance"], me["available"], me["held"]) == (100, 30, 70)
    r = api.loy("GET", f"/loyalty/{user.user_id}", headers=user.auth)
    assert set(r.json()) == {"status", "uuid", "balance"}  # the original's shape
    key = {**user.auth, "Idempotency-Key": f"cap-{uuid.uuid4()}"}
    path = f"/loyalty/me/holds/{placed['hold']['id']}/capture"
    first = api.loy("POST", path, headers=key, json={"amount": 50})
    again = api.loy("POST", path, headers=key, json={"amount": 50})
    assert first.status_code == again.status_code == 200, first.text
    assert first.json() == again.json()
    body = first.json()
    assert (body["hold"]["state"], body["hold"]["captured_amount"]) == ("captured", 50)
    assert (body["balance"], body["available"]) == (50, 50)
    assert (body["transaction"]["kind"], body["transaction"]["hold_id"]) == (
        "withdrawal", placed["hold"]["id"])
    second = _hold(api, user, 10)
    r = api.loy("POST", f"/loyalty/me/holds/{second['hold']['id']}/release", headers=user.auth)
    assert r.status_code == 200, r.text
    assert (r.json()["hold"]["state"], r.json()["available"]) == ("released", 50)
    items = history(api, user.auth)
    assert sum(i["amount"] if i["kind"] == "deposit" else -i["amount"] for i in items) == 50
    assert [i["hold_id"] for i in items] == [placed["hold"]["id"], None]
    r = api.loy("GET", "/loyalty/me/holds", headers=user.auth, params={"limit": 1})
    page = r.json()
    assert [h["id"] for h in page["items"]] == [second["hold"]["id"]]
    r = api.loy("GET", "/loyalty/me/holds", headers=user.auth,
                params={"limit": 1, "cursor": page["next_cursor"]})
    assert [h["state"] for h in r.json()["items"]] == ["captured"]


def test_admin_holds_are_audited_and_a_frozen_account_only_releases(
        api: Api, admin: dict[str, str]) -> None:
    user = api.user()
    base = f"/loyalty/admin/accounts/{user.user_id}/holds"
    r = api.loy("POST", base, headers=user.auth, json={"amount": 1, "comment": "x"})
    assert (r.status_code, error_code(r)) == (403, "forbidden")
    r = api.loy("POST", base, headers=admin, json={"amount": 40, "comment": "checkout"})
    assert r.status_code == 201, r.text
    captured = r.json()["hold"]["id"]
    r = api.loy("POST", f"{base}/{captured}/capture", headers=admin)
    assert r.status_code == 200, r.text
    r = api.loy("POST", base, headers=admin, json={"amount": 20, "comment": "checkout"})
    kept = r.json()["hold"]["id"]
    view = api.loy("GET", f"/loyalty/admin/accounts/{user.user_id}", headers=admin).json()
    assert (view["balance"], view["available"], view["held"]) == (60, 40, 20)
    r = api.loy("GET", "/loyalty/admin/audit", headers=admin,
                params={"target": user.user_id})
    actions = [(e["action"], e["outcome"]["hold_id"]) for e in r.json()["items"]]
    assert actions == [("hold", kept), ("capture", captured), ("hold", captured)]
    r = api.sso("DELETE", "/auth/me", headers=user.auth, json={"password": user.password})
    assert r.status_code in (200, 204), r.text

    def frozen() -> bool:
        view = api.loy("GET", f"/loyalty/admin/accounts/{user.user_id}", headers=admin)
        return bool(view.json()["state"] == "frozen")
    assert poll(frozen, 10.0)
    r = api.loy("POST", base, headers=admin, json={"amount": 1, "comment": "x"})
    assert error_code(r) == "account_frozen"
    r = api.loy("POST", f"{base}/{kept}/capture", headers=admin)
    assert (r.status_code, error_code(r)) == (409, "account_frozen")
    r = api.loy("POST", f"{base}/{kept}/release", headers=admin)
    assert r.status_code == 200, r.text
    assert api.loy("GET", base, headers=admin).json()["items"][0]["state"] == "released"
    r = api.loy("POST", f"{base}/{captured}/capture", headers=admin)
    assert (r.status_code, error_code(r)) == (409, "hold_not_active")
