"""The default topology (three Kafka brokers, the Schema Registry) when a broker dies or the
registry is down: registrations keep answering 201 through the gateway and every user gets the
welcome bonus exactly once. Runs on the shared full stack and leaves it healthy."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from uuid import uuid4

import httpx
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from tests.e2e.full_stack import StackHandle, devstack
from tests.e2e.stack import wait_for

pytestmark = pytest.mark.e2e

TOPICS = ("registration", "registration.dlq", "sessions", "sessions.dlq", "accounts",
          "accounts.dlq")


@dataclass
class Registrations:
    """Registers users through the gateway from a few threads until stopped."""

    stack: StackHandle
    prefix: str
    tokens: dict[str, str] = field(default_factory=dict)  # user id -> access token
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def register(self, client: httpx.Client) -> None:
        email = f"{self.prefix}-{uuid4().hex[:12]}@example.com"
        r = client.post("/auth/registration", json={"email": email, "password": "long enough"})
        if r.status_code != 201:
            self.failures.append(f"{r.status_code} {r.text[:200]}")
            return
        body = r.json()
        self.tokens[body["user_id"]] = body["access_token"]

    def run(self) -> None:
        with self.stack.client(timeout=30.0) as client:
            while not self.stop.is_set():
                try:
                    self.register(client)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    @classmethod
    def running(cls, stack: StackHandle, prefix: str, threads: int = 3
                ) -> tuple[Registrations, list[threading.Thread]]:
        load = cls(stack, prefix)
        workers = [threading.Thread(target=load.run, daemon=True) for _ in range(threads)]
        for worker in workers:
            worker.start()
        return load, workers


def stop_load(load: Registrations, workers: list[threading.Thread]) -> None:
    load.stop.set()
    for worker in workers:
        worker.join(60)


def welcome_bonuses(stack: StackHandle, token: str) -> int | None:
    """How many welcome bonuses the user sees in their history (None: no account yet)."""
    auth = {"Authorization": f"Bearer {token}"}
    with stack.client() as client:
        me = client.get("/loyalty/me", headers=auth)
        if me.status_code == 404:
            return None
        assert me.status_code == 200, me.text
        r = client.get("/loyalty/me/transactions", params={"limit": 50}, headers=auth)
    assert r.status_code == 200, r.text
    return sum(1 for tx in r.json()["items"] if tx["comment"] == "registration")


def assert_one_bonus_each(stack: StackHandle, tokens: dict[str, str], within: float) -> None:
    """Every user sees exactly one welcome bonus (waiting up to ``within`` for the last)."""
    deadline = time.monotonic() + within
    seen: dict[str, int | None] = dict.fromkeys(tokens)
    with ThreadPoolExecutor(4) as pool:
        while True:
            missing = [u for u, n in seen.items() if n is None]
            for user, count in zip(missing, pool.map(
                    lambda u: welcome_bonuses(stack, tokens[u]), missing), strict=True):
                seen[user] = count
            if all(n is not None for n in seen.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    late = [u for u, n in seen.items() if n is None]
    assert not late, f"{len(late)} of {len(tokens)} users never got their bonus\n{stack.logs()}"
    doubled = {u: n for u, n in seen.items() if n != 1}
    assert not doubled, f"users with other than one bonus: {doubled}"


@pytest.fixture
def stack(full_stack: StackHandle) -> Iterator[StackHandle]:
    """The shared stack, healthy before and after the test."""
    full_stack.wait_healthy()
    yield full_stack
    full_stack.wait_healthy()


def test_our_topics_are_replicated_three_times_with_two_in_sync(stack: StackHandle) -> None:
    brokers = [n for n in stack.names() if n.startswith("kafka-")]
    assert len(brokers) == 3
    bootstrap = stack.component(brokers[0])["urls"]["bootstrap"]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    metadata = admin.list_topics(timeout=10)
    for topic in TOPICS:
        assert topic in metadata.topics, sorted(metadata.topics)
        replicas = {len(p.replicas) for p in metadata.topics[topic].partitions.values()}
        # Revocations go to every partition and count once one takes them: their topic keeps
        # one broker out of each partition's replicas (platform/kafka.py).
        assert replicas == ({2} if topic == "sessions" else {3}), (topic, replicas)
    resources = [ConfigResource("topic", t) for t in TOPICS]
    for resource, future in admin.describe_configs(resources).items():
        assert future.result(10)["min.insync.replicas"].value == "2", resource


def test_a_broker_killed_under_registration_load_loses_and_doubles_no_bonus(
        stack: StackHandle) -> None:
    load, workers = Registrations.running(stack, "broker-kill")
    try:
        assert wait_for(lambda: len(load.tokens) >= 20, 30), load.failures
        victim = stack.component("kafka-2")
        os.kill(int(victim["pid"]), signal.SIGKILL)
        time.sleep(8)  # registrations go on while the cluster moves the partitions
        restarted = devstack("restart", "kafka-2", "--dir", str(stack.dir), timeout=180)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        time.sleep(3)
    finally:
        stop_load(load, workers)
    assert load.failures == []  # every registration answered 201, no 5xx, no broken connection
    assert len(load.tokens) >= 50
    assert_one_bonus_each(stack, load.tokens, within=60)
    assert stack.refresh().component("kafka-2")["pid"] != victim["pid"]


def test_registry_down_registrations_answer_and_bonuses_follow_once_it_is_back(
        stack: StackHandle) -> None:
    # The relays keep the schema ids they learnt in memory; restarted while the registry is
    # down they have none and can publish nothing until it is back.
    registry = stack.component("registry")
    assert registry["urls"]["ccompat"].endswith("/apis/ccompat/v7")
    stopped = devstack("stop", "registry", "--dir", str(stack.dir), timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    try:
        for name in [n for n in stack.names() if n.startswith("sso-")]:
            result = devstack("restart", name, "--dir", str(stack.dir), timeout=180)
            assert result.returncode == 0, result.stdout + result.stderr
        load = Registrations(stack, "registry-down")
        with stack.client(timeout=30.0) as client:
            for _ in range(40):
                load.register(client)
        assert load.failures == []
        time.sleep(2)
        assert all(welcome_bonuses(stack, t) is None for t in load.tokens.values())
    finally:
        started = devstack("start", "registry", "--dir", str(stack.dir), timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    assert_one_bonus_each(stack, load.tokens, within=90)
