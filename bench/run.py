"""`make bench`: throughput and latency of sso and loyalty against their physical ceilings.

    python bench/run.py [--mode short|full] [--out DIR] [--keep] [--only NAME,...]

Provisions a durable PostgreSQL cluster and a Kafka broker, starts ``authloyalty sso`` and
``authloyalty loyalty`` in their production configuration (one process per core for each
service by default), seeds 10,000 users straight into the databases, then measures every
scenario next to its ceiling, in the same run on the same machine:

==================  ======================================  ===================================
scenario            load                                    ceiling
==================  ======================================  ===================================
balance             wrk: GET /loyalty/me, random users      bare GET /loyalty/healthz (+pgbench)
ceiling_bare_       wrk: bare GET /loyalty/healthz          Go net/http answering the same JSON
  loyalty                                                     (bench/go_ceiling.go)
withdrawal          wrk: POST /loyalty/me/withdrawals       pgbench: the withdrawal's SQL
seed_withdrawal     wrk: POST /loyalty {operation: "w"}     pgbench: the withdrawal's SQL
                                                              (and POST /loyalty/me/withdrawals)
seed_balance        wrk: GET /loyalty/<own uuid>            GET /loyalty/me
refresh             wrk: POST /auth/refresh (chained)       bare GET /auth/healthz
login               wrk: POST /auth/login (Argon2id)        Argon2id verify on every core
registration_bonus  python: register, poll /me until 200    (latency scenario)
logout_refusal      python: logout, poll /me until 401      SPEC: refused within 1 s
logout_refusal_     the same, right after SIGKILL of one    SPEC: refused within 1 s
  broker_kill       of 3 brokers (restarted after)
==================  ======================================  ===================================

Results: ``<out>/latest.json``, ``latest.md``, ``throughput.png``, ``latency.png``, ``cpu.png``
and copies of the JSON and Markdown under ``<out>/history/``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # devstack/ (not installed)

from benchlib import (
    coalescing,
    drivers,
    eventpath,
    goceiling,
    loadgen,
    report,
    sqlcheck,
    tails,
    tokencost,
)
from benchlib import seed as seeding
from benchlib.cpu import NCPU, CpuWindow, Group, machine_times, pid_group, postgres_group
from benchlib.deploy import Deployment, deploy
from benchlib.stack import PASSWORD, log, stop_on_sigterm

from devstack.kafka import KafkaCluster

BENCH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Mode:
    """How long and how much."""

    name: str
    warmup: float
    duration: float
    argon2_duration: float
    logouts: int
    kill_logouts: int  # logouts of the broker-kill batch
    refresh_sessions: int
    distinct_hashes: int


MODES = {
    # About one minute of load in total (11 measurements), plus ~30 s of provisioning.
    "short": Mode("short", warmup=1, duration=5, argon2_duration=3, logouts=200,
                  kill_logouts=50, refresh_sessions=2_000, distinct_hashes=200),
    "full": Mode("full", warmup=5, duration=30, argon2_duration=10, logouts=1_000,
                 kill_logouts=200, refresh_sessions=10_000, distinct_hashes=1_000),
}
USERS = 10_000
SETTLED_BUSY_PCT = 15.0  # the machine counts as quiet below this share of busy CPU


@dataclass
class Options:
    mode: Mode
    out: Path
    connections: int
    login_connections: int
    pg_clients: int
    wrk_threads: int
    wrk_cpus: str | None
    driver_concurrency: int
    poll_interval: float
    only: set[str] | None
    keep: bool
    sso_processes: int
    loyalty_processes: int
    settle: float
    service_env: dict[str, str]
    brokers: int
    broker_warmup: float


@dataclass
class Runner:
    """Runs the scenarios in order on one deployment and collects their records."""

    opts: Options
    dep: Deployment
    records: list[dict[str, Any]] = field(default_factory=list)
    priming: dict[str, Any] | None = None

    @property
    def stack(self) -> Any:
        return self.dep.stack

    def window(self, *extra: Group) -> CpuWindow:
        stack = self.stack
        return CpuWindow([
            pid_group("sso", lambda: stack.pids("sso")),
            pid_group("loyalty", lambda: stack.pids("loyalty")),
            postgres_group(stack.postmaster_pid),
            pid_group("kafka", stack.kafka_pids),
            *extra,
        ])

    def settle(self) -> None:
        """Wait (up to --settle seconds) until the machine is nearly idle before measuring.

        Other work on the machine (test suites, builds) distorts every figure; this does not
        prevent it, it only avoids starting a measurement in the middle of it. The "other" CPU
        share recorded with each measurement shows what happened during it.
        """
        deadline = time.monotonic() + self.opts.settle
        while True:
            busy0, idle0 = machine_times()
            time.sleep(0.5)
            busy1, idle1 = machine_times()
            total = (busy1 - busy0) + (idle1 - idle0)
            busy_pct = 100 * (busy1 - busy0) / total if total else 0.0
            if busy_pct <= SETTLED_BUSY_PCT or time.monotonic() >= deadline:
                if busy_pct > SETTLED_BUSY_PCT:
                    log(f"machine still {busy_pct:.0f} % busy; measuring anyway")
                return

    def wanted(self, name: str) -> bool:
        name = name.removesuffix(report.LEG2)
        return self.opts.only is None or name in self.opts.only

    def record(self, base: dict[str, Any], result: dict[str, Any], window: CpuWindow,
               generator: str | None) -> None:
        if generator is not None:
            window.add(generator, result.pop("cpu_seconds", 0.0))
        cpu = window.report()
        rec = {**base, **result, "cpu": cpu}
        if generator is not None:
            rec["generator_cpu_pct"] = cpu["share_pct"].get(generator)
        rec["other_cpu_pct"] = cpu["share_pct"].get("other")
        self.records.append(rec)
        lat = rec.get("latency_ms") or {}
        log(f"{rec['name']:<20} {rec['throughput_rps']:>9} /s  p50 {lat.get('p50')} ms  "
            f"p99 {lat.get('p99')} ms  errors {rec['errors']}  "
            f"(generator {rec.get('generator_cpu_pct')} %, other {rec['other_cpu_pct']} % "
            "of the machine)")
        self.stack.check_services()

    # -- generators ----------------------------------------------------------------------

    def wrk(self, name: str, title: str, kind: str, script: str, url: str, ok: set[int],
            env: dict[str, str], connections: int | None = None,
            before_measure: Callable[[], None] | None = None,
            server: tuple[int, Group] | None = None, **extra: Any) -> None:
        """Measure ``url`` with wrk; ``server``: a server outside the stack, its port and
        process group, instead of the stack's processes of the service."""
        if not self.wanted(name):
            return
        self.settle()
        conns = connections or self.opts.connections
        # Several processes of the service: one wrk thread (at least) per process.
        ports = self.stack.sso_ports if "/auth/" in url else self.stack.loyalty_ports
        if server is not None:
            ports = [server[0]]
        threads = max(self.opts.wrk_threads, len(ports))
        env = {**env, "BENCH_PORTS": ",".join(map(str, ports)) if len(ports) > 1 else ""}
        self.stack.checkpoint()
        if self.opts.mode.warmup:
            loadgen.run_wrk(script, url, duration=self.opts.mode.warmup, connections=conns,
                            threads=threads, env=env, cpus=self.opts.wrk_cpus)
        if before_measure is not None:
            before_measure()
        served_by = self.stack.loyalty_urls if "/loyalty" in url and server is None else []
        batches_before = coalescing.snapshot(served_by)
        timed_by = [] if server is not None else (
            self.stack.sso_urls if "/auth/" in url else self.stack.loyalty_urls)
        tails_before = tails.snapshot(timed_by)
        window = self.window(*([server[1]] if server else [])).start()
        raw = loadgen.run_wrk(script, url, duration=self.opts.mode.duration, connections=conns,
                              threads=threads, env=env, cpus=self.opts.wrk_cpus)
        window.stop()
        result = loadgen.wrk_summary(raw, ok)
        result["cpu_seconds"] = raw["cpu_seconds"]
        result["tails"] = tails.between(tails_before, tails.snapshot(timed_by))
        coalesced = coalescing.between(batches_before, coalescing.snapshot(served_by))
        if coalesced:
            result["coalesced"] = coalesced
        path = "/" + url.split("//", 1)[1].split("/", 1)[1]
        base = {"name": name, "title": title, "kind": kind, "generator": "wrk",
                "request": f"{extra.pop('method', 'GET')} {path}",
                "connections": conns, "threads": threads, "processes": len(ports), **extra}
        self.record(base, result, window, "wrk")

    def twins(self, first: dict[str, Any], second: dict[str, Any]) -> None:
        """A route of the original and its ``/me`` twin, measured A B B A: the pair, then (when
        both are wanted) the pair again in the opposite order as second legs (named with
        ``report.LEG2`` appended). The twin ratio is taken over both legs, so the machine's
        speed changing during the pair favours neither; each leg is reported as measured."""
        for leg in (first, second):
            self.wrk(kind="scenario", **leg)
        if not (self.wanted(first["name"]) and self.wanted(second["name"])):
            return
        for leg in (second, first):
            self.wrk(**{**leg, "name": leg["name"] + report.LEG2, "kind": "repeat",
                        "title": f"{leg['title']}, second leg"})

    def go_ceiling(self) -> None:
        """Go's net/http answering the bare endpoint's JSON (bench/go_ceiling.go), measured
        like the bare endpoint right after it: the HTTP stack's ceiling."""
        name = "ceiling_go_http"
        if not self.wanted(name):
            return
        with goceiling.serving() as go:
            self.wrk(name, "Go net/http answering the same health JSON (no framework)",
                     "ceiling", "bare", go.url, {200}, {},
                     server=(go.port, pid_group("go", lambda: [go.pid])))

    def prime_tokens(self, url: str, env: dict[str, str]) -> None:
        """Every loyalty process sees every seeded access token once (``lua/prime.lua``)
        before the authenticated scenarios, which therefore measure clients reusing their
        tokens (loyalty remembers verified tokens until they expire). Without it, a short
        run's first seconds verify thousands of signatures per process and the figure
        depends on the warm-up's length. What a first-seen token costs is measured apart
        (:func:`benchlib.tokencost.measure`)."""
        if not any(self.wanted(n) for n in ("balance", "seed_balance", "withdrawal",
                                            "seed_withdrawal")):
            return
        ports = self.stack.loyalty_ports
        users = self.dep.seeded.users
        env = {**env, "BENCH_PORTS": ",".join(map(str, ports)) if len(ports) > 1 else ""}
        duration = max(2.0, users / 1000)  # cold, a process verifies > 1,000 tokens/s
        window = self.window().start()
        raw = loadgen.run_wrk("prime", url, duration=duration, connections=self.opts.connections,
                              threads=len(ports), env=env, cpus=self.opts.wrk_cpus)
        window.stop()
        summary = loadgen.wrk_summary(raw, {200})
        per_process = summary["requests"] / len(ports)
        self.priming = {
            "requests": summary["requests"], "duration_s": summary["duration_s"],
            "processes": len(ports), "users": users, "errors": summary["errors"],
            "every_token_reached": per_process >= users, "cpu": window.report(),
        }
        log(f"token priming: {summary['requests']} requests in {summary['duration_s']} s "
            f"over {len(ports)} process(es), errors {summary['errors']}")
        if per_process < users:
            log(f"priming reached only {per_process:.0f} of {users} tokens per process")

    def pgbench(self, name: str, title: str, script: str) -> None:
        if not self.wanted(name):
            return
        stack = self.stack
        self.settle()
        self.stack.checkpoint()
        variables = {"users": str(self.dep.seeded.users), "prefix": seeding.ID_PREFIX}
        common = {"host": "127.0.0.1", "port": stack.pg.port, "database": "loyalty",
                  "clients": self.opts.pg_clients, "threads": min(2, self.opts.pg_clients),
                  "variables": variables}
        if self.opts.mode.warmup:
            loadgen.run_pgbench(script, duration=self.opts.mode.warmup, **common)
        window = self.window().start()
        result = loadgen.run_pgbench(script, duration=self.opts.mode.duration, **common)
        window.stop()
        base = {"name": name, "title": title, "kind": "ceiling", "generator": "pgbench",
                "request": f"bench/sql/{script}.sql", "connections": self.opts.pg_clients,
                "threads": common["threads"]}
        self.record(base, result, window, "pgbench")

    def argon2(self) -> None:
        name = "ceiling_argon2"
        if not self.wanted(name) and not self.wanted("login"):
            return
        a = self.dep.settings.sso.argon2
        self.settle()
        window = self.window().start()
        result = loadgen.run_argon2_ceiling(time_cost=a.time_cost, memory_kib=a.memory_kib,
                                            parallelism=a.parallelism, threads=NCPU,
                                            duration=self.opts.mode.argon2_duration,
                                            password=PASSWORD)
        window.stop()
        base = {"name": name, "title": f"Argon2id verify, {NCPU} threads (bare argon2-cffi)",
                "kind": "ceiling", "generator": "argon2",
                "request": f"argon2id m={a.memory_kib} KiB t={a.time_cost} p={a.parallelism}",
                "connections": None, "threads": NCPU}
        self.record(base, result, window, "argon2")

    def driver(self, name: str, title: str, kind: str, coro: Any,
               event_topic: str | None = None, warmup: Any = None, **extra: Any) -> None:
        """Measure a Python driver's scenario (``coro``); ``warmup``, a coroutine of the same
        driver run first and not counted, as wrk's scenarios are warmed up."""
        self.settle()
        self.stack.checkpoint()
        if warmup is not None:
            warmed = asyncio.run(warmup).as_dict()
            log(f"{name} warm-up: {warmed['operations']} operations, "
                f"{warmed['errors']} errors")
        sso_urls = [f"http://127.0.0.1:{p}" for p in self.stack.sso_ports]
        path_before = (eventpath.snapshot(sso_urls, self.stack.loyalty_urls, event_topic)
                       if event_topic else {})
        window = self.window().start()
        raw = asyncio.run(coro)
        window.stop()
        data = raw.as_dict()
        result = {
            "requests": data["operations"], "duration_s": data["elapsed_s"],
            "throughput_rps": data["throughput_rps"], "latency_ms": data["delay_ms"],
            "request_latency_ms": data["request_latency_ms"], "polls": data["polls"],
            "delay_samples_ms": data["delay_samples_ms"],
            "per_replica_delay_ms": data["per_target_ms"],
            "errors": data["errors"], "error_detail": {"samples": data["error_samples"]},
        }
        if event_topic:
            result["event_path"] = eventpath.between(path_before, eventpath.snapshot(
                sso_urls, self.stack.loyalty_urls, event_topic))
        base = {"name": name, "title": title, "kind": kind, "generator": "python",
                "connections": self.opts.driver_concurrency, "threads": 1, **extra}
        self.record(base, result, window, None)

    # -- the sequence --------------------------------------------------------------------

    def run(self) -> None:
        stack, seeded = self.stack, self.dep.seeded
        users = {"BENCH_USERS": str(seeded.users_file)}
        sso, loyalty = stack.sso, stack.loyalty
        sso_urls = [f"http://127.0.0.1:{p}" for p in stack.sso_ports]

        self.wrk("ceiling_bare_loyalty", "Bare GET /loyalty/healthz (same stack, no auth, no DB)",
                 "ceiling", "bare", f"{loyalty}/loyalty/healthz", {200}, {})
        self.go_ceiling()
        self.pgbench("ceiling_pg_balance", "pgbench: SQL of the balance read", "balance")
        self.prime_tokens(f"{loyalty}/loyalty/me", users)
        self.twins(
            {"name": "balance", "title": "Authenticated balance read", "script": "balance",
             "url": f"{loyalty}/loyalty/me", "ok": {200}, "env": users},
            {"name": "seed_balance", "title": "Seed-compatible GET /loyalty/{uuid} (own account)",
             "script": "seed_balance", "url": f"{loyalty}/loyalty", "ok": {200}, "env": users})

        self.pgbench("ceiling_pg_withdrawal", "pgbench: SQL of the withdrawal", "withdrawal")
        self.twins(
            {"name": "withdrawal", "title": "Withdrawal (1 point)", "script": "withdrawal",
             "url": f"{loyalty}/loyalty/me/withdrawals", "ok": {201}, "env": users,
             "method": "POST"},
            {"name": "seed_withdrawal", "title": "Seed-compatible POST /loyalty (operation w)",
             "script": "seed_withdrawal", "url": f"{loyalty}/loyalty", "ok": {200},
             "env": users, "method": "POST"})

        self.wrk("ceiling_bare_sso", "Bare GET /auth/healthz (same stack, no auth, no DB)",
                 "ceiling", "bare", f"{sso}/auth/healthz", {200}, {})
        refresh_in = seeded.refresh_file
        refresh_out = seeded.token_dir / "refresh-next.txt"
        refresh_env = {"BENCH_REFRESH": str(refresh_in), "BENCH_REFRESH_OUT": str(refresh_out)}

        def continue_chains() -> None:
            # The warm-up spent the file's first tokens; measure on the tokens it handed back.
            if refresh_out.exists():
                shutil.copyfile(refresh_out, refresh_in)

        self.wrk("refresh", "Refresh (token rotation, chained)", "scenario", "refresh",
                 f"{sso}/auth/refresh", {200}, refresh_env, method="POST",
                 before_measure=continue_chains)

        self.argon2()
        a = self.dep.settings.sso.argon2
        self.wrk("login", f"Password login (Argon2id m={a.memory_kib} KiB, t={a.time_cost}, "
                 f"p={a.parallelism})", "scenario", "login", f"{sso}/auth/login", {200},
                 {"BENCH_LOGINS": str(seeded.logins_file), "BENCH_PASSWORD": PASSWORD},
                 connections=self.opts.login_connections, method="POST")

        opts = self.opts
        if self.wanted("registration_bonus"):
            def registrations(duration: float, tag: str) -> Any:
                return drivers.registration_to_bonus(
                    sso_urls, stack.loyalty_urls, duration=duration,
                    concurrency=opts.driver_concurrency, poll_interval=opts.poll_interval,
                    password=PASSWORD, tag=f"{tag}{int(time.time())}",
                    expected_bonus=self.dep.settings.loyalty.welcome_bonus)

            # Warmed up like the wrk scenarios: in five short runs the three slowest of ~110
            # delays (96-165 ms: one-off work on a cold path, not traced further) were all
            # among the first four registrations, and so made the p99.
            self.driver(
                "registration_bonus", "Registration → bonus visible at loyalty (Kafka)",
                "latency", registrations(opts.mode.duration, ""),
                warmup=(registrations(opts.mode.warmup, "warmup-")
                        if opts.mode.warmup else None),
                event_topic=self.dep.settings.events.kafka.registration_topic,
                request="POST /auth/registration → GET /loyalty/me until 200")
        if self.wanted("logout_refusal"):
            sessions = seeded.logout_sessions[:opts.mode.logouts]
            self.driver(
                "logout_refusal", f"Logout → refused at loyalty ({len(sessions)} logouts)",
                "latency", drivers.logout_to_refusal(
                    sso_urls, stack.loyalty_urls, sessions,
                    concurrency=opts.driver_concurrency,
                    poll_interval=opts.poll_interval),
                request="POST /auth/logout → GET /loyalty/me until 401")
        if self.wanted("logout_refusal_broker_kill"):
            self.logout_under_broker_kill()

    def logout_under_broker_kill(self) -> None:
        """Logouts right after one of the brokers is SIGKILLed; it is restarted after them."""
        stack, opts = self.stack, self.opts
        if not isinstance(stack.kafka, KafkaCluster):
            log("logout_refusal_broker_kill skipped: needs --brokers 3")
            return
        cluster: KafkaCluster = stack.kafka
        node = cluster.node_ids[0]
        start = opts.mode.logouts
        sessions = self.dep.seeded.logout_sessions[start:start + opts.mode.kill_logouts]
        self.driver(
            "logout_refusal_broker_kill",
            f"Logout → refused at loyalty, broker {node} of {len(cluster.node_ids)} SIGKILLed "
            f"just before ({len(sessions)} logouts)",
            "latency", drivers.logout_to_refusal_under_broker_kill(
                [f"http://127.0.0.1:{p}" for p in stack.sso_ports], stack.loyalty_urls,
                sessions, kill=lambda: cluster.kill_node(node),
                restore=lambda: cluster.start_node(node, timeout=120),
                concurrency=opts.driver_concurrency, poll_interval=opts.poll_interval),
            request="SIGKILL broker; POST /auth/logout → GET /loyalty/me until 401",
            killed_broker=node)


def machine_info() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    try:
        autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        autogroup = None
    return {"cpus": NCPU, "cpu_model": model, "memory_gib": round(mem_kib / 1024 / 1024, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "sched_autogroup": autogroup}


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def git_revision() -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(BENCH_DIR.parent), "describe", "--always",
                               "--dirty"], capture_output=True, text=True, check=False)
    except OSError:
        return None
    return proc.stdout.strip() or None


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="short")
    parser.add_argument("--out", type=Path,
                        help="results directory (default: bench/results for the short mode, "
                             "bench/results/full for the full one)")
    parser.add_argument("--connections", type=int, default=16,
                        help="wrk connections for the HTTP scenarios and bare endpoints")
    parser.add_argument("--login-connections", type=int, default=8)
    parser.add_argument("--pg-clients", type=int, default=16, help="pgbench clients")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--wrk-cpus", help="pin wrk with taskset -c (e.g. 1); default: unpinned")
    parser.add_argument("--driver-concurrency", type=int, default=2,
                        help="parallel registrations / logouts in the event scenarios")
    parser.add_argument("--poll-interval-ms", type=float, default=5.0)
    parser.add_argument("--brokers", type=int, default=3, choices=[1, 3],
                        help="Kafka brokers (3: a KRaft cluster, needed by "
                             "logout_refusal_broker_kill)")
    parser.add_argument("--broker-warmup", type=float, default=10.0, metavar="SECONDS",
                        help="warm the new brokers' JVMs with acks=all produce requests "
                             "before seeding (0: measure cold brokers); see bench/README.md")
    parser.add_argument("--sso-processes", type=int, default=NCPU,
                        help="authloyalty sso processes (default: one per core, see "
                             "bench/README.md)")
    parser.add_argument("--loyalty-processes", type=int, default=NCPU,
                        help="authloyalty loyalty processes (default: one per core)")
    parser.add_argument("--settle", type=float,
                        help="before each measurement wait up to this many seconds for the "
                             f"machine to be < {SETTLED_BUSY_PCT:g} %% busy (default: short 5, "
                             "full 60)")
    parser.add_argument("--service-env", action="append", default=[], metavar="KEY=VALUE",
                        help="an AUTHLOYALTY_* override for every service process, for "
                             "experiments (e.g. AUTHLOYALTY_EVENTS__RELAY_POLL_INTERVAL_SECONDS"
                             "=0.1); recorded in the results")
    parser.add_argument("--only", help="comma-separated scenario names (development)")
    parser.add_argument("--keep", action="store_true",
                        help="leave the stack's scratch directory (logs) behind")
    args = parser.parse_args(argv)
    out = args.out or (BENCH_DIR / "results" if args.mode == "short"
                       else BENCH_DIR / "results" / args.mode)
    return Options(mode=MODES[args.mode], out=out, connections=args.connections,
                   login_connections=args.login_connections, pg_clients=args.pg_clients,
                   wrk_threads=args.wrk_threads, wrk_cpus=args.wrk_cpus,
                   driver_concurrency=args.driver_concurrency,
                   poll_interval=args.poll_interval_ms / 1000,
                   only=set(args.only.split(",")) if args.only else None, keep=args.keep,
                   sso_processes=args.sso_processes, loyalty_processes=args.loyalty_processes,
                   settle=args.settle if args.settle is not None
                   else (5.0 if args.mode == "short" else 60.0),
                   service_env=_service_env(parser, args.service_env), brokers=args.brokers,
                   broker_warmup=args.broker_warmup)


def _service_env(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("AUTHLOYALTY_"):
            parser.error(f"--service-env wants AUTHLOYALTY_KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    loadgen.ensure_tools()
    stop_on_sigterm()
    started_at = datetime.now(UTC)
    revision = git_revision()  # the code the services start with, not what is there at the end
    load_before = loadavg()
    log(f"mode {opts.mode.name}: {opts.mode.duration:g} s per scenario after "
        f"{opts.mode.warmup:g} s of warm-up; load average now {load_before}")
    dep = deploy(users=USERS, refresh_sessions=opts.mode.refresh_sessions,
                 logout_sessions=opts.mode.logouts + opts.mode.kill_logouts,
                 distinct_hashes=opts.mode.distinct_hashes,
                 sso_processes=opts.sso_processes, loyalty_processes=opts.loyalty_processes,
                 service_env=opts.service_env, brokers=opts.brokers,
                 broker_warmup=opts.broker_warmup)
    runner = Runner(opts, dep)
    consistency: dict[str, int] = {}
    sql_shapes: dict[str, Any] = {}
    token_algorithms: list[dict[str, Any]] = []
    failed: BaseException | None = None
    try:
        first_token = dep.seeded.users_file.read_text().split("\n", 1)[0].split()[1]
        sql_shapes = sqlcheck.check(dep.stack, first_token)
        for name, shape in sql_shapes.items():
            log(f"SQL of {name}: service {shape['service']}, pgbench {shape['pgbench']}"
                + ("" if shape["match"]
                   else f"  <-- MISMATCH: update bench/sql/ (words: {shape['words']})"))
        runner.run()
        consistency = seeding.ledger_consistent(dep.stack.loyalty_db_url)
        token_algorithms = tokencost.measure()
        log("token signatures: " + ", ".join(
            f"{t['algorithm']} verify {t['verify_us']} us" for t in token_algorithms))
        log(f"ledger check: {consistency}")
    except BaseException as exc:  # still write what was measured
        failed = exc
        log(f"run failed: {exc!r}")
    finally:
        pg_version = dep.stack.pg_version() if dep.stack.pg else None
        config = dep.stack.config()
        dep.stack.stop(keep=opts.keep)
        if opts.keep:
            log(f"stack directory kept: {dep.stack.root}")
    a = dep.settings.sso.argon2
    document = {
        "meta": {
            "mode": opts.mode.name,
            "started_at": started_at.isoformat(timespec="seconds"),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "git": revision,
            "machine": machine_info(),
            "load_average_before": load_before,
            "load_average_after": loadavg(),
            "versions": {"postgres": pg_version, "wrk": loadgen.wrk_version()},
            "durations": {"warmup_s": opts.mode.warmup, "measure_s": opts.mode.duration,
                          "broker_warmup_s": opts.broker_warmup,
                          "broker_warmup_requests": dep.broker_warmup_requests},
            "provisioning_s": dep.provision_seconds,
            "deployment": {
                "processes": f"{opts.sso_processes} x `authloyalty sso --config`, "
                             f"{opts.loyalty_processes} x `authloyalty loyalty --config` "
                             "(each a single asyncio process, uvicorn in process, in a session "
                             "of its own, as is wrk)",
                "sso_processes": opts.sso_processes,
                "loyalty_processes": opts.loyalty_processes,
                "database": "PostgreSQL, one database per service, durable (fsync, "
                            "synchronous_commit on)",
                "events": f"Kafka ({opts.brokers} KRaft broker{'s' if opts.brokers > 1 else ''}"
                          f", replication factor {min(3, opts.brokers)})",
                "pool_size": dep.settings.loyalty.database.pool_size,
                "argon2": {"memory_kib": a.memory_kib, "time_cost": a.time_cost,
                           "parallelism": a.parallelism},
                "config": config,
                "env_overrides": opts.service_env,
            },
            "seed": {"users": dep.seeded.users, "start_balance": seeding.START_BALANCE,
                     "distinct_argon2_hashes": dep.seeded.distinct_hashes,
                     "refresh_sessions": opts.mode.refresh_sessions,
                     "logout_sessions": opts.mode.logouts,
                     "broker_kill_logout_sessions": opts.mode.kill_logouts},
            "load": {"wrk_connections": opts.connections,
                     "wrk_login_connections": opts.login_connections,
                     "wrk_threads": opts.wrk_threads, "wrk_cpus": opts.wrk_cpus,
                     "pgbench_clients": opts.pg_clients,
                     "driver_concurrency": opts.driver_concurrency,
                     "poll_interval_ms": opts.poll_interval * 1000},
            "ledger_check": consistency,
            "sql_check": sql_shapes,
            "token_priming": runner.priming,
            "token_algorithms": token_algorithms,
            "failed": repr(failed) if failed else None,
        },
        "scenarios": runner.records,
    }
    report.finish(document)
    paths = report.write(document, opts.out)
    log("results: " + ", ".join(str(p) for p in paths))
    print((opts.out / "latest.md").read_text())
    if failed is not None:
        raise failed
    problems = report.problems(document)
    for problem in problems:
        log(f"problem: {problem}")
    return 1 if any(p.startswith("error") for p in problems) else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
