"""Logout is honoured by every loyalty replica within a second, while processes and brokers die.

All of these run on one shared three-broker cluster (``kafka_cluster``), topics replicated three
times, and leave every broker running when they end.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from devstack.kafka import KafkaCluster
from devstack.postgres import PostgresCluster
from devstack.registry import Registry
from tests.e2e.stack import Service, Stack, wait_for

pytestmark = pytest.mark.e2e

LOGOUT_DEADLINE = 1.0
CATCH_UP_BOUND = 5.0  # seconds of 503 a restarted replica may answer before it serves


@pytest.fixture
def stack(tmp_path: Path, pg_cluster: PostgresCluster, kafka_cluster: KafkaCluster,
          schema_registry: Registry) -> Iterator[Stack]:
    deployment = Stack(tmp_path / "stack", pg_cluster, kafka_cluster, registry=schema_registry)
    try:
        yield deployment
    finally:
        deployment.stop_all()


def _session(client: httpx.Client, stack: Stack, loyalty: str, name: str) -> dict[str, str]:
    """A registered user's bearer header, once the welcome bonus is visible at ``loyalty``."""
    r = client.post(f"{stack.sso}/auth/registration",
                    json={"email": f"{name}@example.com", "password": "long enough"})
    assert r.status_code == 201, r.text
    auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert wait_for(lambda: client.get(f"{loyalty}/loyalty/me", headers=auth).status_code
                    == 200, 20), stack.services["loyalty"].output()[-3000:]
    return auth


@dataclass
class FirstAnswers:
    """Polls ``GET /loyalty/me`` from before a replica starts until it refuses the session."""

    url: str
    auth: dict[str, str]
    answers: list[tuple[float, int, str]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=2.0) as client:
            while not self.done.is_set():
                try:
                    r = client.get(f"{self.url}/loyalty/me", headers=self.auth)
                except httpx.HTTPError:
                    time.sleep(0.005)  # not listening yet
                    continue
                code = r.json().get("code", "") if r.status_code != 200 else ""
                self.answers.append((time.monotonic(), r.status_code, code))
                if r.status_code not in (503,):
                    return
                time.sleep(0.005)


def _restart_watched(service: Service, url: str, auth: dict[str, str]) -> FirstAnswers:
    """Start ``service`` and record every answer it gives to ``auth`` until the first that is
    not a 503."""
    watcher = FirstAnswers(url, auth)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    launched = time.monotonic()
    service.launch()
    thread.join(60)
    watcher.done.set()
    assert watcher.answers, service.output()[-3000:]
    first, last = watcher.answers[0][0], watcher.answers[-1][0]
    print(f"replica answered {first - launched:.2f} s after launch; refused the session "
          f"{last - first:.3f} s after its first answer ({len(watcher.answers) - 1} x 503)",
          file=sys.stderr)
    return watcher


def test_restarted_loyalty_refuses_a_session_ended_while_it_was_down(stack: Stack) -> None:
    stack.write_config(replication_factor=3)
    stack.start("sso")
    loyalty = stack.start("loyalty")
    with httpx.Client(timeout=10) as client:
        auth = _session(client, stack, stack.loyalty, "killed-loyalty")
        loyalty.kill()
        token = auth["Authorization"].removeprefix("Bearer ")
        assert client.post(f"{stack.sso}/auth/logout", json={"token": token}).status_code == 200
        # The revocation is on the topic before the replica comes back: only the stream knows
        # it (the replica that would have stored it is the one that was down).
        assert wait_for(lambda: stack.sql(
            "SELECT count(*) FROM sso.outbox WHERE event_type = 'session_revoked' "
            "AND status <> 'successful'") == "0", 10)
        assert stack.sql("SELECT count(*) FROM loyalty.revoked_sessions") == "0"
    watcher = _restart_watched(loyalty, stack.loyalty, auth)
    *waiting, (at, status, code) = watcher.answers
    # Never a 200 for the ended session: 503 while catching up, then 401.
    assert (status, code) == (401, "invalid_token"), (watcher.answers, loyalty.output()[-3000:])
    assert {c for _, s, c in waiting} <= {"revocations_catching_up"}, watcher.answers
    # Caught up about a second after it first answered, not after a consumer-group timeout.
    assert at - watcher.answers[0][0] <= 2.0, watcher.answers
    assert httpx.get(f"{stack.loyalty}/loyalty/ready").status_code == 200


def _refused_after(urls: list[str], auth: dict[str, str], since: float) -> list[float]:
    """Seconds from ``since`` until each of ``urls`` first refuses ``auth`` with 401 (polled
    every 10 ms, in parallel; 503 while a replica catches up counts as not yet refused)."""
    found: list[float] = [float("inf")] * len(urls)

    def poll(index: int) -> None:
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() - since < 10.0:
                try:
                    if client.get(f"{urls[index]}/loyalty/me", headers=auth).status_code == 401:
                        found[index] = time.monotonic() - since
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.01)

    threads = [threading.Thread(target=poll, args=(i,), daemon=True) for i in range(len(urls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    return found


def test_every_logout_is_refused_by_every_replica_within_a_second_through_kills(
        stack: Stack, kafka_cluster: KafkaCluster) -> None:
    stack.write_config(replication_factor=3)
    sso = stack.start("sso")
    first = stack.start("loyalty")
    second, second_url = stack.start_loyalty_replica(2)
    replicas = [stack.loyalty, second_url]
    figures: dict[str, list[float]] = {}

    with httpx.Client(timeout=10) as client:
        sessions = []
        for i in range(9):
            r = client.post(f"{stack.sso}/auth/registration",
                            json={"email": f"faults-{i}@example.com", "password": "long enough"})
            assert r.status_code == 201, r.text
            sessions.append((r.json()["access_token"],
                             {"Authorization": f"Bearer {r.json()['access_token']}"}))

        def log_out(what: str, urls: list[str]) -> None:
            token, auth = sessions.pop()
            assert client.post(f"{stack.sso}/auth/logout",
                               json={"token": token}).status_code == 200
            figures.setdefault(what, []).extend(_refused_after(urls, auth, time.monotonic()))

        log_out("no fault", replicas)

        # A broker dies: revocations go on through a partition it does not replicate.
        kafka_cluster.kill_node(1)
        try:
            for _ in range(3):
                log_out("broker killed", replicas)
                time.sleep(0.3)
        finally:
            kafka_cluster.start_node(1)
        log_out("broker back", replicas)

        # sso dies (its relay with it) and comes back.
        sso.kill()
        sso.start()
        log_out("sso restarted", replicas)

        # A loyalty replica dies; a logout made meanwhile is refused by the survivor at once,
        # and by the restarted replica from its first answer on.
        second.kill()
        token, auth = sessions.pop()
        assert client.post(f"{stack.sso}/auth/logout", json={"token": token}).status_code == 200
        figures["loyalty killed (survivor)"] = _refused_after(replicas[:1], auth,
                                                              time.monotonic())
        watcher = _restart_watched(second, second_url, auth)
        *waiting, (at, status, _code) = watcher.answers
        # The guarantee: the first answer it serves (anything but 503) refuses the session.
        assert status == 401, watcher.answers
        assert {s for _, s, _ in waiting} <= {503}, watcher.answers
        # Catching up takes ~0.2 s on a quiet cluster; a broker still settling after the
        # earlier kill has been seen to stretch it to ~2 s (lookups retried), never to a 200.
        assert at - watcher.answers[0][0] <= CATCH_UP_BOUND, watcher.answers
        log_out("after loyalty restart", replicas)

    print(f"logout -> 401 per replica (s): {figures}", file=sys.stderr)
    late = {what: v for what, v in figures.items() if max(v) > LOGOUT_DEADLINE}
    assert not late, (late, first.output()[-2000:], second.output()[-2000:],
                      sso.output()[-2000:])
