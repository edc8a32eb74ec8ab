"""The purge of a deleted account's personal data once the retention window has passed, on a
server of its own whose window is a few seconds long."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from authloyalty.rpc.sso import sso_pb2, sso_pb2_grpc
from tests.e2e.e2e_helpers import (
    PASSWORD,
    Account,
    Api,
    admin_server,
    error_code,
    poll,
)

pytestmark = pytest.mark.e2e

RETENTION_SECONDS = 5.0
PURGE_DEADLINE = 30.0  # generous: the window plus a few maintenance rounds on a loaded machine


@pytest.fixture
def short(tmp_path: Path, http: httpx.Client) -> Iterator[tuple[Api, Account]]:
    """A server keeping deleted users for RETENTION_SECONDS, and its admin logged in."""
    with admin_server(tmp_path / "data", http, "purge-admin", env={
            "AUTHLOYALTY_SSO__DELETION_RETENTION_DAYS": repr(RETENTION_SECONDS / 86400),
            "AUTHLOYALTY_MAINTENANCE_INTERVAL_SECONDS": "0.2"}) as lone:
        yield lone


def _details(api: Api, admin: Account, user_id: str) -> dict[str, Any]:
    r = api.sso("GET", f"/auth/admin/users/{user_id}", headers=admin.auth)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _listed(api: Api, admin: Account, query: str) -> list[dict[str, Any]]:
    r = api.sso("GET", "/auth/admin/users", headers=admin.auth, params={"query": query})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def _get_user(api: Api, admin: Account, user_id: str) -> sso_pb2.GetUserResponse:
    with grpc.insecure_channel(f"127.0.0.1:{api.srv.grpc_port}") as channel:
        reply: sso_pb2.GetUserResponse = sso_pb2_grpc.AuthStub(channel).GetUser(
            sso_pb2.GetUserRequest(user_id=user_id),
            metadata=(("authorization", f"Bearer {admin.access}"),), timeout=10)
    return reply


def test_a_deleted_account_is_purged_after_the_window_and_its_email_is_free_again(
        short: tuple[Api, Account]) -> None:
    api, admin = short
    user = api.user(name="Ann Purge", birthday="1990-05-17")
    balance = api.balance(user)
    r = api.sso("DELETE", "/auth/me", headers=user.auth, json={"password": PASSWORD})
    assert r.status_code == 200, r.text
    # Within the window the account is only deleted: the profile and the email stay.
    r = api.sso("POST", "/auth/registration", json={"email": user.email, "password": PASSWORD})
    assert r.status_code == 409, r.text
    assert _get_user(api, admin, user.user_id).deleted is True

    assert poll(lambda: _details(api, admin, user.user_id)["purged_at"] is not None,
                PURGE_DEADLINE), "the deleted account was not purged"
    details = _details(api, admin, user.user_id)
    assert (details["email"], details["name"], details["sessions"]) == (None, None, 0)
    assert details["deleted_at"] is not None
    reply = _get_user(api, admin, user.user_id)
    assert (reply.user_id, reply.email, reply.name, reply.birthday, reply.deleted) == (
        user.user_id, "", "", "", True)

    r = api.sso("POST", f"/auth/admin/users/{user.user_id}/restore", headers=admin.auth)
    assert r.status_code == 410, r.text
    assert error_code(r) == "user_purged"
    r = api.sso("POST", "/auth/login", json={"email": user.email, "password": PASSWORD})
    assert r.status_code == 401, r.text
    assert error_code(r) == "invalid_credentials"
    assert _listed(api, admin, user.email) == []

    # The email registers again, as a new user; the old password does not open it.
    newcomer = api.register(user.email.upper(), "a brand new password")
    assert newcomer.user_id != user.user_id
    r = api.sso("POST", "/auth/login", json={"email": user.email, "password": PASSWORD})
    assert r.status_code == 401, r.text
    assert [i["user_id"] for i in _listed(api, admin, user.email)] == [newcomer.user_id]
    # The ledger keeps the purged user's points under the same id.
    r = api.loy("GET", f"/loyalty/admin/accounts/{user.user_id}", headers=admin.auth)
    assert r.status_code == 200, r.text
    assert r.json()["balance"] == balance

    # Nothing personal was logged by the purge.
    output = api.srv.output()
    assert "purged the personal data of 1 deleted user" in output
    assert user.email not in output
    assert "Ann Purge" not in output
