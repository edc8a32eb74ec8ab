"""Separate processes: signing-key rotation without restarts, owner details over gRPC."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
import yaml

from devstack.kafka import KafkaBroker
from devstack.postgres import PostgresCluster
from devstack.registry import Registry
from tests.e2e.e2e_helpers import AUTHLOYALTY, free_port
from tests.e2e.stack import Stack, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(tmp_path: Path, pg_cluster: PostgresCluster, kafka_broker: KafkaBroker,
          schema_registry: Registry) -> Iterator[Stack]:
    deployment = Stack(tmp_path / "stack", pg_cluster, kafka_broker, registry=schema_registry)
    config = deployment.write_config()
    grpc_port = free_port()
    values = yaml.safe_load(config.read_text())
    values["sso"].update(grpc_port=grpc_port, keys_reload_seconds=0.5)
    values["loyalty"].update(sso_grpc_target=f"127.0.0.1:{grpc_port}",
                             jwks_min_refresh_seconds=0)
    config.write_text(yaml.safe_dump(values))
    try:
        yield deployment
    finally:
        deployment.stop_all()


def register(client: httpx.Client, stack: Stack, email: str) -> dict[str, str]:
    r = client.post(f"{stack.sso}/auth/registration",
                    json={"email": email, "password": "long enough", "name": "Rot"})
    assert r.status_code == 201, r.text
    reply: dict[str, str] = r.json()
    return reply


def test_rotation_needs_no_restart_and_old_tokens_keep_working(stack: Stack) -> None:
    stack.start("sso")
    stack.start("loyalty")
    keys = stack.root / "keys"
    with httpx.Client(timeout=30) as client:
        old = register(client, stack, "rot-old@example.com")
        old_auth = {"Authorization": f"Bearer {old['access_token']}"}
        assert wait_for(lambda: client.get(f"{stack.loyalty}/loyalty/me",
                                           headers=old_auth).status_code == 200, 15)
        old_kid = jwt.get_unverified_header(old["access_token"])["kid"]
        subprocess.run([AUTHLOYALTY, "keys", "generate", "--dir", str(keys)], check=True,
                       capture_output=True)

        def rotated() -> bool:
            kids = [k["kid"] for k in client.get(
                f"{stack.sso}/.well-known/jwks.json").json()["keys"]]
            return len(kids) == 2

        assert wait_for(rotated, 10)
        new = register(client, stack, "rot-new@example.com")
        assert jwt.get_unverified_header(new["access_token"])["kid"] != old_kid
        new_auth = {"Authorization": f"Bearer {new['access_token']}"}
        # loyalty learns the new key on first sight of its kid, without a restart...
        assert wait_for(lambda: client.get(f"{stack.loyalty}/loyalty/me",
                                           headers=new_auth).status_code == 200, 15)
        # ...and tokens of the old key still verify everywhere until they expire.
        assert client.get(f"{stack.loyalty}/loyalty/me", headers=old_auth).status_code == 200
        assert client.get(f"{stack.sso}/auth/info", headers=old_auth).status_code == 200
        # Retiring the old key: sso stops accepting its tokens once it rereads the directory.
        for path in sorted(keys.glob("*.pem"))[:1]:
            path.unlink()
        assert wait_for(lambda: client.get(f"{stack.sso}/auth/info",
                                           headers=old_auth).status_code == 401, 10)
        assert client.get(f"{stack.sso}/auth/info", headers=new_auth).status_code == 200


def test_admin_sees_the_owner_from_sso_and_the_balance_even_when_sso_is_down(
        stack: Stack) -> None:
    sso = stack.start("sso")
    stack.start("loyalty")
    admin_email = "owners-admin@example.com"
    subprocess.run([AUTHLOYALTY, "admin", "create", "--email", admin_email, "--password",
                    "admin password", "--config", str(stack.root / "config.yaml")],
                   check=True, capture_output=True)
    with httpx.Client(timeout=30) as client:
        user = register(client, stack, "owned@example.com")
        token = client.post(f"{stack.sso}/auth/login", json={
            "email": admin_email, "password": "admin password"}).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        url = f"{stack.loyalty}/loyalty/admin/accounts/{user['user_id']}"
        assert wait_for(lambda: client.get(url, headers=auth).status_code == 200, 15)
        body = client.get(url, headers=auth).json()
        assert body["owner_status"] == "ok"
        assert body["owner"]["email"] == "owned@example.com"
        assert body["owner"]["name"] == "Rot"
        assert body["balance"] == 100
        sso.kill()
        down = client.get(url, headers=auth)
        assert down.status_code == 200
        assert down.json()["balance"] == 100
        assert down.json()["owner"] is None
        assert down.json()["owner_status"] == "unavailable"
        assert down.elapsed.total_seconds() < 2.0
    shutil.rmtree(stack.root / "keys", ignore_errors=True)
