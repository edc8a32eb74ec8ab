"""Alerting on the local production topology: its Prometheus loads deploy/prometheus/alerts.yml,
scrapes every service, Patroni member and etcd, and pages when events stop reaching Kafka.

The outage test stops every Kafka broker, keeps registering users through the gateway (each
answered 201: the outbox holds their events) until OutboxEventsStuck fires in Prometheus, then
starts the brokers again: every user gets exactly one welcome bonus, the alert stops firing and
the stack is healthy again for the modules that share it.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import httpx
import pytest
import yaml

from devstack.prometheus import RULES_SOURCE
from tests.e2e.e2e_helpers import PASSWORD, bearer, unique_email
from tests.e2e.full_stack import StackHandle, devstack

pytestmark = pytest.mark.e2e

WELCOME_BONUS = 100
OUTBOX_ALERT = "OutboxEventsStuck"
# The rule: oldest event older than 60 s for 1 min; plus scrape and evaluation (5 s each).
FIRING_TIMEOUT = 300.0
BONUS_TIMEOUT = 180.0
RESOLVE_TIMEOUT = 180.0


def _prometheus(stack: StackHandle) -> str:
    return str(stack.state["endpoints"]["prometheus"])


def _api(stack: StackHandle, path: str) -> Any:
    r = httpx.get(f"{_prometheus(stack)}/api/v1/{path}", timeout=10.0)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def _alert_states(stack: StackHandle, name: str) -> list[str]:
    return [a["state"] for a in _api(stack, "alerts")["alerts"]
            if a["labels"]["alertname"] == name]


def test_status_json_summarises_the_endpoints_of_the_default_topology(
        full_stack: StackHandle) -> None:
    endpoints = full_stack.refresh().state["endpoints"]
    assert endpoints["gateway"] == full_stack.gateway
    assert endpoints["ca"] == str(full_stack.ca)
    assert endpoints["sso"] == [full_stack.component(n)["urls"]["http"]
                                for n in full_stack.names() if n.startswith("sso-")]
    assert endpoints["loyalty"]
    assert endpoints["grpc"]["gateway_tls"]
    assert endpoints["grpc"]["gateway_h2c"]
    assert endpoints["kafka_bootstrap"]
    assert endpoints["prometheus"].startswith("http://127.0.0.1:")
    assert endpoints["postgres"]["write"]["sso"].startswith("postgresql://")
    assert endpoints["postgres"]["read"]["loyalty"].startswith("postgresql://")
    assert set(endpoints["pids"]) == set(full_stack.names())
    assert all(isinstance(pid, int) and pid > 0 for pid in endpoints["pids"].values())
    # Every URL answers: each sso and loyalty replica, and Prometheus.
    for url in [*endpoints["sso"], *endpoints["loyalty"]]:
        assert httpx.get(f"{url}/metrics", timeout=5.0).status_code == 200, url
    assert len(endpoints["patroni"]) == 3, endpoints["patroni"]
    for member, url in endpoints["patroni"].items():
        assert httpx.get(f"{url}/metrics", timeout=5.0).status_code == 200, member


def test_prometheus_loads_the_repository_rules_and_scrapes_every_target(
        full_stack: StackHandle) -> None:
    wanted = {rule["alert"] for group in yaml.safe_load(RULES_SOURCE.read_text())["groups"]
              for rule in group["rules"] if "alert" in rule}
    loaded = {rule["name"] for group in _api(full_stack, "rules")["groups"]
              for rule in group["rules"] if rule["type"] == "alerting"}
    assert loaded == wanted
    names = full_stack.names()
    expected_jobs = {"sso", "loyalty", "prometheus"}
    expected_jobs |= {"patroni"} if any(n.startswith("patroni-") for n in names) else set()
    expected_jobs |= {"etcd"} if "etcd" in names else set()
    deadline = time.monotonic() + 60
    while True:
        targets = _api(full_stack, "targets")["activeTargets"]
        up = {t["labels"]["job"] for t in targets if t["health"] == "up"}
        if expected_jobs <= up or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert expected_jobs <= up, [(t["labels"], t["health"], t.get("lastError"))
                                 for t in targets]
    # Only loyalty replicas say whether they have read every revocation (sso has none to read).
    series = _api(full_stack, "query?query=authloyalty_revocations_complete")["result"]
    assert {s["metric"]["job"] for s in series} == {"loyalty"}, series


def _register(http: httpx.Client) -> str:
    r = http.post("/auth/registration",
                  json={"email": unique_email("outage"), "password": PASSWORD})
    assert r.status_code == 201, r.text
    return str(r.json()["access_token"])


def _bonuses(http: httpx.Client, token: str) -> list[dict[str, Any]] | None:
    """The welcome-bonus entries of the user's history, once the account exists."""
    me = http.get("/loyalty/me", headers=bearer(token))
    if me.status_code != 200:
        return None
    r = http.get("/loyalty/me/transactions?limit=100", headers=bearer(token))
    if r.status_code != 200:
        return None
    assert me.json()["balance"] == WELCOME_BONUS, me.text
    return [t for t in r.json()["items"]
            if t["kind"] == "deposit" and t["comment"] == "registration"]


@pytest.mark.timeout(FIRING_TIMEOUT + BONUS_TIMEOUT + RESOLVE_TIMEOUT + 300)
def test_events_stuck_in_the_outbox_page_and_drain_when_kafka_returns(
        full_stack: StackHandle) -> None:
    stack = full_stack
    stack.wait_healthy()
    assert "firing" not in _alert_states(stack, OUTBOX_ALERT)
    tokens: list[str] = []
    stopped = devstack("stop", "kafka", "--dir", str(stack.dir), timeout=180)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    outage = time.monotonic()
    try:
        with stack.client() as http:
            deadline = outage + FIRING_TIMEOUT
            while "firing" not in _alert_states(stack, OUTBOX_ALERT):
                assert time.monotonic() < deadline, (
                    f"{OUTBOX_ALERT} not firing {FIRING_TIMEOUT:.0f} s after the brokers "
                    f"stopped: {_api(stack, 'alerts')}")
                tokens.append(_register(http))
                time.sleep(1.0)
        fired_after = time.monotonic() - outage
    finally:
        restarting = time.monotonic()
        started = devstack("start", "kafka", "--dir", str(stack.dir), timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    back = time.monotonic()
    print(f"{OUTBOX_ALERT} firing {fired_after:.0f} s after the brokers stopped; "
          f"{len(tokens)} users registered meanwhile; brokers ready again in "
          f"{back - restarting:.0f} s", file=sys.stderr)

    with stack.client() as http:
        deadline = time.monotonic() + BONUS_TIMEOUT
        waiting = list(tokens)
        while waiting and time.monotonic() < deadline:
            for token in list(waiting):
                found = _bonuses(http, token)
                if found is not None:
                    assert len(found) == 1, found
                    waiting.remove(token)
            time.sleep(1.0)
        assert not waiting, f"{len(waiting)} of {len(tokens)} users without their bonus"
        drained_after = time.monotonic() - back
        # Nothing arrives twice later on: each user still has exactly one bonus.
        for token in tokens:
            assert len(_bonuses(http, token) or []) == 1

    deadline = time.monotonic() + RESOLVE_TIMEOUT
    while "firing" in _alert_states(stack, OUTBOX_ALERT):
        assert time.monotonic() < deadline, f"{OUTBOX_ALERT} still firing: " \
                                            f"{_api(stack, 'alerts')}"
        time.sleep(2.0)
    print(f"every bonus there {drained_after:.0f} s after the brokers were ready; alert "
          f"resolved {time.monotonic() - back:.0f} s after", file=sys.stderr)
    stack.wait_healthy()
