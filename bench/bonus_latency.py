"""Registration → welcome bonus visible, through the whole default topology.

    python bench/bonus_latency.py [--users 200] [--workers 4] [--dir DIR] [--out DIR]

Brings up ``python -m devstack up`` with its defaults (HA PostgreSQL, three Kafka brokers, the
Schema Registry, 2 sso, 1 loyalty, the nginx gateway, Jaeger, Prometheus) on free ports in a
scratch directory, or uses the running stack in ``--dir``. Each of ``--workers`` threads
registers users one after another through the gateway (``POST /auth/registration``) and polls
``GET /loyalty/me`` with the new access token every 5 ms until it answers 200: the time from
the registration's 201 to that 200 is the user's delay (outbox → relay → registry → Kafka →
loyalty's consumer → its database → the read replica loyalty reads from). Also records the
registry's start time (its own log line) and resident memory.

Results: ``bench/results/bonus-latency-latest.{md,json}``. A stack it started is stopped and its
directory removed at the end (``--keep`` leaves it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(ROOT))  # devstack/ (not installed)

from benchlib.stats import summarize  # noqa: E402

from devstack.common import free_ports  # noqa: E402
from devstack.postgres import scratch_dir  # noqa: E402

POLL = 0.005
GIVE_UP = 60.0
WARM_FROM = 21  # the second summary starts with this registration


def log(message: str) -> None:
    print(f"[{datetime.now(UTC).strftime('%H:%M:%S')}] {message}", flush=True)


def devstack(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devstack", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


@contextlib.contextmanager
def stack(directory: Path | None, keep: bool) -> Iterator[Path]:
    """The stack in ``directory``, or a default one brought up (and down) here."""
    if directory is not None:
        yield directory
        return
    scratch = scratch_dir("authloyalty-bonus-")
    https, grpc, prom = free_ports(3, {8000, 8001, 8443, 44044, 9090})
    argv = ["up", "--dir", str(scratch), "--no-443", "--https-port", str(https),
            "--http2-grpc-port", str(grpc), "--prometheus-port", str(prom)]
    try:
        log("devstack " + " ".join(argv))
        proc = devstack(*argv)
        if proc.returncode != 0:
            raise RuntimeError(f"devstack up failed:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
        yield scratch
    finally:
        log("devstack down")
        devstack("down", "--dir", str(scratch), timeout=300)
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)


def registry_numbers(state: dict[str, Any]) -> dict[str, Any]:
    """The registry's start time (its own log line) and resident memory now."""
    entry = next((c for c in state["components"] if c["name"] == "registry"), None)
    if entry is None:
        return {}
    found = re.findall(r"started in ([0-9.]+)s", Path(entry["log"]).read_text(errors="replace"))
    rss_kib = None
    with contextlib.suppress(OSError, TypeError):
        status = Path(f"/proc/{entry['pid']}/status").read_text()
        rss_kib = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return {"started_in_s": float(found[-1]) if found else None,
            "rss_mib": round(rss_kib / 1024) if rss_kib else None}


class Measurement:
    """Registrations and the delay until each one's bonus is visible."""

    def __init__(self, gateway: str, ca: str, users: int) -> None:
        self.gateway, self.ca, self.users = gateway, ca, users
        self.delays: list[tuple[int, float]] = []  # (registration number, seconds)
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.next = 0

    def worker(self) -> None:
        with httpx.Client(base_url=self.gateway, verify=self.ca, timeout=30) as client:
            while True:
                with self.lock:
                    if self.next >= self.users:
                        return
                    self.next += 1
                    number = self.next
                self.one(client, number)

    def one(self, client: httpx.Client, number: int) -> None:
        r = client.post("/auth/registration", json={
            "email": f"bonus-{uuid4().hex[:12]}@example.com", "password": "long enough"})
        if r.status_code != 201:
            with self.lock:
                self.errors.append(f"registration {r.status_code}: {r.text[:160]}")
            return
        registered = time.monotonic()
        auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
        while time.monotonic() - registered < GIVE_UP:
            me = client.get("/loyalty/me", headers=auth)
            if me.status_code == 200:
                with self.lock:
                    self.delays.append((number, time.monotonic() - registered))
                return
            if me.status_code != 404:
                with self.lock:
                    self.errors.append(f"/loyalty/me {me.status_code}: {me.text[:160]}")
                return
            time.sleep(POLL)
        with self.lock:
            self.errors.append(f"no bonus after {GIVE_UP:.0f} s")


def render(doc: dict[str, Any]) -> str:
    d, w, r = doc["delay_ms"], doc["delay_ms_warm"], doc["registry"]
    return "\n".join([
        "# Registration → welcome bonus visible (default topology)", "",
        f"Run {doc['started_at']} at `{doc['revision']}`: `{doc['command']}`.", "",
        f"Topology: {', '.join(doc['components'])}.", "",
        f"{doc['users']} registrations through the gateway by {doc['workers']} workers, each "
        "followed by `GET /loyalty/me` every 5 ms until 200.", "",
        "| count | p50 ms | p90 ms | p99 ms | max ms | mean ms | errors |",
        "|---|---|---|---|---|---|---|",
        f"| {d['count']} | {d['p50']} | {d['p90']} | {d['p99']} | {d['max']} | {d['mean']} "
        f"| {len(doc['errors'])} |",
        f"| {w['count']} (registrations {doc['warm_from']}-{doc['users']}) | {w['p50']} "
        f"| {w['p90']} | {w['p99']} "
        f"| {w['max']} | {w['mean']} | |", "",
        "The first registrations after `up` also pay for each relay's first schema registration, "
        "the producers' first connections and loyalty's first fetches; the second row leaves "
        f"the first {doc['warm_from'] - 1} out.", "",
        f"Schema Registry (Apicurio {doc['registry_version']}): started in "
        f"{r.get('started_in_s')} s (its own log line, while the rest of the stack started), "
        f"resident memory {r.get('rss_mib')} MiB after the run.", ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--dir", type=Path, help="a running stack (default: bring one up)")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    with stack(args.dir, args.keep) as directory:
        state = json.loads(devstack("status", "--dir", str(directory), "--json").stdout)
        nginx = next(c for c in state["components"] if c["name"] == "nginx")
        run = Measurement(nginx["urls"]["https"][0], nginx["ca"], args.users)
        log(f"{args.users} registrations through {run.gateway}")
        with ThreadPoolExecutor(args.workers) as pool:
            for _ in range(args.workers):
                pool.submit(run.worker)
        registry = registry_numbers(state)
    from devstack.registry import VERSION

    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=False).stdout.strip()
    doc = {"started_at": started_at, "revision": revision,
           "command": "python bench/bonus_latency.py " + " ".join(argv or sys.argv[1:]),
           "components": [c["name"] for c in state["components"]], "users": args.users,
           "workers": args.workers, "delay_ms": summarize([d for _, d in run.delays]),
           "warm_from": WARM_FROM,
           "delay_ms_warm": summarize([d for n, d in run.delays if n >= WARM_FROM]),
           "delays_ms_by_registration": [[n, round(d * 1000, 1)] for n, d in sorted(run.delays)],
           "errors": run.errors,
           "registry": registry, "registry_version": VERSION}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bonus-latency-latest.json").write_text(json.dumps(doc, indent=2) + "\n")
    (args.out / "bonus-latency-latest.md").write_text(render(doc))
    log(render(doc))
    return 1 if run.errors else 0


if __name__ == "__main__":
    sys.exit(main())
