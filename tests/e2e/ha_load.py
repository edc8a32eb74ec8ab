"""Customers writing through the gateway while PostgreSQL fails over, and the check afterwards
that every write the services acknowledged is still there.

Used by tests/e2e/test_ha_failover.py (one leader kill) and bench/failover.py (three kills,
timed). Only the wire is used: HTTPS through the gateway, Patroni's REST API, ``status --json``.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devstack.supervisor import Supervisor
from tests.e2e.full_stack import alive

PASSWORD = "correct horse battery"
DEPOSIT = 1_000_000  # far more than the load can withdraw, so no withdrawal is refused
WITHDRAWAL_PAUSE = 0.02
REGISTRATION_PAUSE = 0.25  # argon2 is costly; the point is continuity, not throughput
REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class Answer:
    """One request and what came back (``status`` None: no answer at all)."""

    kind: str  # "registration" | "withdrawal"
    key: str  # the email registered, or the withdrawal's Idempotency-Key
    owner: str  # the email of the account written to
    sent: float
    answered: float
    status: int | None
    body: str

    @property
    def acknowledged(self) -> bool:
        """A 2xx: the service said the write happened."""
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Customer:
    """A registered user with an account and a valid access token."""

    email: str
    user_id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def unique_email(prefix: str) -> str:
    """An email nobody registered yet."""
    return f"{prefix}-{uuid.uuid4().hex}@example.com"


def login(client: httpx.Client, email: str) -> httpx.Response:
    """``POST /auth/login`` with the load's password."""
    return client.post("/auth/login", json={"email": email, "password": PASSWORD})


def new_customer(client: httpx.Client, admin: dict[str, str], deadline: float = 30.0) -> Customer:
    """Register, log in, wait for the account (welcome bonus) and deposit plenty of points."""
    email = unique_email("ha-load")
    r = client.post("/auth/registration", json={"email": email, "password": PASSWORD})
    assert r.status_code == 201, r.text
    user_id = r.json()["user_id"]
    r = login(client, email)
    assert r.status_code == 200, r.text
    customer = Customer(email, user_id, r.json()["access_token"])
    give_up = time.monotonic() + deadline
    while client.get("/loyalty/me", headers=customer.auth).status_code != 200:
        assert time.monotonic() < give_up, f"no account for {email} within {deadline} s"
        time.sleep(0.1)
    r = client.post(f"/loyalty/admin/accounts/{user_id}/deposits", headers=admin,
                    json={"amount": DEPOSIT, "comment": "load funds"})
    assert r.status_code == 201, r.text
    return customer


@dataclass
class FailoverLoad:
    """Threads withdrawing (one per customer) and one registering, until :meth:`stop`.

    A withdrawal answered 503 or not at all is sent again with the same Idempotency-Key, as a
    client is told to; every attempt is recorded.
    """

    gateway: str
    tls: ssl.SSLContext
    customers: list[Customer]
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        """Start the load."""
        for customer in self.customers:
            self._spawn(lambda c=customer: self._withdraw(c))  # type: ignore[misc]
        self._spawn(self._register)

    def stop(self) -> None:
        """Stop the load; return once every thread is done."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2 * REQUEST_TIMEOUT)

    def snapshot(self) -> list[Answer]:
        """Every answer so far."""
        with self._lock:
            return list(self.answers)

    def _spawn(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.gateway, verify=self.tls, timeout=REQUEST_TIMEOUT)

    def _send(self, client: httpx.Client, kind: str, key: str, owner: str, path: str,
              **request: Any) -> Answer:
        sent = time.monotonic()
        try:
            response = client.post(path, **request)
            status, body = response.status_code, response.text[:500]
        except httpx.HTTPError as exc:
            status, body = None, repr(exc)
        answer = Answer(kind, key, owner, sent, time.monotonic(), status, body)
        with self._lock:
            self.answers.append(answer)
        return answer

    def _withdraw(self, customer: Customer) -> None:
        with self._client() as client:
            while not self._stop.is_set():
                key = uuid.uuid4().hex
                headers = {**customer.auth, "Idempotency-Key": key}
                while True:
                    answer = self._send(client, "withdrawal", key, customer.email,
                                        "/loyalty/me/withdrawals", headers=headers,
                                        json={"amount": 1, "comment": key})
                    if answer.status not in (None, 503) or self._stop.is_set():
                        break
                    time.sleep(0.1)
                time.sleep(WITHDRAWAL_PAUSE)

    def _register(self) -> None:
        with self._client() as client:
            while not self._stop.is_set():
                email = unique_email("ha-reg")
                self._send(client, "registration", email, email, "/auth/registration",
                           json={"email": email, "password": PASSWORD})
                time.sleep(REGISTRATION_PAUSE)


def back_after(answers: list[Answer], since: float) -> float | None:
    """Seconds from ``since`` until both a registration and a withdrawal sent after it had
    been acknowledged (None if that never happened)."""
    firsts = []
    for kind in ("registration", "withdrawal"):
        done = [a.answered for a in answers if a.kind == kind and a.sent >= since
                and a.acknowledged]
        if not done:
            return None
        firsts.append(min(done))
    return max(firsts) - since


def failures(answers: list[Answer]) -> list[Answer]:
    """Answers a client must never get while PostgreSQL fails over: a 5xx other than 503
    (retry later), or no answer at all."""
    return [a for a in answers
            if a.status is None or (a.status >= 500 and a.status != 503)]


def lost_writes(client: httpx.Client, customers: list[Customer], answers: list[Answer],
                deadline: float = 20.0) -> list[str]:
    """What was acknowledged but is missing or wrong now (empty when nothing was lost).

    Balances and history are read from a replica, which may be a moment behind: the check is
    repeated until it passes or ``deadline`` s have gone.
    """
    give_up = time.monotonic() + deadline
    while True:
        problems = _check(client, customers, answers)
        if not problems or time.monotonic() > give_up:
            return problems
        time.sleep(1.0)


def _check(client: httpx.Client, customers: list[Customer], answers: list[Answer]) -> list[str]:
    problems: list[str] = []
    registered = {a.key for a in answers if a.kind == "registration" and a.acknowledged}
    for email in sorted(registered):
        r = login(client, email)
        if r.status_code != 200:
            problems.append(f"registered {email} cannot log in: {r.status_code} {r.text[:200]}")
    for customer in customers:
        problems += _check_account(client, customer, [
            a for a in answers if a.kind == "withdrawal" and a.owner == customer.email])
    return problems


def _check_account(client: httpx.Client, customer: Customer, answers: list[Answer]) -> list[str]:
    problems: list[str] = []
    items = history(client, customer.auth)
    r = client.get("/loyalty/me", headers=customer.auth)
    if r.status_code != 200:
        return [f"{customer.email}: GET /loyalty/me answered {r.status_code}"]
    balance = int(r.json()["balance"])
    total = sum(i["amount"] if i["kind"] == "deposit" else -i["amount"] for i in items)
    if balance != total:
        problems.append(f"{customer.email}: balance {balance} != sum of its history {total}")
    by_id = {int(i["id"]): i for i in items}
    comments: dict[str, int] = {}
    for item in items:
        comments[item["comment"]] = comments.get(item["comment"], 0) + 1
    for answer in answers:
        if comments.get(answer.key, 0) > 1:
            problems.append(f"{customer.email}: withdrawal {answer.key} recorded "
                            f"{comments[answer.key]} times")
        if not answer.acknowledged:
            continue
        tx_id = int(_json(answer.body)["transaction"]["id"])
        if tx_id not in by_id or by_id[tx_id]["comment"] != answer.key:
            problems.append(f"{customer.email}: acknowledged withdrawal {answer.key} "
                            f"(transaction {tx_id}) is not in the history")
    return sorted(set(problems))


def _json(text: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(text)
    return data


def history(client: httpx.Client, auth: dict[str, str]) -> list[dict[str, Any]]:
    """Every item of the caller's history, following ``next_cursor``."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        r = client.get("/loyalty/me/transactions", headers=auth, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        if body["next_cursor"] is None:
            return items
        params["cursor"] = body["next_cursor"]


# -- the cluster --------------------------------------------------------------------------------


def cluster(rest_urls: list[str]) -> dict[str, Any]:
    """Patroni's ``GET /cluster`` from the first member that answers."""
    for url in rest_urls:
        try:
            r = httpx.get(f"{url}/cluster", timeout=1.0)
        except httpx.HTTPError:
            continue
        if r.status_code == 200:
            data: dict[str, Any] = r.json()
            return data
    return {"members": []}


def leader(rest_urls: list[str]) -> str | None:
    """The running leader's name, if there is one."""
    return next((m["name"] for m in cluster(rest_urls)["members"]
                 if m["role"] == "leader" and m["state"] == "running"), None)


def is_streaming_replica(rest_urls: list[str], name: str) -> bool:
    """Patroni reports ``name`` a running replica with a known lag (it streams from the
    leader)."""
    member = next((m for m in cluster(rest_urls)["members"] if m["name"] == name), None)
    return (member is not None and member["role"] in ("replica", "sync_standby")
            and member["state"] in ("running", "streaming")
            and isinstance(member.get("lag"), int))


def postmaster_pid(data_dir: Path) -> int:
    """The PostgreSQL postmaster of a data directory (first line of ``postmaster.pid``)."""
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def kill_member(directory: Path, entry: dict[str, Any], timeout: float = 10.0) -> float:
    """SIGKILL a member's Patroni and its PostgreSQL at once (the machine lost it); return the
    monotonic time of the kill once supervisord has seen Patroni die."""
    postmaster = postmaster_pid(Path(entry["data_dir"]))
    patroni = int(entry["pid"])
    killed = time.monotonic()
    os.kill(patroni, signal.SIGKILL)
    os.kill(postmaster, signal.SIGKILL)
    give_up = killed + timeout
    while (Supervisor(directory).all_info()[entry["name"]]["statename"] == "RUNNING"
           or alive(postmaster)):
        if time.monotonic() > give_up:
            raise AssertionError(f"{entry['name']} survived SIGKILL")
        time.sleep(0.02)
    return killed
