"""sso and loyalty as separate processes talking through a real Kafka broker."""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.kafka import KafkaBroker
from devstack.postgres import PostgresCluster, scratch_dir
from devstack.registry import Registry
from tests.e2e.stack import Stack, register_many, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def broker() -> Iterator[KafkaBroker]:
    """A Kafka broker of our own (these tests stop and restart it)."""
    base = scratch_dir("authloyalty-kafka-")
    kafka = KafkaBroker(base)
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def stack(tmp_path: Path, pg_cluster: PostgresCluster, broker: KafkaBroker,
          schema_registry: Registry) -> Iterator[Stack]:
    deployment = Stack(tmp_path / "stack", pg_cluster, broker, registry=schema_registry)
    try:
        yield deployment
    finally:
        deployment.stop_all()


def test_registration_reaches_a_separate_loyalty_process(stack: Stack) -> None:
    stack.write_config()
    stack.start("sso")
    stack.start("loyalty")
    with httpx.Client(timeout=30) as client:
        reg = client.post(f"{stack.sso}/auth/registration",
                          json={"email": "sep@example.com", "password": "long enough"}).json()
        auth = {"Authorization": f"Bearer {reg['access_token']}"}

        def bonus() -> bool:
            r = client.get(f"{stack.loyalty}/loyalty/me", headers=auth)
            return r.status_code == 200 and r.json()["balance"] == 100

        assert wait_for(bonus, 15), stack.services["loyalty"].output()[-3000:]
        # Logout in sso → loyalty refuses the session within a second, with no call to sso.
        assert client.post(f"{stack.sso}/auth/logout",
                           json={"token": reg["access_token"]}).status_code == 200
        started = time.monotonic()
        assert wait_for(lambda: client.get(f"{stack.loyalty}/loyalty/me",
                                           headers=auth).status_code == 401, 1.0, 0.02)
        assert time.monotonic() - started <= 1.0
        metrics = client.get(f"{stack.sso}/metrics").text
        assert 'authloyalty_outbox_publish_total{outcome="success",service="sso"}' in metrics
        assert "authloyalty_outbox_pending" in metrics
        assert "authloyalty_outbox_oldest_age_seconds" in metrics
        # The consumer reports its lag per partition every few seconds.
        assert wait_for(lambda: 'authloyalty_consumer_lag{group="loyalty"' in client.get(
            f"{stack.loyalty}/metrics").text, 20)


def test_broker_outage_loses_nothing_and_duplicates_nothing(
        stack: Stack, broker: KafkaBroker) -> None:
    stack.write_config()
    stack.start("sso")
    stack.start("loyalty")
    broker.stop()
    try:
        users = register_many(stack.sso, 200, "outage")  # the outbox holds the events
        pending = stack.sql("SELECT count(*) FROM sso.outbox WHERE status <> 'successful'")
        assert int(pending) >= 190
    finally:
        broker.start()
    assert wait_for(lambda: len(stack.bonus_counts()) >= 200, 90, 0.5), \
        stack.services["sso"].output()[-3000:]
    counts = stack.bonus_counts()
    assert set(counts) == set(users)
    assert set(counts.values()) == {1}
    failed = stack.sql("SELECT count(*) FROM sso.outbox WHERE attempts > 1")
    assert int(failed) > 0  # deliveries did fail and were retried


def test_loyalty_killed_repeatedly_still_credits_each_user_once(stack: Stack) -> None:
    # Offsets are committed every 2 s, so a SIGKILL nearly always lands after the database
    # commit of some records and before the commit of their offsets. Graceful stops (SIGTERM)
    # alternate with the kills: they must commit what was processed and lose nothing either.
    stack.write_config(commit_interval_ms=2000)
    stack.start("sso")
    loyalty = stack.start("loyalty")
    users: list[str] = []
    for burst in range(4):
        users += register_many(stack.sso, 40, f"kill{burst}")
        time.sleep(random.uniform(0.3, 1.0))
        if burst % 2 == 0:
            loyalty.kill()
        else:
            assert loyalty.stop() == 0
        loyalty.start()
    assert wait_for(lambda: len(stack.bonus_counts()) >= len(users), 60, 0.5)
    counts = stack.bonus_counts()
    assert set(counts) == set(users)
    assert set(counts.values()) == {1}
    duplicates = stack.sql("SELECT count(*) FROM loyalty.inbox")
    assert int(duplicates) == len(users)


def test_relay_killed_mid_batch_loses_no_event(stack: Stack) -> None:
    stack.write_config()
    stack.start("sso", "--no-relay")
    stack.start("loyalty")
    users = register_many(stack.sso, 150, "relay")
    relay = stack.start("relay")
    for _ in range(3):
        time.sleep(random.uniform(0.05, 0.3))
        relay.kill()
        relay.start()
    assert wait_for(lambda: len(stack.bonus_counts()) >= len(users), 60, 0.5)
    counts = stack.bonus_counts()
    assert set(counts) == set(users)
    assert set(counts.values()) == {1}
    assert wait_for(lambda: stack.sql(
        "SELECT count(*) FROM sso.outbox WHERE status <> 'successful'") == "0", 20)


def test_registry_outage_keeps_registrations_answering_and_loses_nothing(
        tmp_path: Path, pg_cluster: PostgresCluster, broker: KafkaBroker) -> None:
    # A registry of this test's own, down before sso ever reached it: the relay cannot encode
    # a single event until it is back.
    registry = Registry(tmp_path / "registry")
    stack = Stack(tmp_path / "stack", pg_cluster, broker, registry=registry)
    try:
        stack.write_config()
        sso = stack.start("sso")
        stack.start("loyalty")
        users = register_many(stack.sso, 60, "registry-down")  # 201 each (asserted inside)
        assert wait_for(lambda: int(stack.sql(
            "SELECT count(*) FROM sso.outbox WHERE attempts > 1 "
            "AND last_error LIKE 'encode:%'")) > 0, 20)
        assert stack.sql("SELECT count(*) FROM sso.outbox WHERE status = 'successful'") == "0"
        assert stack.bonus_counts() == {}
        assert httpx.get(f"{stack.sso}/auth/healthz", timeout=5).status_code == 200
        assert sso.process is not None
        assert sso.process.poll() is None  # the relay backs off; the process lives on
        registry.start()
        assert wait_for(lambda: len(stack.bonus_counts()) >= len(users), 60, 0.5), \
            sso.output()[-3000:]
        counts = stack.bonus_counts()
        assert set(counts) == set(users)
        assert set(counts.values()) == {1}
        assert wait_for(lambda: stack.sql(
            "SELECT count(*) FROM sso.outbox WHERE status <> 'successful'") == "0", 20)
    finally:
        stack.stop_all()
        registry.close()
