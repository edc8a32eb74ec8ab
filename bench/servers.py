"""HTTP servers for loyalty: our uvicorn (production) against granian, by throughput, p99 and CPU.

    python bench/servers.py [--workers 1,2,4] [--rounds 3] [--duration 10] [--connections 32]
                            [--routes healthz,balance] [--out bench/results]

One throwaway deployment as ``make bench`` provisions it (``benchlib.stack``: a durable
PostgreSQL, one Kafka broker, signing keys, the generated config, migrations; ``--users`` users
seeded straight into the databases with offline-minted tokens; one ``authloyalty sso`` for the
JWKS and the topics). Then, for each process count N of ``--workers``, loyalty is served by:

* **uvicorn**, as in production: N ``authloyalty loyalty --config FILE`` processes, each on a
  port of its own (``AUTHLOYALTY_LOYALTY__HTTP_PORT``), each running uvicorn in process with
  httptools, uvloop and ``platform/httpserver.py``'s protocol; wrk's threads are spread over
  the ports (``BENCH_PORTS``, ``lua/common.lua``);
* **granian** (Rust/hyper): ``granian --interface asgi --loop uvloop --http 1 --workers N
  --factory benchlib.asgi_entry:create_app``, one port shared by the N worker processes; the
  application is the one ``authloyalty loyalty`` builds (``benchlib/asgi_entry.py``).

Each configuration is started, waited for until ready, warmed up and measured with wrk on each
route of ``--routes`` (``healthz``: the bare ``GET /loyalty/healthz``; ``balance``: the
authenticated ``GET /loyalty/me`` of ``lua/balance.lua``; ``withdrawal``), then stopped.
Rounds alternate the servers (the order flips every round); the tables give medians over the
rounds. Server CPU is user + system time from ``/proc/<pid>/stat`` of every server process and
its descendants (granian's main process and its workers, threads included) over the
measurement; per request, and as requests per server CPU-second.

Before the rounds, the request-head probe: one request with a 64 KiB header field, one with a
1 MiB field and one with 101 fields, each once, against uvicorn and granian (and granian with
``--http1-buffer-size 16384``, its only bound on a head), recording what each answered.

Results: ``<out>/servers-latest.md`` and ``.json`` (the Markdown also on stdout).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))  # devstack/ (not installed)

from benchlib import loadgen  # noqa: E402
from benchlib import seed as seeding  # noqa: E402
from benchlib.cpu import CpuWindow, Group, children_of, postgres_group, process_cpu  # noqa: E402
from benchlib.stack import PASSWORD, ROOT, Service, Stack, log, stop_on_sigterm  # noqa: E402
from run import git_revision, loadavg, machine_info  # noqa: E402

from authloyalty.settings import Settings, load_settings  # noqa: E402
from devstack.common import clean_env, free_port, free_ports  # noqa: E402
from devstack.postgres import scratch_dir  # noqa: E402


@dataclass(frozen=True)
class Route:
    """A wrk script of ``bench/lua`` on one path, and the statuses that count as answered."""

    script: str
    method: str
    path: str
    ok: frozenset[int]
    needs_users: bool


ROUTES = {
    "healthz": Route("bare", "GET", "/loyalty/healthz", frozenset({200}), False),
    "balance": Route("balance", "GET", "/loyalty/me", frozenset({200}), True),
    "withdrawal": Route("withdrawal", "POST", "/loyalty/me/withdrawals", frozenset({201}), True),
}
SERVERS = ("uvicorn", "granian")
GRANIAN_FLAGS = ("--interface", "asgi", "--loop", "uvloop", "--http", "1")
ASGI_TARGET = "benchlib.asgi_entry:create_app"
# The request-head probe: (what, bytes of one header field's value, extra header fields).
HEAD_PROBES = (("one 64 KiB header field", 64 * 1024, 0),
               ("one 1 MiB header field", 1024 * 1024, 0),
               ("101 header fields", 0, 101))
PROBE_BUFFER_SIZE = 16 * 1024  # granian's --http1-buffer-size in the probe's third server


# -- servers ------------------------------------------------------------------------------------


class Server(Protocol):
    """One configuration under test: started, measured, stopped."""

    name: str
    workers: int
    ports: list[int]

    def start(self) -> None: ...

    def roots(self) -> list[int]: ...

    def stop(self) -> None: ...


def tree(roots: Sequence[int]) -> list[int]:
    """``roots`` and every live descendant of theirs."""
    found: list[int] = []
    pending = list(roots)
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children_of(pid))
    return found


class Uvicorn:
    """``workers`` x ``authloyalty loyalty --config FILE``, each on a port of its own."""

    name = "uvicorn"

    def __init__(self, stack: Stack, workers: int, logs: Path, tag: str) -> None:
        self.workers = workers
        self.ports = free_ports(workers)
        self.services = [
            Service("loyalty", stack.config_path, f"http://127.0.0.1:{port}/loyalty/healthz",
                    logs / f"{tag}-uvicorn-{workers}-{i + 1}.log",
                    {**stack.service_env, "AUTHLOYALTY_LOYALTY__HTTP_PORT": str(port)})
            for i, port in enumerate(self.ports)]

    def start(self) -> None:
        with concurrent.futures.ThreadPoolExecutor(len(self.services)) as pool:
            for started in [pool.submit(s.start) for s in self.services]:
                started.result()

    def roots(self) -> list[int]:
        return [s.pid for s in self.services if s.pid is not None]

    def stop(self) -> None:
        for service in self.services:
            with contextlib.suppress(Exception):
                service.stop()


class Granian:
    """``granian ... --workers N`` serving ``benchlib.asgi_entry`` on one port."""

    name = "granian"

    def __init__(self, stack: Stack, workers: int, logs: Path, tag: str,
                 extra: Sequence[str] = ()) -> None:
        self.workers = workers
        self.ports = [free_port()]
        self.config = stack.config_path
        self.extra = list(extra)
        self.log_path = logs / f"{tag}-granian-{workers}.log"
        self.env = {**stack.service_env}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def argv(self) -> list[str]:
        return [granian_bin(), *GRANIAN_FLAGS, "--workers", str(self.workers),
                "--host", "127.0.0.1", "--port", str(self.ports[0]), *self.extra,
                "--factory", ASGI_TARGET]

    def start(self, timeout: float = 90.0) -> None:
        env = clean_env(**self.env, CONFIG_PATH=str(self.config), PYTHONPATH=str(BENCH_DIR))
        with self.log_path.open("ab") as out:
            # A session of its own: stop() can reach a worker its parent left behind.
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                            env=env, cwd=ROOT, start_new_session=True)
        url = f"http://127.0.0.1:{self.ports[0]}/loyalty/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"granian exited early:\n{tail(self.log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"granian not healthy in {timeout} s:\n{tail(self.log_path)}")

    def roots(self) -> list[int]:
        return [self.process.pid] if self.process is not None else []

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # granian stops its workers, their lifespans
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        # Workers outlive a killed parent: whatever is left of the session goes too.
        for _ in range(50):
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def granian_bin() -> str:
    for candidate in (Path(sys.executable).parent / "granian", ROOT / ".venv" / "bin" / "granian"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("granian")
    if not found:
        raise SystemExit("granian is not installed: make bench installs the bench extra "
                         "(or uv sync --frozen --inexact --extra dev --extra bench)")
    return found


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def make_server(kind: str, stack: Stack, workers: int, logs: Path, tag: str) -> Server:
    if kind == "uvicorn":
        return Uvicorn(stack, workers, logs, tag)
    return Granian(stack, workers, logs, tag)


def wait_ready(server: Server, timeout: float = 90.0) -> None:
    """Until ``/loyalty/ready`` answers 200 (revocations read, database up): on every port,
    and on a shared port over fresh connections, 8 per worker in a row (each connection is
    accepted by whichever worker takes it)."""
    needed = 1 if len(server.ports) > 1 or server.workers == 1 else 8 * server.workers
    deadline = time.monotonic() + timeout
    for port in server.ports:
        in_a_row = 0
        while in_a_row < needed:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name} x{server.workers} not ready in {timeout} s")
            status = 0
            with contextlib.suppress(httpx.HTTPError):
                status = httpx.get(f"http://127.0.0.1:{port}/loyalty/ready",
                                   headers={"Connection": "close"}, timeout=2.0).status_code
            in_a_row = in_a_row + 1 if status == 200 else 0
            if status != 200:
                time.sleep(0.1)
    processes = len(tree(server.roots()))
    expected = server.workers + (1 if server.name == "granian" else 0)
    if processes != expected:
        raise RuntimeError(f"{server.name} x{server.workers}: {processes} processes, "
                           f"{expected} expected")


def rss_mib(pids: Sequence[int]) -> float:
    """Resident memory of ``pids``, summed."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


# -- the request-head probe -----------------------------------------------------------------


def probe_head(port: int, what: str, value_bytes: int, fields: int,
               timeout: float = 15.0) -> dict[str, Any]:
    """Send one ``GET /loyalty/healthz`` whose head is too big; what came back, and whether
    the server still answers afterwards."""
    lines = ["GET /loyalty/healthz HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    if value_bytes:
        lines.append("X-Big: " + "a" * value_bytes)
    lines += [f"X-Field-{i}: {i}" for i in range(fields)]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    started = time.monotonic()
    sent_all, send_error, received, read_error = False, None, b"", None
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(head)
            sent_all = True
        except OSError as exc:
            send_error = type(exc).__name__
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            read_error = f"no end of answer in {timeout:g} s"
        except OSError as exc:
            read_error = type(exc).__name__
    seconds = time.monotonic() - started
    status_line = received.split(b"\r\n", 1)[0].decode(errors="replace") if received else ""
    parts = status_line.split(" ", 2)
    status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
    if status is not None:
        answer = status_line.split(" ", 1)[1]
    elif read_error:
        answer = f"no answer ({read_error})"
    else:
        answer = "no answer (connection closed)"
    alive = False
    with contextlib.suppress(httpx.HTTPError):
        alive = httpx.get(f"http://127.0.0.1:{port}/loyalty/healthz",
                          timeout=5.0).status_code == 200
    return {"request": what, "head_bytes": len(head), "status": status, "answer": answer,
            "sent_all": sent_all, "send_error": send_error, "read_error": read_error,
            "answer_bytes": len(received), "seconds": round(seconds, 3),
            "alive_after": alive}


def head_probes(stack: Stack, logs: Path) -> list[dict[str, Any]]:
    """Each probe once against uvicorn, granian, and granian with a small HTTP/1 buffer."""
    servers: list[tuple[str, Server]] = [
        ("uvicorn (authloyalty loyalty)", Uvicorn(stack, 1, logs, "probe")),
        ("granian (defaults)", Granian(stack, 1, logs, "probe")),
        (f"granian --http1-buffer-size {PROBE_BUFFER_SIZE}",
         Granian(stack, 1, logs, "probe-buffer",
                 extra=["--http1-buffer-size", str(PROBE_BUFFER_SIZE)])),
    ]
    results = []
    for label, server in servers:
        try:
            server.start()
            for what, value_bytes, fields in HEAD_PROBES:
                result = {"server": label, **probe_head(server.ports[0], what, value_bytes,
                                                        fields)}
                log(f"head probe: {label}, {what}: {result['answer']} "
                    f"({result['seconds']} s; answers afterwards: {result['alive_after']})")
                results.append(result)
        finally:
            server.stop()
    return results


# -- measuring -----------------------------------------------------------------------------------


@dataclass
class Options:
    workers: list[int]
    routes: list[str]
    rounds: int
    duration: int
    warmup: int
    connections: int
    users: int
    out: Path
    keep: bool
    probe: bool
    command: str


@dataclass
class TreeSampler:
    """A CPU group of a server's process tree that keeps what it read, per process."""

    server: Server
    samples: list[dict[int, float]] = field(default_factory=list)

    def __call__(self) -> dict[int, float]:
        sample = {pid: process_cpu(pid) for pid in tree(self.server.roots())}
        self.samples.append(sample)
        return sample

    def per_process(self) -> list[float]:
        """CPU seconds of each process between the last two samples, largest first."""
        before, after = self.samples[-2], self.samples[-1]
        return sorted((round(after[pid] - before.get(pid, 0.0), 3) for pid in after),
                      reverse=True)


def measure(server: Server, route_name: str, opts: Options, stack: Stack,
            users_file: Path) -> dict[str, Any]:
    """Warm-up, then one wrk run of ``route_name``, with the CPU of everything around it."""
    route = ROUTES[route_name]
    env = {"BENCH_USERS": str(users_file)} if route.needs_users else {}
    # As many wrk threads for both servers: one per uvicorn process, at least two.
    threads = min(opts.connections, max(2, server.workers))
    ports = server.ports
    env["BENCH_PORTS"] = ",".join(map(str, ports)) if len(ports) > 1 else ""
    url = f"http://127.0.0.1:{ports[0]}{route.path}"
    if opts.warmup:
        loadgen.run_wrk(route.script, url, duration=opts.warmup, connections=opts.connections,
                        threads=threads, env=env)
    if route.needs_users:
        stack.checkpoint()
    sampler = TreeSampler(server)
    window = CpuWindow([Group("server", sampler), postgres_group(stack.postmaster_pid)]).start()
    raw = loadgen.run_wrk(route.script, url, duration=opts.duration,
                          connections=opts.connections, threads=threads, env=env)
    window.stop()
    window.add("wrk", raw["cpu_seconds"])
    summary = loadgen.wrk_summary(raw, set(route.ok))
    seconds = window.seconds()
    shares = window.report()["share_pct"]
    requests = max(summary["requests"], 1)
    server_cpu = seconds["server"]
    return {
        "server": server.name, "workers": server.workers, "route": route_name,
        "request": f"{route.method} {route.path}", "connections": opts.connections,
        "threads": threads, "ports": len(ports),
        "requests": summary["requests"], "duration_s": summary["duration_s"],
        "throughput_rps": summary["throughput_rps"], "latency_ms": summary["latency_ms"],
        "errors": summary["errors"], "error_detail": summary["error_detail"],
        "statuses": summary["statuses"],
        "server_cpu_s": round(server_cpu, 3),
        "server_cpu_us_per_request": round(server_cpu / requests * 1e6, 1),
        "requests_per_server_cpu_s": round(requests / server_cpu, 1) if server_cpu else None,
        "server_cores": round(server_cpu / window.wall, 2) if window.wall else None,
        "per_process_cpu_s": sampler.per_process(),
        "postgres_cpu_us_per_request": round(seconds["postgres"] / requests * 1e6, 1),
        "wrk_cpu_pct": shares.get("wrk"), "other_cpu_pct": shares.get("other"),
        "wall_s": round(window.wall, 3),
    }


def run_rounds(opts: Options, stack: Stack, users_file: Path, logs: Path,
               records: list[dict[str, Any]], memory: list[dict[str, Any]]) -> None:
    for round_no in range(1, opts.rounds + 1):
        order = SERVERS if round_no % 2 else tuple(reversed(SERVERS))
        for workers in opts.workers:
            for kind in order:
                server = make_server(kind, stack, workers, logs, f"r{round_no}")
                try:
                    started = time.monotonic()
                    server.start()
                    wait_ready(server)
                    log(f"round {round_no}: {kind} x{workers} ready in "
                        f"{time.monotonic() - started:.1f} s on port(s) {server.ports}")
                    for route in opts.routes:
                        rec = {"round": round_no, **measure(server, route, opts, stack,
                                                            users_file)}
                        records.append(rec)
                        lat = rec["latency_ms"]
                        log(f"round {round_no} {kind:>7} x{workers} {route:<10} "
                            f"{rec['throughput_rps']:>8.0f} req/s  p50 {lat['p50']} ms  "
                            f"p99 {lat['p99']} ms  {rec['server_cpu_us_per_request']:>6.0f} "
                            f"µs CPU/req  errors {rec['errors']}  (other "
                            f"{rec['other_cpu_pct']} % of the machine)")
                    memory.append({"round": round_no, "server": kind, "workers": workers,
                                   "rss_mib": rss_mib(tree(server.roots()))})
                finally:
                    server.stop()


# -- results ---------------------------------------------------------------------------------


def medians(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (route, workers, server): the median of each figure over the rounds."""
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["route"], rec["workers"], rec["server"]), []).append(rec)
    out = []
    for (route, workers, server), runs in groups.items():

        def med(key: str, runs: list[dict[str, Any]] = runs) -> float | None:
            values = [r[key] for r in runs if r[key] is not None]
            return round(statistics.median(values), 2) if values else None

        def med_latency(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return round(float(statistics.median(r["latency_ms"][key] for r in runs)), 2)

        out.append({
            "route": route, "workers": workers, "server": server, "rounds": len(runs),
            "throughput_rps": med("throughput_rps"),
            "throughput_rps_range": [min(r["throughput_rps"] for r in runs),
                                     max(r["throughput_rps"] for r in runs)],
            "p50_ms": med_latency("p50"), "p99_ms": med_latency("p99"),
            "server_cpu_us_per_request": med("server_cpu_us_per_request"),
            "requests_per_server_cpu_s": med("requests_per_server_cpu_s"),
            "server_cores": med("server_cores"),
            "errors": sum(r["errors"] for r in runs),
            "other_cpu_pct": med("other_cpu_pct"),
            "per_process_cpu_share_pct": _split(runs),
        })
    order = {name: i for i, name in enumerate(ROUTES)}
    out.sort(key=lambda m: (order.get(m["route"], 99), m["workers"], SERVERS.index(m["server"])))
    return out


def _split(runs: list[dict[str, Any]]) -> list[float]:
    """Each process's share of the server's CPU (median over rounds, largest first)."""
    shares = []
    for run in runs:
        total = sum(run["per_process_cpu_s"]) or 1.0
        shares.append([100 * s / total for s in run["per_process_cpu_s"]])
    width = min(len(s) for s in shares)
    return [round(statistics.median(s[i] for s in shares), 0) for i in range(width)]


def _f(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def markdown(doc: dict[str, Any]) -> str:
    meta = doc["meta"]
    v = meta["versions"]
    lines = [
        "# HTTP servers for loyalty: uvicorn (production) vs granian",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Run {meta['started_at']} → {meta['finished_at']}, git `{meta['git']}`, "
        f"{meta['machine']['cpus']} CPUs ({meta['machine']['cpu_model']}), load average "
        f"before {meta['load_average_before']}, after {meta['load_average_after']}.",
        f"granian {v['granian']}, uvicorn {v['uvicorn']} (httptools {v['httptools']}, uvloop "
        f"{v['uvloop']}), {v['wrk']}, PostgreSQL {v['postgres']}.",
        "",
        f"* **uvicorn**: {meta['servers']['uvicorn']}",
        f"* **granian**: {meta['servers']['granian']}",
        f"* Load: wrk, {meta['connections']} connections, {meta['duration_s']} s per "
        f"measurement after {meta['warmup_s']} s of warm-up, {meta['rounds']} round(s) "
        f"alternating the servers; {meta['users']} seeded users (`balance`: a random user's "
        "token per request, every token seen in the warm-up).",
        "* Server CPU: user + system seconds of every server process (granian: its main "
        "process and workers) over the measurement, from /proc. `req/CPU-s` = requests per "
        "second of server CPU; `cores` = server CPU / wall time; `split` = each process's "
        "share of it, largest first (granian's main process, which only supervises, is the "
        "last, ~0); `other` = CPU of the machine that neither the server, PostgreSQL nor wrk "
        "used (other work on the machine: high values make a figure noisy).",
        "",
    ]
    if meta.get("failed"):
        lines += [f"**The run failed:** `{meta['failed']}` (what was measured is below).", ""]
    lines += [f"## Medians over {meta['rounds']} round(s)", "",
              "| route | server | workers | req/s | (range) | p50 ms | p99 ms | server CPU "
              "µs/req | req/CPU-s | cores | split % | errors | other % |",
              "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for m in doc["summary"]:
        lo, hi = m["throughput_rps_range"]
        split = "/".join(f"{s:.0f}" for s in m["per_process_cpu_share_pct"])
        lines.append(
            f"| {m['route']} | {m['server']} | {m['workers']} | {_f(m['throughput_rps'])} | "
            f"{_f(lo)}-{_f(hi)} | {_f(m['p50_ms'], 2)} | {_f(m['p99_ms'], 2)} | "
            f"{_f(m['server_cpu_us_per_request'])} | {_f(m['requests_per_server_cpu_s'])} | "
            f"{_f(m['server_cores'], 2)} | {split} | {m['errors']} | "
            f"{_f(m['other_cpu_pct'], 1)} |")
    lines += ["", "## granian ÷ uvicorn", "",
              "Above 1: granian serves more requests per second, more requests per CPU-second; "
              "below 1: a lower p99.", "",
              "| route | workers | req/s | p99 | req/CPU-s |", "|---|--:|--:|--:|--:|"]
    by_key = {(m["route"], m["workers"], m["server"]): m for m in doc["summary"]}
    for route in doc["meta"]["routes"]:
        for workers in doc["meta"]["workers"]:
            g, u = by_key.get((route, workers, "granian")), by_key.get((route, workers, "uvicorn"))
            if g is None or u is None:
                continue
            ratios = [_ratio(g[key], u[key]) for key in
                      ("throughput_rps", "p99_ms", "requests_per_server_cpu_s")]
            lines.append(f"| {route} | {workers} | {' | '.join(ratios)} |")
    probes = doc.get("head_probes") or []
    if probes:
        lines += ["", "## Request heads over the limit", "",
                  f"Production refuses a request head over `loyalty.request_headers` "
                  f"(max_bytes {meta['head_limits']['max_bytes']:,}, max_fields "
                  f"{meta['head_limits']['max_fields']}) with 431 in uvicorn's protocol "
                  "(`platform/httpserver.py`). granian runs the application without it; its only "
                  "bound on a head is hyper's HTTP/1 read buffer (`--http1-buffer-size`, default "
                  "417,792 bytes). Each request was sent once (`GET /loyalty/healthz`, "
                  "`Connection: close`).", "",
                  "| server | request | head bytes | answer | seconds | answers afterwards |",
                  "|---|---|--:|---|--:|---|"]
        for p in probes:
            lines.append(f"| {p['server']} | {p['request']} | {p['head_bytes']:,} | "
                         f"{p['answer']} | {p['seconds']} | "
                         f"{'yes' if p['alive_after'] else 'no'} |")
    if doc.get("memory"):
        lines += ["", "## Resident memory after the measurements (MiB, all processes)", "",
                  "| server | workers | RSS MiB (median) |", "|---|--:|--:|"]
        mem: dict[tuple[str, int], list[float]] = {}
        for m in doc["memory"]:
            mem.setdefault((m["server"], m["workers"]), []).append(m["rss_mib"])
        for (server, workers), values in sorted(mem.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            lines.append(f"| {server} | {workers} | {statistics.median(values):,.0f} |")
    lines += ["", "## Every measurement", "",
              "| round | route | server | workers | req/s | p50 ms | p99 ms | server CPU µs/req "
              "| errors | other % |", "|--:|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in doc["records"]:
        lines.append(f"| {r['round']} | {r['route']} | {r['server']} | {r['workers']} | "
                     f"{_f(r['throughput_rps'])} | {_f(r['latency_ms']['p50'], 2)} | "
                     f"{_f(r['latency_ms']['p99'], 2)} | "
                     f"{_f(r['server_cpu_us_per_request'])} | {r['errors']} | "
                     f"{_f(r['other_cpu_pct'], 1)} |")
    return "\n".join(lines) + "\n"


def versions(stack: Stack) -> dict[str, str | None]:
    import granian
    import httptools
    import uvicorn
    import uvloop

    return {"granian": granian.__version__, "uvicorn": uvicorn.__version__,
            "httptools": httptools.__version__, "uvloop": getattr(uvloop, "__version__", None),
            "wrk": loadgen.wrk_version(),
            "postgres": stack.pg_version() if stack.pg is not None else None}


def document(opts: Options, settings: Settings | None, started_at: datetime,
             revision: str | None, load_before: list[float], vers: dict[str, str | None],
             records: list[dict[str, Any]], memory: list[dict[str, Any]],
             probes: list[dict[str, Any]], failed: BaseException | None) -> dict[str, Any]:
    limits = settings.loyalty.request_headers if settings is not None else None
    return {
        "meta": {
            "command": opts.command,
            "started_at": started_at.isoformat(timespec="seconds"),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "git": revision, "machine": machine_info(),
            "load_average_before": load_before, "load_average_after": loadavg(),
            "versions": vers, "workers": opts.workers, "routes": opts.routes,
            "rounds": opts.rounds, "duration_s": opts.duration, "warmup_s": opts.warmup,
            "connections": opts.connections, "users": opts.users,
            "servers": {
                "uvicorn": "N x `authloyalty loyalty --config FILE` (uvicorn in process, "
                           "httptools + uvloop, platform/httpserver.py's protocol), a port "
                           "each; wrk's threads spread over the ports",
                "granian": f"`granian {' '.join(GRANIAN_FLAGS)} --workers N --factory "
                           f"{ASGI_TARGET}` (bench/benchlib/asgi_entry.py), one port shared "
                           "by the N workers",
            },
            "head_limits": {"max_bytes": limits.max_bytes if limits else None,
                            "max_fields": limits.max_fields if limits else None},
            "failed": repr(failed) if failed else None,
        },
        "summary": medians(records),
        "head_probes": probes,
        "memory": memory,
        "records": records,
    }


# -- main ----------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"positive integers, comma-separated: {text!r}")
    return values


def parse_args(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=_int_list, default=[1, 2, 4],
                   help="process counts to compare, comma-separated (default 1,2,4)")
    p.add_argument("--routes", default="healthz,balance",
                   help=f"comma-separated, of: {', '.join(ROUTES)} (default healthz,balance)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds, alternating the servers; medians are reported (default 3)")
    p.add_argument("--duration", type=int, default=10, help="seconds per measurement (10)")
    p.add_argument("--warmup", type=int, default=3,
                   help="seconds of load on the route before each measurement (3; 0: none)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    p.add_argument("--users", type=int, default=200, help="seeded users (200)")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results",
                   help="where servers-latest.md and .json go (bench/results)")
    p.add_argument("--no-head-probe", action="store_true",
                   help="skip the probe of over-large request heads")
    p.add_argument("--keep", action="store_true",
                   help="leave the scratch directory (every server's log) behind")
    args = p.parse_args(argv)
    routes = [r for r in args.routes.split(",") if r]
    if unknown := set(routes) - set(ROUTES):
        p.error(f"unknown routes: {', '.join(sorted(unknown))}")
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0 or args.users < 1:
        p.error("--rounds, --duration and --users must be positive, --warmup not negative")
    if args.connections < max(2, *args.workers):
        p.error("--connections must be at least the largest worker count (and 2)")
    raw = sys.argv[1:] if argv is None else argv
    return Options(workers=args.workers, routes=routes, rounds=args.rounds,
                   duration=args.duration, warmup=args.warmup, connections=args.connections,
                   users=args.users, out=args.out, keep=args.keep, probe=not args.no_head_probe,
                   command=shlex.join([_relative(sys.executable), _relative(__file__), *raw]))


def _relative(path: str) -> str:
    """``path`` as typed from here when it lies below the current directory."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("missing wrk: apt-get install wrk")
    granian_bin()
    stop_on_sigterm()
    started_at = datetime.now(UTC)
    revision, load_before = git_revision(), loadavg()
    stack = Stack(scratch_dir("authloyalty-servers-"))
    logs = stack.root / "logs"
    logs.mkdir()
    records: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    probes: list[dict[str, Any]] = []
    settings: Settings | None = None
    vers: dict[str, str | None] = {}
    failed: BaseException | None = None
    try:
        stack.provision()
        settings = load_settings(stack.config_path)
        vers = versions(stack)
        log(f"seeding {opts.users} users")
        seeded = seeding.seed(
            sso_url=stack.sso_db_url, loyalty_url=stack.loyalty_db_url,
            keys_dir=stack.keys_dir, issuer=settings.sso.issuer,
            refresh_ttl=settings.sso.refresh_token_ttl_seconds, argon2=settings.sso.argon2,
            password=PASSWORD, token_dir=stack.root / "tokens", users=opts.users,
            refresh_sessions=0, logout_sessions=0, distinct_hashes=1)
        # sso serves the JWKS loyalty verifies tokens with, and creates the topics.
        stack.services["sso"] = Service("sso", stack.config_path, f"{stack.sso}/auth/healthz",
                                        logs / "sso.log")
        stack.services["sso"].start()
        if opts.probe:
            probes = head_probes(stack, logs)
        run_rounds(opts, stack, seeded.users_file, logs, records, memory)
    except BaseException as exc:  # still write what was measured
        failed = exc
        log(f"run failed: {exc!r}")
    finally:
        stack.stop(keep=opts.keep)
        if opts.keep:
            log(f"scratch directory kept: {stack.root}")
    doc = document(opts, settings, started_at, revision, load_before, vers, records, memory,
                   probes, failed)
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "servers-latest.json").write_text(
        json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    text = markdown(doc)
    (opts.out / "servers-latest.md").write_text(text)
    print(text)
    log(f"results: {opts.out / 'servers-latest.md'} (and .json)")
    if failed is not None:
        raise failed
    return 1 if any(r["errors"] for r in records) else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
