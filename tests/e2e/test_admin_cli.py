"""``authloyalty admin create`` against the data dir of a running server, and without one."""

from __future__ import annotations

from pathlib import Path

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
    assert result.stdout == (f"promoted {user.email.upper()} (user_id {user.user_id}) to admin; "
                             "password unchanged (use --reset-password to set it)\n")
    # Same user, same password (not the one given); a new login carries the admin flag.
    r = api.sso("POST", "/auth/login",
                json={"email": user.email, "password": "some other password"})
    assert r.status_code == 401, r.text
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


def test_admin_create_twice_says_already_an_admin(api: Api, server: Server) -> None:
    user = api.user()
    args = ("admin", "create", "--email", user.email, "--password", "another password",
            "--data-dir", str(server.data_dir))
    assert run_cli(*args).returncode == 0
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert again.stdout == (f"{user.email} (user_id {user.user_id}) is already an admin; "
                            "password unchanged (use --reset-password to set it)\n")
    assert api.login(user.email, user.password).user_id == user.user_id


def test_admin_create_reset_password_sets_it(api: Api, server: Server) -> None:
    user = api.user()
    new_password = "a brand new password"
    result = run_cli("admin", "create", "--email", user.email, "--password", new_password,
                     "--reset-password", "--data-dir", str(server.data_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == (f"promoted {user.email} (user_id {user.user_id}) to admin; "
                             "password reset\n")
    r = api.sso("POST", "/auth/login", json={"email": user.email, "password": user.password})
    assert r.status_code == 401, r.text
    admin = api.login(user.email, new_password)
    r = api.sso("GET", "/auth/info", headers=admin.auth)
    assert r.json()["is_admin"] is True
    # A reset still obeys the password rules.
    short = run_cli("admin", "create", "--email", user.email, "--password", "short",
                    "--reset-password", "--data-dir", str(server.data_dir))
    assert short.returncode != 0
    assert short.stderr == "error: password: must be at least 8 characters\n"
    api.login(user.email, new_password)


@pytest.mark.parametrize("command", ["create", "revoke-sessions"])
def test_admin_refuses_a_data_dir_without_data(tmp_path: Path, command: str) -> None:
    """A mistyped --data-dir (or none, in the wrong directory) gets no empty database."""
    data_dir = tmp_path / "vra"
    extra = ["--password", PASSWORD] if command == "create" else []
    result = run_cli("admin", command, "--email", "boss@example.com", *extra,
                     "--data-dir", str(data_dir))
    assert result.returncode != 0
    init = " (or pass --init to create one there)" if command == "create" else ""
    assert result.stdout + result.stderr == (
        f"error: no authloyalty data in {data_dir}: pass the data dir of your server with "
        f"--data-dir{init}\n")
    assert not data_dir.exists()


def test_admin_create_init_creates_the_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    result = run_cli("admin", "create", "--email", "boss@example.com", "--password", PASSWORD,
                     "--data-dir", str(data_dir), "--init")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("created admin boss@example.com (user_id ")
    assert (data_dir / "sso.db").is_file()
