"""`make faults`: the production topology under process kills, broker kills and a database stall.

    python bench/faults.py [--quick] [--duration S] [--logouts N] [--rate R] [--keep]

Brings up the local production stack with ``python -m devstack up`` in a scratch directory
(2 sso, 2 loyalty, 3 Kafka brokers, the Schema Registry, PostgreSQL primary + streaming
replica, the nginx gateway; free ports, no Prometheus), then for ``--duration`` seconds (300;
``--quick`` 90):

* registers users through the gateway at a steady ``--rate`` (9/s);
* logs out ``--logouts`` sessions (200; quick 40) spread evenly over the run, each through the
  gateway, and watches every loyalty replica directly: ``GET /loyalty/me`` with the ended
  session's access token every 10 ms until it answers 401. The delay runs from the logout's 200,
  or, for a replica that was down or answered 503 meanwhile, from its first other answer after
  that (a replica that comes back refusing the session counts 0);
* SIGKILLs sso, loyalty and Kafka processes at random (through supervisord) and restarts each
  with ``python -m devstack restart <component>`` after a pause of 1-3 s, and stalls the
  PostgreSQL primary once (SIGSTOP of the postmaster and all its backends for 10 s, then
  SIGCONT).

Then it waits for sso's outbox to drain and checks: every user in sso's ``users`` has exactly one
welcome deposit (comment ``registration``) of the configured bonus (none missing, none doubled),
every balance equals its ledger, the outbox is all delivered, the dead-letter topics are empty.
Results:
``bench/results/faults-latest.md`` and ``faults-latest.json`` (``--out``). Exit status 1 if a check
failed or a logout was refused later than 1 s by some replica.

Everything runs in ``/tmp/authloyalty-faults-*`` and is stopped at the end, also on failure or
Ctrl-C; the directory (configs, every component's log) is removed unless ``--keep`` or something
went wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(ROOT))  # devstack/ (not installed)

from benchlib.stats import percentile  # noqa: E402

from devstack.common import free_ports  # noqa: E402
from devstack.postgres import scratch_dir  # noqa: E402
from devstack.stack import load_state  # noqa: E402
from devstack.topology import Topology  # noqa: E402

DEADLINE = 1.0  # a logout must be refused by every replica within this many seconds
POLL = 0.010
PASSWORD = "faults password 123"
STALL_SECONDS = 10.0


def log(message: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Fault:
    """One fault: a SIGKILL and restart, or a stall."""

    kind: str  # sso | loyalty | broker | postgres-stall
    component: str
    planned_at: float
    started_at: float = 0.0  # run clock (s): SIGKILL / SIGSTOP sent
    restarted_at: float = 0.0  # restart command issued / SIGCONT sent
    ready_at: float = 0.0  # devstack restart returned (component ready)
    error: str = ""


@dataclass
class Watch:
    """One replica's answers to one ended session."""

    replica: str
    refused_after: float | None = None  # s from the logout's 200 or from the replica's return
    unavailable: int = 0  # answers that were connection errors or 503
    accepted: int = 0  # 200/404 after the logout
    returned_at: float | None = None  # run clock: first answer after being unavailable
    refused_at: float | None = None  # run clock
    slowest_poll: float = 0.0  # s, the longest single GET (a busy replica or machine)


@dataclass
class Logout:
    index: int
    user_id: str
    requested_at: float = 0.0
    answered_at: float | None = None  # run clock of the 200
    attempts: int = 0
    error: str = ""
    watches: list[Watch] = field(default_factory=list)


class Run:
    """The clock, the stack, the load and the faults of one fault run."""

    def __init__(self, directory: Path, args: argparse.Namespace) -> None:
        self.dir = directory
        self.args = args
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.registered: list[tuple[float, str, str]] = []  # (at, user id, access token)
        self.registered_out: list[tuple[float, str, str]] = []  # picked for a logout
        self.registration_errors: list[tuple[float, str]] = []
        self.registration_attempts = 0
        self.logouts: list[Logout] = []
        self.faults: list[Fault] = []
        self.stopped_pids: list[int] = []
        state = load_state(directory)
        assert state is not None
        self.topology = Topology(directory, state)
        self.gateway = f"https://localhost:{state['ports']['https'][0]}"
        self.replicas = {f"loyalty-{i}": f"http://127.0.0.1:{p}"
                         for i, p in enumerate(self.topology.loyalty_ports(), start=1)}
        self.tls = ssl.create_default_context(cafile=str(self.topology.tls.ca))
        self.local = threading.local()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self.local, "client", None)
        if client is None:
            client = httpx.Client(verify=self.tls, timeout=30.0)
            self.local.client = client
        return client

    # -- load -------------------------------------------------------------------------------

    def register(self, n: int, tag: str) -> None:
        at = self.now()
        try:
            r = self.client().post(f"{self.gateway}/auth/registration", json={
                "email": f"f{n}-{tag}@faults.example.com", "password": PASSWORD})
        except httpx.HTTPError as exc:
            with self.lock:
                self.registration_errors.append((at, f"{type(exc).__name__}: {exc}"[:160]))
            return
        with self.lock:
            if r.status_code == 201:
                body = r.json()
                self.registered.append((self.now(), body["user_id"], body["access_token"]))
            else:
                self.registration_errors.append((at, f"{r.status_code} {r.text[:120]}"))

    def registrations(self, pool: ThreadPoolExecutor) -> None:
        tag = f"{int(time.time())}"
        n, interval = 0, 1.0 / self.args.rate
        next_at = time.monotonic()
        while not self.stop.is_set():
            n += 1
            self.registration_attempts = n
            pool.submit(self.register, n, tag)
            next_at += interval
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def pick_session(self) -> tuple[str, str] | None:
        """A session registered at least 3 s ago (its bonus has had time to arrive)."""
        with self.lock:
            for i in range(len(self.registered) - 1, -1, -1):
                at, user, token = self.registered[i]
                if self.now() - at >= 3.0:
                    del self.registered[i]
                    self.registered_out.append((at, user, token))
                    return user, token
        return None

    def logout(self, index: int) -> None:
        picked = self.pick_session()
        while picked is None and not self.stop.wait(0.2):
            picked = self.pick_session()
        if picked is None:
            return
        user, token = picked
        item = Logout(index, user, requested_at=self.now())
        with self.lock:
            self.logouts.append(item)
        while item.attempts < 10 and not self.stop.is_set():
            item.attempts += 1
            try:
                r = self.client().post(f"{self.gateway}/auth/logout", json={"token": token})
                if r.status_code == 200:
                    item.answered_at = self.now()
                    break
                item.error = f"{r.status_code} {r.text[:120]}"
            except httpx.HTTPError as exc:
                item.error = f"{type(exc).__name__}: {exc}"[:160]
            time.sleep(0.3)
        if item.answered_at is None:
            return
        threads = []
        for name, url in self.replicas.items():
            watch = Watch(name)
            item.watches.append(watch)
            threads.append(threading.Thread(target=self.watch, args=(watch, url, token,
                                                                      item.answered_at),
                                            daemon=True))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)

    def watch(self, watch: Watch, url: str, token: str, since: float) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        base: float | None = since
        give_up = since + 90.0
        with httpx.Client(timeout=2.0) as client:
            while self.now() < give_up:
                sent = self.now()
                try:
                    status = client.get(f"{url}/loyalty/me", headers=headers).status_code
                except httpx.HTTPError:
                    status = 0
                now = self.now()
                watch.slowest_poll = max(watch.slowest_poll, now - sent)
                if status in (0, 503):
                    watch.unavailable += 1
                    base = None
                else:
                    if base is None:
                        base = now
                        watch.returned_at = now
                    if status == 401:
                        watch.refused_at = now
                        watch.refused_after = now - base
                        return
                    watch.accepted += 1
                time.sleep(POLL)

    def logouts_over_run(self) -> None:
        count, duration = self.args.logouts, self.args.duration
        threads = []
        for i in range(count):
            at = (i + 0.5) * duration / count
            if self.stop.wait(max(0.0, at - self.now())):
                break
            thread = threading.Thread(target=self.logout, args=(i,), daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(180)

    # -- faults -----------------------------------------------------------------------------

    def devstack(self, *argv: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "devstack", *argv, "--dir", str(self.dir)],
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def plan_faults(self) -> list[Fault]:
        rng = random.Random(self.args.seed)
        brokers = [n.name for n in self.topology.kafka_nodes()]
        kinds = (["sso"] * self.args.sso_kills + ["loyalty"] * self.args.loyalty_kills
                 + ["broker"] * self.args.broker_kills
                 + ["postgres-stall"] * self.args.pg_stalls)
        rng.shuffle(kinds)
        start, end = 10.0, max(15.0, self.args.duration - 20.0)
        step = (end - start) / max(1, len(kinds))
        plan = []
        for i, kind in enumerate(kinds):
            if kind == "sso":
                component = f"sso-{rng.randint(1, len(self.topology.sso_ports()))}"
            elif kind == "loyalty":
                component = f"loyalty-{rng.randint(1, len(self.replicas))}"
            elif kind == "broker":
                component = rng.choice(brokers)
            else:
                component = "postgres-primary"
            plan.append(Fault(kind, component, round(start + i * step
                                                     + rng.uniform(0, step / 3), 1)))
        return plan

    def run_faults(self) -> None:
        rng = random.Random(self.args.seed + 1)
        table = {c.name: c for c in self.topology.components()}
        for fault in self.plan_faults():
            if self.stop.wait(max(0.0, fault.planned_at - self.now())):
                return
            self.faults.append(fault)
            try:
                if fault.kind == "postgres-stall":
                    self.stall_primary(fault)
                    continue
                fault.started_at = self.now()
                self.topology.supervisor.kill(table[fault.component])
                log(f"SIGKILL {fault.component} at {fault.started_at:.1f} s")
                time.sleep(rng.uniform(1.0, 3.0))
                fault.restarted_at = self.now()
                proc = self.devstack("restart", fault.component)
                fault.ready_at = self.now()
                if proc.returncode != 0:
                    fault.error = (proc.stdout + proc.stderr)[-500:]
                    log(f"restart {fault.component} failed: {fault.error}")
                else:
                    log(f"{fault.component} ready again at {fault.ready_at:.1f} s "
                        f"({fault.ready_at - fault.started_at:.1f} s after the kill)")
            except Exception as exc:  # recorded; the run goes on
                fault.error = repr(exc)
                log(f"fault {fault.kind} {fault.component}: {exc!r}")

    def primary_pids(self) -> list[int]:
        table = {c.name: c for c in self.topology.components()}
        postmaster = self.topology.supervisor.pid(table["postgres-primary"])
        if postmaster is None:
            return []
        pids = [postmaster]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == postmaster:
                    pids.append(int(stat.parent.name))
        return pids

    def stall_primary(self, fault: Fault) -> None:
        pids = self.primary_pids()
        fault.started_at = self.now()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
            self.stopped_pids.append(pid)
        log(f"SIGSTOP PostgreSQL primary ({len(pids)} processes) at {fault.started_at:.1f} s")
        time.sleep(STALL_SECONDS)
        self.resume_primary()
        fault.restarted_at = fault.ready_at = self.now()
        log(f"SIGCONT PostgreSQL primary at {fault.ready_at:.1f} s")

    def resume_primary(self) -> None:
        while self.stopped_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.stopped_pids.pop(), signal.SIGCONT)

    # -- checks -----------------------------------------------------------------------------

    def sql(self, database: str, query: str) -> list[list[str]]:
        out = self.topology.primary.psql(query, database)
        return [line.split("|") for line in out.strip().splitlines() if line]

    def wait_outbox_drained(self, timeout: float = 180.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            left = int(self.sql("sso", "SELECT count(*) FROM outbox "
                                       "WHERE status <> 'successful';")[0][0])
            if left == 0 or time.monotonic() > deadline:
                return left
            time.sleep(1.0)

    def bonuses(self, amount: int, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            users = {row[0] for row in self.sql("sso", "SELECT id FROM users;")}
            credits = {row[0]: (int(row[1]), int(row[2]), int(row[3])) for row in self.sql(
                "loyalty", "SELECT account_id, count(*), min(amount), max(amount) "
                           "FROM ledger_entries WHERE kind = 'deposit' "
                           "AND comment = 'registration' GROUP BY account_id;")}
            missing = sorted(users - credits.keys())
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(2.0)
        doubled = sorted(u for u, (n, _, _) in credits.items() if n > 1)
        wrong = sorted(u for u, (_, lo, hi) in credits.items() if lo != amount or hi != amount)
        once = sum(1 for u, (n, lo, hi) in credits.items()
                   if u in users and n == 1 and lo == hi == amount)
        confirmed = {u for _, u, _ in [*self.registered, *self.registered_out]}
        return {"registered": len(users), "answered_201": len(confirmed),
                "registered_without_201": len(users - confirmed),
                "answered_201_but_absent": len(confirmed - users),
                "credited_once": once, "missing": len(missing), "doubled": len(doubled),
                "wrong_amount": len(wrong),
                "credited_unknown_user": len(credits.keys() - users),
                "bonus": amount, "missing_ids": missing[:20], "doubled_ids": doubled[:20]}

    def ledger(self) -> dict[str, int]:
        row = self.sql("loyalty", """
            WITH sums AS (
                SELECT account_id,
                       sum(CASE WHEN kind = 'deposit' THEN amount ELSE -amount END) AS total,
                       count(*) AS entries
                FROM ledger_entries GROUP BY account_id)
            SELECT count(*) FILTER (WHERE s.total IS DISTINCT FROM a.balance),
                   count(*), coalesce(sum(s.entries), 0),
                   count(*) FILTER (WHERE a.balance < 0)
            FROM accounts a LEFT JOIN sums s ON s.account_id = a.user_id;""")[0]
        return dict(zip(("mismatched", "accounts", "entries", "negative"),
                        (int(x) for x in row), strict=True))

    def revocations(self) -> dict[str, tuple[float, float | None, int]]:
        """Per user: when its revocation's outbox row was written and published (run clock),
        and the relay's attempts."""
        rows = self.sql("sso", "SELECT payload->>'user_id', extract(epoch FROM created_at), "
                               "extract(epoch FROM published_at), attempts FROM outbox "
                               "WHERE event_type = 'session_revoked';")
        return {user: (float(created) - self.wall0,
                       float(published) - self.wall0 if published else None, int(attempts))
                for user, created, published, attempts in rows}

    def outbox(self) -> dict[str, int]:
        return {status: int(n) for status, n in self.sql(
            "sso", "SELECT status, count(*) FROM outbox GROUP BY status;")}

    def dead_letters(self) -> dict[str, int]:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.topology.kafka.bootstrap_servers,
                             "group.id": "faults-check", "enable.auto.commit": False})
        try:
            metadata = consumer.list_topics(timeout=10)
            counts = {}
            for topic, info in metadata.topics.items():
                if not topic.endswith(".dlq"):
                    continue
                total = 0
                for partition in info.partitions:
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=10)
                    total += high - low
                counts[topic] = total
            return counts
        finally:
            consumer.close()


# -- the report -------------------------------------------------------------------------------


def seconds_summary(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "p50_s": None, "p99_s": None, "max_s": None, "late": 0}
    return {"count": len(ordered), "p50_s": round(percentile(ordered, 50), 3),
            "p99_s": round(percentile(ordered, 99), 3), "max_s": round(ordered[-1], 3),
            "late": sum(1 for v in ordered if v > DEADLINE)}


def around(run: Run, start: float, end: float) -> list[str]:
    """The faults whose effects could reach [start, end]: from 2 s before a kill to 10 s after
    the component was ready again."""
    found = []
    for f in run.faults:
        if f.started_at and f.started_at - 2.0 <= end and (f.ready_at or end) + 10.0 >= start:
            found.append(f"{f.kind} {f.component} killed at {f.started_at:.1f} s, ready "
                         f"{f.ready_at:.1f} s" if f.kind != "postgres-stall" else
                         f"PostgreSQL primary stalled {f.started_at:.1f}-{f.ready_at:.1f} s")
    return found or ["no fault nearby"]


def summarize_run(run: Run) -> dict[str, Any]:
    per_replica: dict[str, Any] = {}
    late = []
    revocations = run.revocations()
    relayed = []  # the logout's 200 → its revocation acknowledged by Kafka
    for item in run.logouts:
        timing = revocations.get(item.user_id)
        if item.answered_at is not None and timing is not None and timing[1] is not None:
            relayed.append(max(0.0, timing[1] - item.answered_at))
    for name in run.replicas:
        values = []
        for item in run.logouts:
            for w in item.watches:
                if w.replica != name:
                    continue
                if w.refused_after is None:
                    late.append({"logout": item.index, "replica": name,
                                 "logout_at_s": item.answered_at, "refused_after_s": None,
                                 "context": around(run, item.answered_at or 0, run.now())})
                    continue
                values.append(w.refused_after)
                if w.refused_after > DEADLINE:
                    late.append({"logout": item.index, "replica": name,
                                 "logout_at_s": round(item.answered_at or 0, 2),
                                 "returned_at_s": w.returned_at and round(w.returned_at, 2),
                                 "refused_at_s": w.refused_at and round(w.refused_at, 2),
                                 "refused_after_s": round(w.refused_after, 3),
                                 "polls_answered": w.accepted + 1,
                                 "slowest_poll_s": round(w.slowest_poll, 3),
                                 "outbox": outbox_timing(revocations.get(item.user_id)),
                                 "context": around(run, item.answered_at or 0,
                                                   w.refused_at or run.now())})
        per_replica[name] = seconds_summary(values)
        per_replica[name]["never_refused"] = sum(
            1 for item in run.logouts for w in item.watches
            if w.replica == name and w.refused_after is None)
        per_replica[name]["came_back_refusing"] = sum(
            1 for item in run.logouts for w in item.watches
            if w.replica == name and w.returned_at is not None and w.refused_after == 0.0)
    return {"per_replica": per_replica, "late": late,
            "published_after_logout": seconds_summary(relayed)}


def outbox_timing(timing: tuple[float, float | None, int] | None) -> str:
    if timing is None:
        return "no outbox row"
    created, published, attempts = timing
    return (f"outbox row written {created:.2f} s, published "
            + (f"{published:.2f} s" if published is not None else "never")
            + f" ({attempts} attempt{'s' if attempts != 1 else ''})")


def render_markdown(doc: dict[str, Any]) -> str:
    m, b, lo = doc["meta"], doc["bonuses"], doc["logouts"]
    lines = [
        "# Fault run", "",
        f"{m['started_at']} · `{m['command']}` · git {m['git']} · {m['duration_s']:g} s, "
        f"registrations at {m['rate']:g}/s through the gateway, {m['machine_cpus']} cores", "",
        "Stack: " + m["topology"], "",
        "## Verdict", "",
        f"**{'PASS' if doc['passed'] else 'FAIL'}**" + (
            "" if doc["passed"] else ": " + "; ".join(doc["problems"])), "",
        "## Welcome bonuses", "",
        "| registered (sso users) | answered 201 | credited once | missing | doubled "
        "| wrong amount |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {b['registered']} | {b['answered_201']} | {b['credited_once']} | {b['missing']} "
        f"| {b['doubled']} | {b['wrong_amount']} |", "",
        f"Bonus {b['bonus']}. Registrations attempted {m['registrations_attempted']}, refused or "
        f"failed at the client {len(doc['registration_errors'])} (registered without a 201 seen: "
        f"{b['registered_without_201']}). Ledger: {doc['ledger']}. Outbox: {doc['outbox']} "
        f"(left undelivered after the drain: {doc['outbox_left']}). "
        f"Dead-letter topics: {doc['dead_letters']}.", "",
        "## Logout → refused, per loyalty replica", "",
        f"{lo['requested']} logouts requested, {lo['answered']} answered 200. Each replica "
        "polled every 10 ms with the ended session's token until 401; from the logout's 200, or "
        "from the replica's first non-503 answer if it was down or catching up.", "",
        "| replica | refused | p50 s | p99 s | max s | > 1 s | never refused "
        "| came back refusing |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in lo["per_replica"].items():
        lines.append(f"| {name} | {s['count']} | {s['p50_s']} | {s['p99_s']} | {s['max_s']} "
                     f"| {s['late']} | {s['never_refused']} | {s['came_back_refusing']} |")
    pub = lo["published_after_logout"]
    lines += ["", f"Revocations published to Kafka (acknowledged) after the logout's 200: "
              f"p50 {pub['p50_s']} s, p99 {pub['p99_s']} s, max {pub['max_s']} s, "
              f"{pub['late']} later than 1 s (from sso's outbox `published_at`).",
              "", "### Late (> 1 s)", ""]
    if not lo["late"]:
        lines.append("None.")
    for item in lo["late"]:
        lines.append(f"* logout {item['logout']} at {item['logout_at_s']} s, {item['replica']}: "
                     f"refused after {item['refused_after_s']} s ({item.get('outbox', '')}; "
                     f"{item.get('polls_answered')} answers, slowest "
                     f"{item.get('slowest_poll_s')} s) — "
                     + "; ".join(item["context"]))
    lines += ["", "## Faults", "", "| kind | component | at s | restart issued s | ready s "
              "| error |", "|---|---|---:|---:|---:|---|"]
    for f in doc["faults"]:
        lines.append(f"| {f['kind']} | {f['component']} | {f['started_at']:.1f} "
                     f"| {f['restarted_at']:.1f} | {f['ready_at']:.1f} "
                     f"| {f['error'][:80].replace('|', '/')} |")
    if doc["registration_errors"]:
        lines += ["", "## Registration errors at the client", ""]
        lines += [f"* {at:.1f} s: {text}" for at, text in doc["registration_errors"][:30]]
    return "\n".join(lines) + "\n"


def git_revision() -> str | None:
    proc = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip() or None


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="90 s, 40 logouts, one kill of each kind and the stall")
    p.add_argument("--duration", type=float, help="seconds of load (default 300, quick 90)")
    p.add_argument("--rate", type=float, default=9.0, help="registrations per second")
    p.add_argument("--logouts", type=int, help="default 200, quick 40")
    p.add_argument("--sso-kills", type=int, help="default 5, quick 1")
    p.add_argument("--loyalty-kills", type=int, help="default 5, quick 1")
    p.add_argument("--broker-kills", type=int, help="default 4, quick 1")
    p.add_argument("--pg-stalls", type=int, default=1)
    p.add_argument("--seed", type=int, default=int(time.time()), help="of the fault plan")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    p.add_argument("--keep", action="store_true", help="leave the stack's directory behind")
    args = p.parse_args(argv)
    quick = args.quick
    for name, full, short in (("duration", 300.0, 90.0), ("logouts", 200, 40),
                              ("sso_kills", 5, 1), ("loyalty_kills", 5, 1),
                              ("broker_kills", 4, 1)):
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    return args


def interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def stack_up(directory: Path) -> Iterator[None]:
    """``devstack up`` in ``directory``; ``devstack down`` however the block ends."""
    https, grpc = free_ports(2, {8000, 8001, 8443, 44044})
    argv = [sys.executable, "-m", "devstack", "up", "--dir", str(directory),
            "--sso-replicas", "2", "--loyalty-replicas", "2", "--brokers", "3",
            "--postgres", "simple",  # the stall targets the plain primary
            "--https-port", str(https), "--http2-grpc-port", str(grpc),
            "--no-prometheus", "--no-443"]
    try:
        log("devstack up: " + " ".join(argv[3:]))
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"devstack up failed:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
        yield
    finally:
        log("devstack down")
        subprocess.run([sys.executable, "-m", "devstack", "down", "--dir", str(directory)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupted)
    directory = scratch_dir("authloyalty-faults-")
    started_at = datetime.now(UTC)
    revision = git_revision()
    keep = args.keep
    run: Run | None = None
    doc: dict[str, Any] = {"passed": False, "problems": ["interrupted"]}
    try:
        with stack_up(directory / "stack"):
            run = Run(directory / "stack", args)
            log(f"stack up; gateway {run.gateway}, loyalty replicas {run.replicas}; "
                f"{args.duration:g} s of load")
            from authloyalty.settings import load_settings

            bonus = load_settings(run.topology.config_dir / "loyalty-1.yaml").loyalty.welcome_bonus
            # Open loop: enough threads that every registration leaves on time, stall or not.
            pool = ThreadPoolExecutor(max_workers=256, thread_name_prefix="register")
            run.t0, run.wall0 = time.monotonic(), time.time()
            threads = [threading.Thread(target=run.registrations, args=(pool,), daemon=True),
                       threading.Thread(target=run.logouts_over_run, daemon=True),
                       threading.Thread(target=run.run_faults, daemon=True)]
            for thread in threads:
                thread.start()
            try:
                time.sleep(args.duration)
            finally:
                run.stop.set()
                run.resume_primary()
            log("load stopped; waiting for logout watchers and the last restart")
            for thread in threads:
                thread.join(240)
            pool.shutdown(wait=True)
            status = subprocess.run([sys.executable, "-m", "devstack", "status", "--dir",
                                     str(run.dir)], cwd=ROOT, capture_output=True, text=True,
                                    check=False)
            log(f"devstack status: exit {status.returncode}")
            left = run.wait_outbox_drained()
            log(f"outbox drained (left {left}); checking bonuses")
            bonuses = run.bonuses(bonus)
            ledger, outbox, dead = run.ledger(), run.outbox(), run.dead_letters()
            doc = report(run, args, started_at, revision, bonuses, ledger, outbox, dead, left,
                         status.stdout)
    except BaseException:
        if run is not None:
            run.resume_primary()
        raise
    finally:
        if keep or not doc["passed"]:
            log(f"stack directory kept (configs, logs): {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    if not doc["passed"]:
        log(f"problems: {doc['problems']}")
    return 0 if doc["passed"] else 1


def report(run: Run, args: argparse.Namespace, started_at: datetime, revision: str | None,
           bonuses: dict[str, Any], ledger: dict[str, int], outbox: dict[str, int],
           dead: dict[str, int], left: int, status: str) -> dict[str, Any]:
    logouts = summarize_run(run)
    answered = [i for i in run.logouts if i.answered_at is not None]
    problems = []
    for key in ("missing", "doubled", "wrong_amount", "credited_unknown_user"):
        if bonuses[key]:
            problems.append(f"bonuses {key}: {bonuses[key]}")
    if ledger["mismatched"] or ledger["negative"]:
        problems.append(f"ledger: {ledger}")
    if left:
        problems.append(f"outbox: {left} undelivered")
    if any(dead.values()):
        problems.append(f"dead letters: {dead}")
    if logouts["late"]:
        problems.append(f"{len(logouts['late'])} replica refusals later than {DEADLINE:g} s")
    if len(answered) < len(run.logouts):
        problems.append(f"{len(run.logouts) - len(answered)} logouts never answered 200")
    command = "python bench/faults.py" + (" --quick" if args.quick else "")
    doc: dict[str, Any] = {
        "meta": {"started_at": started_at.isoformat(timespec="seconds"),
                 "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
                 "command": command, "git": revision, "seed": args.seed,
                 "duration_s": args.duration, "rate": args.rate,
                 "machine_cpus": os.cpu_count(),
                 "topology": "2 sso, 2 loyalty, 3 Kafka brokers (KRaft), PostgreSQL primary + "
                             "streaming replica, nginx TLS gateway (python -m devstack up)",
                 "registrations_attempted": run.registration_attempts,
                 "status_at_end": status},
        "passed": not problems, "problems": problems,
        "bonuses": bonuses, "ledger": ledger, "outbox": outbox, "outbox_left": left,
        "dead_letters": dead,
        "logouts": {"requested": len(run.logouts), "answered": len(answered),
                    "per_replica": logouts["per_replica"], "late": logouts["late"],
                    "published_after_logout": logouts["published_after_logout"],
                    "items": [asdict(i) for i in run.logouts]},
        "faults": [asdict(f) for f in run.faults],
        "registration_errors": run.registration_errors,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "faults-latest.json").write_text(json.dumps(doc, indent=2) + "\n")
    markdown = render_markdown(doc)
    (args.out / "faults-latest.md").write_text(markdown)
    print(markdown)
    log(f"results: {args.out / 'faults-latest.md'}, {args.out / 'faults-latest.json'}")
    return doc


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
