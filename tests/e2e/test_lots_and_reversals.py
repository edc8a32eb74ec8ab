"""Expiring deposits and reversals over HTTP, against ``authloyalty up``."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.e2e.e2e_helpers import PASSWORD, Account, Api, error_code, history, poll
from tests.e2e.test_sessions import PROPAGATION


def _at(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat().replace("+00:00", "Z")


def _deposit(api: Api, admin: dict[str, str], user: Account, amount: int,
             expires_at: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"amount": amount, "comment": "promo"}
    if expires_at is not None:
        body["expires_at"] = expires_at
    return api.loy("POST", f"/loyalty/admin/accounts/{user.user_id}/deposits", headers=admin,
                   json=body)


def _reverse(api: Api, headers: dict[str, str], transaction_id: int | str,
             **kw: Any) -> httpx.Response:
    return api.loy("POST", f"/loyalty/admin/transactions/{transaction_id}/reversal",
                   headers=headers, json={"comment": "undo"}, **kw)


def _withdraw(api: Api, user: Account, amount: int) -> dict[str, Any]:
    r = api.loy("POST", "/loyalty/me/withdrawals", headers=user.auth,
                json={"amount": amount, "comment": "tea"})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def test_expiring_deposits_are_refused_unless_in_the_future(
        api: Api, admin: dict[str, str]) -> None:
    user = api.user()
    for bad in (_at(-timedelta(seconds=1)), "tomorrow", "2030-01-01T00:00:00"):  # no offset
        r = _deposit(api, admin, user, 5, bad)
        assert r.status_code == 422, r.text
    assert api.balance(user) == 100
    assert api.loy("GET", "/loyalty/me", headers=user.auth).json()["expiring"] == []


def test_reversal_errors(api: Api, admin: dict[str, str]) -> None:
    user = api.user()
    deposit = _deposit(api, admin, user, 50).json()["transaction"]
    r = _reverse(api, user.auth, deposit["id"])
    assert (r.status_code, error_code(r)) == (403, "forbidden"), r.text
    for bad in ("0", "x", str(2**63)):
        assert _reverse(api, admin, bad).status_code == 422
    r = api.loy("POST", f"/loyalty/admin/transactions/{deposit['id']}/reversal",
                headers=admin, json={})
    assert r.status_code == 422, r.text
    r = _reverse(api, admin, 2**62)
    assert (r.status_code, error_code(r)) == (404, "transaction_not_found"), r.text
    _withdraw(api, user, 120)  # the deposit's points are spent
    r = _reverse(api, admin, deposit["id"])
    assert (r.status_code, error_code(r)) == (409, "insufficient_points"), r.text
    withdrawal = _withdraw(api, user, 10)["transaction"]
    reversal = _reverse(api, admin, withdrawal["id"]).json()["transaction"]
    r = _reverse(api, admin, withdrawal["id"])
    assert (r.status_code, error_code(r)) == (409, "already_reversed"), r.text
    r = _reverse(api, admin, reversal["id"])
    assert (r.status_code, error_code(r)) == (409, "not_reversible"), r.text
    assert api.balance(user) == 30


def test_reversals_answer_with_the_new_transaction_once_per_key(
        api: Api, admin: dict[str, str]) -> None:
    user = api.user()
    withdrawal = _withdraw(api, user, 40)["transaction"]
    key = {"Idempotency-Key": f"rev-{user.user_id}"}
    r = _reverse(api, {**admin, **key}, withdrawal["id"])
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["balance"] == 100
    assert {k: body["transaction"][k] for k in ("kind", "amount", "reverses", "balance_after")
            } == {"kind": "reversal", "amount": 40, "reverses": withdrawal["id"],
                  "balance_after": 100}
    again = _reverse(api, {**admin, **key}, withdrawal["id"])
    assert (again.status_code, again.json()) == (201, body)
    items = history(api, user.auth)
    assert [(i["kind"], i["reverses"]) for i in items[:2]] == [
        ("reversal", withdrawal["id"]), ("withdrawal", None)]
    assert sum(i["amount"] if i["kind"] in ("deposit", "reversal") else -i["amount"]
               for i in items) == api.balance(user)
    r = api.loy("GET", "/loyalty/admin/audit", headers=admin,
                params={"target": user.user_id})
    assert [(e["action"], e["outcome"]["reverses"]) for e in r.json()["items"]] == [
        ("reversal", withdrawal["id"])]


def test_expiring_points_are_listed_spent_first_and_never_shown_once_expired(
        api: Api, admin: dict[str, str]) -> None:
    user = api.user()
    soon, later = _at(timedelta(seconds=2)), _at(timedelta(days=30))
    assert _deposit(api, admin, user, 30, later).status_code == 201
    r = _deposit(api, admin, user, 20, soon)
    assert r.status_code == 201, r.text
    me = api.loy("GET", "/loyalty/me", headers=user.auth).json()
    assert me["balance"] == 150
    assert [e["amount"] for e in me["expiring"]] == [20, 30]
    view = api.loy("GET", f"/loyalty/admin/accounts/{user.user_id}", headers=admin).json()
    assert view["expiring"] == me["expiring"]
    _withdraw(api, user, 5)  # from the soonest lot
    assert [e["amount"] for e in api.loy("GET", "/loyalty/me", headers=user.auth).json()
            ["expiring"]] == [15, 30]
    expires = datetime.fromisoformat(soon.replace("Z", "+00:00"))
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.1)
    me = api.loy("GET", "/loyalty/me", headers=user.auth).json()
    assert me["balance"] == 130  # at once: no sweep needed
    assert [e["amount"] for e in me["expiring"]] == [30]
    expiry = history(api, user.auth)[0]
    assert {k: expiry[k] for k in ("kind", "amount", "comment", "balance_after")} == {
        "kind": "expiry", "amount": 15, "comment": "expired", "balance_after": 130}
    r = _reverse(api, admin, expiry["id"])
    assert (r.status_code, error_code(r)) == (409, "not_reversible"), r.text
    # The original API keeps its exact shape.
    r = api.loy("GET", f"/loyalty/{user.user_id}", headers=user.auth)
    assert r.json() == {"status": "Success", "uuid": user.user_id, "balance": 130}


def test_a_frozen_account_refuses_reversals(api: Api, admin: dict[str, str]) -> None:
    user = api.user()
    withdrawal = _withdraw(api, user, 10)["transaction"]
    r = api.sso("DELETE", "/auth/me", headers=user.auth, json={"password": PASSWORD})
    assert r.status_code == 200, r.text

    def frozen() -> bool:
        view = api.loy("GET", f"/loyalty/admin/accounts/{user.user_id}", headers=admin)
        return bool(view.json()["state"] == "frozen")

    assert poll(frozen, PROPAGATION), "loyalty did not freeze the account"
    r = _reverse(api, admin, withdrawal["id"])
    assert (r.status_code, error_code(r)) == (409, "account_frozen"), r.text
