"""A quick A/B of loyalty's hot routes: two source trees, one PostgreSQL, alternating rounds.

    python bench/ab.py --tree before=/tmp/old/src --tree after=src [--rounds 3] [--duration 8]
                       [--routes balance,withdrawal,seed_balance,seed_withdrawal]

Each tree runs ``authloyalty up`` (embedded mode, coalescing on) on a database of its own in one
throwaway PostgreSQL; 50 registered users get 10^6 points each; then, round after round and
tree after tree, wrk drives ``GET /loyalty/me`` and ``POST /loyalty/me/withdrawals`` (the
scripts of ``bench/lua``). Reported per tree and route: requests per second and the server
process's CPU time per request (user + system, from /proc), median over the rounds. CPU per
request is the steadier number on a machine shared with other work: throughput moves with
whatever else runs, CPU per request much less. Fewer moving parts than ``make bench`` (no
Kafka, one process for both services), so use it to compare code, not to quote capacity.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # devstack/ (not installed)

from devstack.common import free_port  # noqa: E402

LUA_DIR = REPO / "bench" / "lua"
# The scripts of bench/lua this can run: /me routes, and the original's twins of them.
ROUTES = {"balance": "GET /loyalty/me", "withdrawal": "POST /loyalty/me/withdrawals",
          "seed_balance": "GET /loyalty/{uuid}", "seed_withdrawal": "POST /loyalty"}
PASSWORD = "bench password 123"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Service:
    """``authloyalty up`` of one source tree on its own database."""

    def __init__(self, name: str, src: Path, database_url: str, work: Path) -> None:
        self.name = name
        self.loyalty = free_port()
        sso, grpc = free_port(), free_port()
        data = work / name
        data.mkdir()
        env = {**os.environ, "PYTHONPATH": str(src.resolve())}
        self.log = (work / f"{name}.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "authloyalty.cli", "up", "--data-dir", str(data),
             "--database-url", database_url, "--sso-port", str(sso),
             "--loyalty-port", str(self.loyalty), "--grpc-port", str(grpc),
             "--admin-email", "admin@bench.example.com", "--admin-password", PASSWORD],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.sso_url = f"http://127.0.0.1:{sso}"
        self.loyalty_url = f"http://127.0.0.1:{self.loyalty}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.loyalty_url}/loyalty/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start; see its log")

    def seed(self, users: int, path: Path) -> None:
        with httpx.Client(timeout=30) as client:
            admin = client.post(f"{self.sso_url}/auth/login", json={
                "email": "admin@bench.example.com", "password": PASSWORD}).json()
            auth = {"Authorization": f"Bearer {admin['access_token']}"}
            lines = []
            for n in range(users):
                tokens = client.post(f"{self.sso_url}/auth/registration", json={
                    "email": f"u{n}@bench.example.com", "password": PASSWORD}).json()
                me = client.get(f"{self.sso_url}/auth/info", headers={
                    "Authorization": f"Bearer {tokens['access_token']}"}).json()
                user_id = me["user_id"]
                for _ in range(100):  # the welcome bonus travels through the outbox
                    reply = client.post(
                        f"{self.loyalty_url}/loyalty/admin/accounts/{user_id}/deposits",
                        headers=auth, json={"amount": 1_000_000, "comment": "bench"})
                    if reply.status_code == 201:
                        break
                    time.sleep(0.1)
                lines.append(f"{user_id} {tokens['access_token']}")
        path.write_text("\n".join(lines) + "\n")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def run_wrk(service: Service, script: str, users: Path, duration: int,
            connections: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = Path(tmp.name)
    env = {**os.environ, "BENCH_WRK_OUT": str(out), "BENCH_USERS": str(users),
           "LUA_PATH": f"{LUA_DIR}/?.lua;;"}
    before = cpu_seconds(service.proc.pid)
    subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "-s",
                    str(LUA_DIR / f"{script}.lua"), service.loyalty_url],
                   env=env, check=True, capture_output=True)
    used = cpu_seconds(service.proc.pid) - before
    report = json.loads(out.read_text())
    out.unlink()
    requests = report["requests"]
    ok = sum(n for code, n in report["statuses"].items() if code in ("200", "201"))
    return {"rps": requests / (report["duration_us"] / 1e6),
            "cpu_us": used / max(requests, 1) * 1e6, "errors": requests - ok}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", required=True, metavar="NAME=SRC",
                        help="a name and the src directory holding its authloyalty package")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--routes", default="balance,withdrawal",
                        help=f"comma-separated, of: {', '.join(ROUTES)}")
    args = parser.parse_args()
    routes = args.routes.split(",")
    if unknown := set(routes) - set(ROUTES):
        parser.error(f"unknown routes: {', '.join(sorted(unknown))}")
    sys.path.insert(0, str(REPO / "src"))
    from devstack.postgres import PostgresCluster, scratch_dir

    base = scratch_dir("authloyalty-ab-pg-")
    work = Path(tempfile.mkdtemp(prefix="authloyalty-ab-"))
    cluster = PostgresCluster(base).start()
    services: list[Service] = []
    try:
        for spec in args.tree:
            name, _, src = spec.partition("=")
            url = cluster.create_database(f"ab_{name}")
            services.append(Service(name, Path(src), url, work))
        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for service in services:
            service.wait_ready()
            service.seed(args.users, work / f"{service.name}.users")
        for round_no in range(args.rounds):
            for service in services:
                for route in routes:
                    result = run_wrk(service, route, work / f"{service.name}.users",
                                     args.duration, args.connections)
                    results.setdefault((service.name, route), []).append(result)
                    print(f"round {round_no + 1} {service.name:>8} {route:<15} "
                          f"{result['rps']:8.0f} req/s {result['cpu_us']:7.0f} µs CPU/req "
                          f"errors {result['errors']}", flush=True)
        print("\nmedian over rounds:")
        for (name, route), runs in results.items():
            print(f"{name:>8} {route:<15} "
                  f"{statistics.median(r['rps'] for r in runs):8.0f} req/s "
                  f"{statistics.median(r['cpu_us'] for r in runs):7.0f} µs CPU/req "
                  f"(rps range {min(r['rps'] for r in runs):.0f}-"
                  f"{max(r['rps'] for r in runs):.0f})")
    finally:
        for service in services:
            service.stop()
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
