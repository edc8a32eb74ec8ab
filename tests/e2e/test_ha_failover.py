"""PostgreSQL failover on the full stack: the Patroni leader dies (its Patroni and PostgreSQL
SIGKILLed at once) while customers register and withdraw through the gateway.

What a customer must see: nothing acknowledged is lost (every registered user logs in, every
acknowledged withdrawal is in the history, every balance is the sum of its history), no answer
other than 2xx/4xx or 503 (retry later), and the service back within 20 s. The old leader,
restarted, rejoins as a replica streaming from the new one.
"""

from __future__ import annotations

import sys
import time

import httpx
import pytest

from tests.e2e import ha_load
from tests.e2e.e2e_helpers import bearer, run_cli, unique_email
from tests.e2e.full_stack import StackHandle, devstack

MEMBERS = ("patroni-1", "patroni-2", "patroni-3")
# The promise of docs/operations.md: Patroni's ttl (10 s) plus promotion and HAProxy's switch.
BACK_WITHIN = 20.0
STEADY = 3.0  # load before the kill
AFTER = 8.0  # load after the service is back


def _admin(stack: StackHandle, client: httpx.Client) -> dict[str, str]:
    email, password = unique_email("ha-admin"), "admin password 1"
    created = run_cli("admin", "create", "--config", stack.component("sso-1")["config"],
                      "--email", email, "--password", password)
    assert created.returncode == 0, created.stdout + created.stderr
    r = client.post("/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return bearer(r.json()["access_token"])


def test_leader_killed_under_load(full_stack: StackHandle) -> None:
    stack = full_stack
    assert set(MEMBERS) <= set(stack.names()), "the default stack runs PostgreSQL under Patroni"
    rest = [stack.component(m)["urls"]["rest"] for m in MEMBERS]
    with stack.client(timeout=30.0) as client:
        admin = _admin(stack, client)
        customers = [ha_load.new_customer(client, admin) for _ in range(3)]
        load = ha_load.FailoverLoad(stack.gateway, stack.tls(), customers)
        load.start()
        try:
            time.sleep(STEADY)
            assert any(a.acknowledged for a in load.snapshot()), "no write served before the kill"
            old = ha_load.leader(rest)
            assert old is not None, ha_load.cluster(rest)
            killed = ha_load.kill_member(stack.dir, stack.refresh().component(old))
            give_up = killed + BACK_WITHIN + 10
            while (back := ha_load.back_after(load.snapshot(), killed)) is None:
                if time.monotonic() > give_up:
                    break
                time.sleep(0.1)
            time.sleep(AFTER)
        finally:
            load.stop()
        answers = load.snapshot()
        print(f"failover: {old} killed, service back after {back} s, {len(answers)} answers",
              file=sys.stderr)

        # The old leader comes back as a replica of the new one.
        restarted = devstack("restart", old, "--dir", str(stack.dir), timeout=180)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        deadline = time.monotonic() + 60
        while not ha_load.is_streaming_replica(rest, old):
            assert time.monotonic() < deadline, (f"{old} did not rejoin as a replica: "
                                                 f"{ha_load.cluster(rest)}")
            time.sleep(0.5)
        new = ha_load.leader(rest)
        assert new not in (None, old), ha_load.cluster(rest)
        stack.wait_healthy()

        bad = ha_load.failures(answers)
        assert not bad, "answers other than 2xx/4xx/503 during the failover:\n" + "\n".join(
            f"{a.kind} {a.key} +{a.sent - killed:.2f}s: {a.status} {a.body}" for a in bad[:20])
        refused = [a for a in answers if a.status is not None and 400 <= a.status < 500]
        assert not refused, f"writes refused: {[(a.kind, a.status, a.body) for a in refused[:5]]}"
        assert back is not None, "no registration and withdrawal succeeded after the kill"
        assert back <= BACK_WITHIN, f"service back only {back:.1f} s after the kill"
        lost = ha_load.lost_writes(client, customers, answers)
        assert not lost, "\n".join(lost[:20])


pytestmark = pytest.mark.stack
