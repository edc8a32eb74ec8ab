"""A user's sessions, password and account, and user administration, with sso and loyalty as
separate processes on PostgreSQL and a real Kafka broker between them: what sso decides,
loyalty honours (session ends within 1 s, account deletions and restores within seconds)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient

from devstack.kafka import KafkaBroker
from devstack.postgres import PostgresCluster
from devstack.registry import Registry
from tests.e2e.e2e_helpers import (
    AUTHLOYALTY,
    BONUS_DEADLINE,
    Account,
    Api,
    bearer,
    error_code,
    poll,
    unique_email,
)
from tests.e2e.stack import Stack

pytestmark = pytest.mark.e2e

PROPAGATION = 1.0  # docs/contract.md: a session ended in sso is refused by loyalty within 1 s
ACCOUNT_PROPAGATION = 10.0  # deletion and restore reach loyalty within seconds
PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"
ADMIN_EMAIL = "kafka-admin@example.com"
ADMIN_PASSWORD = "kafka admin password"


@dataclass
class Deployment(Api):
    """The running stack, an HTTP client to it and its admin."""

    stack: Stack = field(kw_only=True)
    admin: Account = field(kw_only=True)

    def user(self, **extra: Any) -> Account:
        """A new user whose loyalty account (with the welcome bonus) is open."""
        account = self.register(unique_email("kafka"), PASSWORD, **extra)
        self.wait_account(account.access, BONUS_DEADLINE)
        return account

    def account_view(self, user_id: str) -> dict[str, Any]:
        """loyalty's admin view of an account."""
        r = self.loy("GET", f"/loyalty/admin/accounts/{user_id}", headers=self.admin.auth)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def current_session(self, user: Account) -> str:
        r = self.sso("GET", "/auth/sessions", headers=user.auth)
        assert r.status_code == 200, r.text
        session_id: str = next(s["id"] for s in r.json()["items"] if s["current"])
        return session_id

    def refused_by_loyalty_in_time(self, *accesses: str) -> None:
        """Each of ``accesses`` is refused by loyalty within :data:`PROPAGATION` of now (the
        moment sso answered), with no call to sso."""
        started = time.monotonic()
        waiting = list(accesses)

        def refused() -> bool:
            for token in list(waiting):
                r = self.loy("GET", "/loyalty/me", headers=bearer(token))
                assert r.status_code in (200, 401), r.text
                if r.status_code == 401:
                    assert error_code(r) == "invalid_token"
                    waiting.remove(token)
            return not waiting

        assert poll(refused, PROPAGATION), \
            f"loyalty still accepts an ended session:\n{self.logs()}"
        assert time.monotonic() - started <= PROPAGATION + 0.1

    def accepted(self, access: str) -> None:
        r = self.sso("GET", "/auth/info", headers=bearer(access))
        assert r.status_code == 200, r.text
        r = self.loy("GET", "/loyalty/me", headers=bearer(access))
        assert r.status_code == 200, r.text

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{service.output()[-2000:]}"
                         for name, service in self.stack.services.items())


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, pg_cluster: PostgresCluster,
               kafka_broker: KafkaBroker, schema_registry: Registry) -> Iterator[Deployment]:
    """sso and loyalty started once for the module, with an admin made by the CLI."""
    stack = Stack(tmp_path_factory.mktemp("accounts-over-kafka") / "stack", pg_cluster,
                  kafka_broker, registry=schema_registry)
    try:
        config = stack.write_config()
        stack.start("sso")
        stack.start("loyalty")
        subprocess.run([AUTHLOYALTY, "admin", "create", "--email", ADMIN_EMAIL, "--password",
                        ADMIN_PASSWORD, "--config", str(config)],
                       check=True, capture_output=True)
        with httpx.Client(timeout=30) as http:
            r = http.post(f"{stack.sso}/auth/login",
                          json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
            assert r.status_code == 200, r.text
            body = r.json()
            admin = Account(ADMIN_EMAIL, ADMIN_PASSWORD, body["user_id"],
                            body["access_token"], body["refresh_token"])
            # The admin's own account opens once the relay has delivered its registration.
            assert poll(lambda: http.get(f"{stack.loyalty}/loyalty/me",
                                         headers=admin.auth).status_code == 200,
                        BONUS_DEADLINE), stack.services["loyalty"].output()[-3000:]
            yield Deployment(stack, http, stack=stack, admin=admin)
    finally:
        stack.stop_all()
        pg_cluster.drop_database(stack.database)


def test_the_accounts_topic_exists_with_its_dead_letter_topic(deployment: Deployment) -> None:
    admin = AdminClient({"bootstrap.servers": deployment.stack.broker.bootstrap_servers})
    topics = admin.list_topics(timeout=10).topics
    topic = f"accounts-{deployment.stack.database}"
    assert topic in topics
    assert f"{topic}.dlq" in topics


def test_ended_sessions_are_honoured_by_loyalty_while_the_current_one_goes_on(
        deployment: Deployment) -> None:
    user = deployment.user()
    other = deployment.login(user.email, user.password)
    deployment.accepted(other.access)
    r = deployment.sso("DELETE", f"/auth/sessions/{deployment.current_session(other)}",
                       headers=user.auth)
    assert r.status_code == 200, r.text
    deployment.refused_by_loyalty_in_time(other.access)
    deployment.accepted(user.access)
    r = deployment.sso("POST", "/auth/refresh", json={"token": other.refresh})
    assert r.status_code == 401, r.text

    # Ending every other session keeps this one.
    others = [deployment.login(user.email, user.password) for _ in range(2)]
    r = deployment.sso("DELETE", "/auth/sessions", headers=user.auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "Success", "ended": 2}
    deployment.refused_by_loyalty_in_time(*(o.access for o in others))
    deployment.accepted(user.access)


def test_a_password_change_ends_the_old_sessions_at_loyalty_and_the_new_pair_works(
        deployment: Deployment) -> None:
    user = deployment.user()
    other = deployment.login(user.email, user.password)
    balance = deployment.balance(user)
    r = deployment.sso("POST", "/auth/password", headers=user.auth,
                       json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert r.status_code == 200, r.text
    deployment.refused_by_loyalty_in_time(user.access, other.access)
    fresh = Account(user.email, NEW_PASSWORD, user.user_id, r.json()["access_token"],
                 r.json()["refresh_token"])
    deployment.accepted(fresh.access)
    assert deployment.balance(fresh) == balance
    r = deployment.sso("POST", "/auth/refresh", json={"token": fresh.refresh})
    assert r.status_code == 200, r.text
    deployment.accepted(r.json()["access_token"])
    r = deployment.sso("POST", "/auth/login", json={"email": user.email, "password": PASSWORD})
    assert r.status_code == 401, r.text
    deployment.login(user.email, NEW_PASSWORD)


def _movements(deployment: Deployment, user_id: str) -> list[httpx.Response]:
    """An admin's deposit and withdrawal on the account, by both APIs."""
    auth, body = deployment.admin.auth, {"amount": 1, "comment": "while deleted"}
    return [
        deployment.loy("POST", f"/loyalty/admin/accounts/{user_id}/deposits", headers=auth,
                       json=body),
        deployment.loy("POST", f"/loyalty/admin/accounts/{user_id}/withdrawals", headers=auth,
                       json=body),
        deployment.loy("POST", "/loyalty", headers=auth,
                       json={"uuid": user_id, "operation": "d", "balance": 1, "comment": "x"}),
        deployment.loy("POST", "/loyalty", headers=auth,
                       json={"uuid": user_id, "operation": "w", "balance": 1, "comment": "x"}),
    ]


def test_deletion_freezes_the_account_at_loyalty_and_restore_brings_it_back(
        deployment: Deployment) -> None:
    user = deployment.user()
    r = deployment.loy("POST", "/loyalty/me/withdrawals", headers=user.auth,
                       json={"amount": 7, "comment": "before the deletion"})
    assert r.status_code == 201, r.text
    balance = deployment.balance(user)
    assert deployment.account_view(user.user_id)["state"] == "active"

    r = deployment.sso("DELETE", "/auth/me", headers=user.auth, json={"password": PASSWORD})
    assert r.status_code == 200, r.text
    deployment.refused_by_loyalty_in_time(user.access)
    assert poll(lambda: deployment.account_view(user.user_id)["state"] == "frozen",
                ACCOUNT_PROPAGATION), f"loyalty did not freeze the account:\n{deployment.logs()}"
    assert deployment.account_view(user.user_id)["balance"] == balance
    for answer in _movements(deployment, user.user_id):
        assert answer.status_code == 409, answer.text
        assert error_code(answer) == "account_frozen"
    r = deployment.sso("POST", "/auth/login", json={"email": user.email, "password": PASSWORD})
    assert r.status_code == 401, r.text

    r = deployment.sso("POST", f"/auth/admin/users/{user.user_id}/restore",
                       headers=deployment.admin.auth)
    assert r.status_code == 200, r.text
    assert poll(lambda: deployment.account_view(user.user_id)["state"] == "active",
                ACCOUNT_PROPAGATION), f"loyalty did not unfreeze the account:\n{deployment.logs()}"
    back = deployment.login(user.email, PASSWORD)
    assert back.user_id == user.user_id
    assert deployment.balance(back) == balance
    r = deployment.loy("POST", "/loyalty/me/withdrawals", headers=back.auth,
                       json={"amount": 1, "comment": "after the restore"})
    assert r.status_code == 201, r.text
    assert deployment.balance(back) == balance - 1


def test_a_restore_right_after_the_deletion_leaves_the_account_active(
        deployment: Deployment) -> None:
    # However the two events arrive, loyalty applies the restore: its version is the newer.
    user = deployment.user()
    r = deployment.sso("DELETE", "/auth/me", headers=user.auth, json={"password": PASSWORD})
    assert r.status_code == 200, r.text
    r = deployment.sso("POST", f"/auth/admin/users/{user.user_id}/restore",
                       headers=deployment.admin.auth)
    assert r.status_code == 200, r.text
    stack = deployment.stack
    events = stack.sql("SELECT event_id FROM sso.outbox WHERE event_key = "
                       f"'{user.user_id}' AND event_type IN ('user_deleted', 'user_restored')")
    assert len(events.split()) == 2, events
    quoted = ", ".join(f"'{event}'" for event in events.split())
    assert poll(lambda: stack.sql(
        f"SELECT count(*) FROM loyalty.inbox WHERE event_id IN ({quoted})") == "2",
        ACCOUNT_PROPAGATION), deployment.logs()
    assert deployment.account_view(user.user_id)["state"] == "active"
    back = deployment.login(user.email, PASSWORD)
    r = deployment.loy("POST", "/loyalty/me/withdrawals", headers=back.auth,
                       json={"amount": 1, "comment": "right after the restore"})
    assert r.status_code == 201, r.text


def _set_admin(deployment: Deployment, headers: dict[str, str], user_id: str,
               is_admin: bool) -> httpx.Response:
    return deployment.sso("PUT", f"/auth/admin/users/{user_id}/admin", headers=headers,
                          json={"is_admin": is_admin})


def test_revoking_the_admin_right_ends_the_sessions_at_loyalty_but_never_the_last_admins(
        deployment: Deployment) -> None:
    user = deployment.user()
    r = _set_admin(deployment, deployment.admin.auth, user.user_id, True)
    assert r.status_code == 200, r.text
    promoted = deployment.login(user.email, user.password)
    other = deployment.login(user.email, user.password)
    r = deployment.loy("POST", f"/loyalty/admin/accounts/{deployment.admin.user_id}/deposits",
                       headers=promoted.auth, json={"amount": 5, "comment": "by a new admin"})
    assert r.status_code == 201, r.text

    r = _set_admin(deployment, deployment.admin.auth, user.user_id, False)
    assert r.status_code == 200, r.text
    deployment.refused_by_loyalty_in_time(promoted.access, other.access)
    again = deployment.login(user.email, user.password)
    r = deployment.loy("POST", f"/loyalty/admin/accounts/{deployment.admin.user_id}/deposits",
                       headers=again.auth, json={"amount": 5, "comment": "no longer an admin"})
    assert r.status_code == 403, r.text

    # The module's admin is now the only one: it keeps the right, and its session.
    r = _set_admin(deployment, deployment.admin.auth, deployment.admin.user_id, False)
    assert r.status_code == 409, r.text
    assert error_code(r) == "last_admin"
    deployment.accepted(deployment.admin.access)


def test_admin_ending_a_users_sessions_is_honoured_by_loyalty(deployment: Deployment) -> None:
    user = deployment.user()
    other = deployment.login(user.email, user.password)
    r = deployment.sso("POST", f"/auth/admin/users/{user.user_id}/sessions/revoke",
                       headers=deployment.admin.auth)
    assert r.status_code == 200, r.text
    deployment.refused_by_loyalty_in_time(user.access, other.access)
    deployment.accepted(deployment.login(user.email, user.password).access)


def test_the_registry_holds_the_account_change_schema_with_the_backward_rule(
        deployment: Deployment) -> None:
    user = deployment.user()
    r = deployment.sso("DELETE", "/auth/me", headers=user.auth, json={"password": PASSWORD})
    assert r.status_code == 200, r.text
    assert poll(lambda: deployment.account_view(user.user_id)["state"] == "frozen",
                ACCOUNT_PROPAGATION), deployment.logs()
    registry = deployment.stack.registry
    assert registry is not None
    subject = f"accounts-{deployment.stack.database}-value"
    with SchemaRegistryClient({"url": registry.ccompat_url}) as client:
        assert subject in client.get_subjects()
        assert client.get_compatibility(subject) == "BACKWARD"
        latest = client.get_latest_version(subject)
        assert "AccountChanged" in str(latest.schema.schema_str)
