"""``authloyalty admin create`` against the data dir of a running server."""

from __future__ import annotations

import jwt
import pytest

from tests.e2e.e2e_helpers import PASSWORD, Api, Server, poll, run_cli, unique_email

pytestmark = pytest.mark.e2e


def test_admin_create_while_the_server_runs(api: Api, server: Server) -> None:
    email = unique_email("cli-admin")
    result = run_cli("admin", "create", "--email", email, "--password", PASSWORD,
                     "--data-dir", str(server.data_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"created admin {email}" in result.stdout
    assert "Traceback" not in result.stderr

    admin = api.login(email, PASSWORD)
    r = api.sso("GET", "/auth/info", headers=admin.auth)
    assert r.status_code == 200, r.text
    assert r.json()["is_admin"] is True
    assert r.json()["email"] == email
    claims = jwt.decode(admin.access, options={"verify_signature": False})
    assert claims["admin"] is True
    # The new admin's own account is open, and the admin API works for them.
    account = api.wait_account(admin.access)
    assert account["uuid"] == admin.user_id
    user = api.user()
    r = api.loy("GET", f"/loyalty/admin/accounts/{user.user_id}", headers=admin.auth)
    assert r.status_code == 200, r.text
    assert r.json()["balance"] == 100


def test_admin_create_promotes_an_existing_user(api: Api, server: Server) -> None:
    user = api.user()
    r = api.loy("GET", f"/loyalty/admin/accounts/{user.user_id}", headers=user.auth)
    assert r.status_code == 403, r.text
    result = run_cli("admin", "create", "--email", user.email.upper(), "--password",
                     "some other password", "--data-dir", str(server.data_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "promoted admin" in result.stdout
    assert user.user_id in result.stdout
    # Same user, same password; a new login carries the admin flag.
    promoted = api.login(user.email, user.password)
    assert promoted.user_id == user.user_id
    r = api.sso("GET", "/auth/info", headers=promoted.auth)
    assert r.json()["is_admin"] is True
    r = api.loy("GET", f"/loyalty/admin/accounts/{user.user_id}", headers=promoted.auth)
    assert r.status_code == 200, r.text
    # Promotion did not open a second account or pay a second bonus.
    assert r.json()["balance"] == 100


def test_admin_create_refuses_a_short_password(server: Server) -> None:
    result = run_cli("admin", "create", "--email", unique_email("weak"), "--password", "short",
                     "--data-dir", str(server.data_dir))
    assert result.returncode != 0
    assert "password" in result.stderr
    assert "Traceback" not in result.stderr


def test_admin_create_refuses_an_invalid_email(api: Api, server: Server) -> None:
    """An admin whose email /auth/login refuses as invalid could never log in."""
    result = run_cli("admin", "create", "--email", "not-an-email", "--password", PASSWORD,
                     "--data-dir", str(server.data_dir))
    r = api.sso("POST", "/auth/login", json={"email": "not-an-email", "password": PASSWORD})
    assert r.status_code == 422, r.text  # the HTTP API considers this email invalid
    assert result.returncode != 0, (
        "admin create accepted an email the HTTP API rejects: " + result.stdout)
    assert "email" in result.stderr
    assert "Traceback" not in result.stderr


def test_admin_revoke_sessions_is_enforced_by_the_running_server(
        server: Server, api: Api) -> None:
    account = api.user()
    result = run_cli("admin", "revoke-sessions", "--email", account.email, "--data-dir",
                     str(server.data_dir))
    assert result.returncode == 0, result.stderr
    assert "ended 1 session(s)" in result.stdout
    # The running server's relay announces it; loyalty refuses the session from memory.
    assert poll(lambda: api.loy("GET", "/loyalty/me", headers=account.auth).status_code == 401,
                2.0)
    assert api.sso("GET", "/auth/info", headers=account.auth).status_code == 401
