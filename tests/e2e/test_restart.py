"""Stop with SIGTERM, start again on the same data dir: nothing is lost or forgotten."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.e2e_helpers import PASSWORD, Api, Server, bearer, error_code, no_5xx, run_cli

pytestmark = pytest.mark.e2e

CLI_ADMIN = ("cli-admin@example.com", "cli admin password")
ENV_ADMIN = ("env-admin@example.com", "env admin password")


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data", env={"AUTHLOYALTY_ADMIN_EMAIL": ENV_ADMIN[0],
                                         "AUTHLOYALTY_ADMIN_PASSWORD": ENV_ADMIN[1]})
    try:
        yield srv
    finally:
        if srv.process is not None:
            srv.stop()


def _jwks_kids(api: Api) -> set[str]:
    r = api.sso("GET", "/.well-known/jwks.json")
    assert r.status_code == 200, r.text
    return {k["kid"] for k in r.json()["keys"]}


def test_restart_keeps_everything(own_server: Server) -> None:
    srv = own_server
    # An admin created with the CLI before the first start (on a fresh data dir).
    result = run_cli("admin", "create", "--email", CLI_ADMIN[0], "--password", CLI_ADMIN[1],
                     "--data-dir", str(srv.data_dir), "--init")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "created admin" in result.stdout
    srv.start()
    with httpx.Client(timeout=30.0, event_hooks={"response": [no_5xx]}) as http:
        api = Api(srv, http)
        for email, password in (CLI_ADMIN, ENV_ADMIN):
            admin = api.login(email, password)
            r = api.sso("GET", "/auth/info", headers=admin.auth)
            assert r.status_code == 200, r.text
            assert r.json()["is_admin"] is True, email
        assert api.wait_account(admin.access)["balance"] == 100

        user = api.user()
        key = {"Idempotency-Key": f"restart-{uuid.uuid4()}"}
        body = {"amount": 10, "comment": "before restart"}
        first = api.loy("POST", "/loyalty/me/withdrawals", headers={**user.auth, **key},
                        json=body)
        assert first.status_code == 201, first.text
        logged_out = api.login(user.email, user.password)
        r = api.sso("POST", "/auth/logout", json={"token": logged_out.refresh})
        assert r.status_code == 200, r.text
        alive = api.login(user.email, user.password)
        kids = _jwks_kids(api)
        # Registered right before the stop: its welcome event must not be lost.
        late = api.register()

        assert srv.stop() == 0, srv.output()
        srv.start()

        assert _jwks_kids(api) == kids
        # Logging in works, the balance is the same.
        again = api.login(user.email, PASSWORD)
        assert again.user_id == user.user_id
        assert api.balance(again) == 90
        # The session logged out before the restart stays refused, at once.
        for token in (logged_out.access,):
            r = api.loy("GET", "/loyalty/me", headers=bearer(token))
            assert r.status_code == 401, r.text
            assert error_code(r) == "invalid_token"
            r = api.sso("GET", "/auth/info", headers=bearer(token))
            assert r.status_code == 401, r.text
        r = api.sso("POST", "/auth/refresh", json={"token": logged_out.refresh})
        assert r.status_code == 401, r.text
        # A session that was not ended survives the restart.
        assert api.balance(alive) == 90
        r = api.sso("POST", "/auth/refresh", json={"token": alive.refresh})
        assert r.status_code == 200, r.text
        # The idempotency key is remembered across the restart.
        replay = api.loy("POST", "/loyalty/me/withdrawals", headers={**again.auth, **key},
                         json=body)
        assert replay.status_code == 201, replay.text
        assert replay.content == first.content
        assert api.balance(again) == 90
        # The late registration got its bonus, exactly once.
        assert api.wait_account(late.access)["balance"] == 100
        r = api.loy("GET", "/loyalty/me/transactions", headers=late.auth)
        assert len(r.json()["items"]) == 1

    assert srv.stop() == 0, srv.output()
