"""PostgreSQL failover of the local stack, timed: three leader kills under load.

    python bench/failover.py [--kills 3] [--dir DIR] [--keep] [--out DIR]

Brings up the default stack (``python -m devstack up``: etcd, three Patroni members, HAProxy,
Kafka, 2 sso, loyalty, the gateway; free ports, no Prometheus) in a scratch directory, or uses
the running stack of ``--dir``. Records how long ``up`` took and the memory of each component
(RSS of its process; for a Patroni member also its PostgreSQL: the postmaster and every
backend, as RSS and as PSS, which counts shared buffers once). Then, while customers register
and withdraw through the gateway (tests/e2e/ha_load.py: one thread per customer, withdrawals
retried with their Idempotency-Key after a 503), ``--kills`` times: SIGKILL the leader's Patroni
and PostgreSQL together; time until Patroni reports a new leader and until a registration and a
withdrawal sent after the kill are acknowledged; restart the old member (``devstack restart``)
and time until it streams as a replica. At the end: answers other than 2xx/4xx/503, and
acknowledged writes missing afterwards (must be 0).

Results: ``bench/results/failover-latest.md`` and ``.json``. Exit status 1 if a write was lost,
a request failed, or the service was not back within 20 s after some kill.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))  # devstack/ and tests/ (not installed)

from devstack.common import free_ports  # noqa: E402
from devstack.postgres import scratch_dir  # noqa: E402
from tests.e2e import ha_load  # noqa: E402
from tests.e2e.e2e_helpers import bearer, run_cli, unique_email  # noqa: E402
from tests.e2e.full_stack import StackHandle, devstack, report  # noqa: E402

MEMBERS = ("patroni-1", "patroni-2", "patroni-3")
BACK_WITHIN = 20.0


def log(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


def up(directory: Path) -> float:
    """``devstack up`` (default topology); the seconds it reported."""
    https, grpc = free_ports(2, {8000, 8001, 8443, 44044, 9090})
    result = devstack("up", "--dir", str(directory), "--no-443", "--no-prometheus",
                      "--https-port", str(https), "--http2-grpc-port", str(grpc), timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"devstack up failed:\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
    found = re.search(r"stack is up in ([0-9.]+) s", result.stdout)
    return float(found.group(1)) if found else float("nan")


# -- memory -------------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def _tree(pid: int, children: dict[int, list[int]]) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += children.get(current, [])
    return pids


def _kib(pid: int, field: str, source: str) -> int:
    try:
        text = Path(f"/proc/{pid}/{source}").read_text()
    except OSError:
        return 0
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else 0


def memory(pids: list[int]) -> dict[str, float]:
    """RSS and PSS of ``pids`` together, in MiB."""
    return {"rss_mib": round(sum(_kib(p, "VmRSS", "status") for p in pids) / 1024, 1),
            "pss_mib": round(sum(_kib(p, "Pss", "smaps_rollup") for p in pids) / 1024, 1)}


def memory_report(stack: StackHandle) -> dict[str, dict[str, float]]:
    """Memory of every component; Patroni members split into Patroni and PostgreSQL."""
    children = _children()
    result: dict[str, dict[str, float]] = {}
    for entry in stack.refresh().state["components"]:
        if not entry.get("pid"):
            continue
        pids = _tree(int(entry["pid"]), children)
        if entry["name"] in MEMBERS:
            postgres = _tree(ha_load.postmaster_pid(Path(entry["data_dir"])), children)
            result[entry["name"]] = memory([p for p in pids if p not in postgres])
            result[f"{entry['name']} postgres"] = memory(postgres)
        else:
            result[entry["name"]] = memory(pids)
    return result


# -- kills --------------------------------------------------------------------------------------


def kill_once(stack: StackHandle, load: ha_load.FailoverLoad, rest: list[str]) -> dict[str, Any]:
    """Kill the leader, time the switch, restart it and time its return as a replica."""
    old = ha_load.leader(rest)
    assert old is not None, ha_load.cluster(rest)
    killed = ha_load.kill_member(stack.dir, stack.refresh().component(old))
    log(f"killed {old}")
    elected: float | None = None
    back: float | None = None
    while time.monotonic() < killed + 60 and back is None:
        if elected is None and ha_load.leader(rest) not in (None, old):
            elected = time.monotonic() - killed
        back = ha_load.back_after(load.snapshot(), killed)
        time.sleep(0.05)
    new = ha_load.leader(rest)
    log(f"new leader {new} after {elected} s; service back after {back} s")
    restarted_at = time.monotonic()
    result = devstack("restart", old, "--dir", str(stack.dir), timeout=180)
    if result.returncode != 0:
        raise RuntimeError(f"restart {old} failed:\n{result.stdout}{result.stderr}")
    while not ha_load.is_streaming_replica(rest, old):
        if time.monotonic() > restarted_at + 120:
            raise RuntimeError(f"{old} did not rejoin: {ha_load.cluster(rest)}")
        time.sleep(0.2)
    rejoined = time.monotonic() - restarted_at
    log(f"{old} streams again {rejoined:.1f} s after its restart")
    return {"killed": old, "new_leader": new, "at": killed,
            "new_leader_s": None if elected is None else round(elected, 2),
            "service_back_s": None if back is None else round(back, 2),
            "rejoined_as_replica_s": round(rejoined, 2)}


def wait_cluster_healthy(rest: list[str], timeout: float = 120.0) -> None:
    """A leader and two streaming replicas."""
    deadline = time.monotonic() + timeout
    while not all(ha_load.is_streaming_replica(rest, m) for m in MEMBERS
                  if m != ha_load.leader(rest)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"cluster not healthy: {ha_load.cluster(rest)}")
        time.sleep(0.5)


def run(stack: StackHandle, kills: int) -> dict[str, Any]:
    """The kills under load and the checks afterwards."""
    rest = [stack.component(m)["urls"]["rest"] for m in MEMBERS]
    with stack.client(timeout=30.0) as client:
        email, password = unique_email("bench-admin"), "admin password 1"
        created = run_cli("admin", "create", "--config", stack.component("sso-1")["config"],
                          "--email", email, "--password", password)
        if created.returncode != 0:
            raise RuntimeError(created.stdout + created.stderr)
        admin = bearer(client.post("/auth/login", json={"email": email, "password": password})
                       .json()["access_token"])
        customers = [ha_load.new_customer(client, admin) for _ in range(3)]
        load = ha_load.FailoverLoad(stack.gateway, stack.tls(), customers)
        load.start()
        runs = []
        try:
            time.sleep(3)
            for _ in range(kills):
                wait_cluster_healthy(rest)
                time.sleep(3)
                runs.append(kill_once(stack, load, rest))
            time.sleep(5)
        finally:
            load.stop()
        answers = load.snapshot()
        stack.wait_healthy()
        lost = ha_load.lost_writes(client, customers, answers)
    bad = ha_load.failures(answers)
    kill_times = [k.pop("at") for k in runs]

    def when(answer: ha_load.Answer) -> str:
        before = [(i, t) for i, t in enumerate(kill_times, start=1) if t <= answer.sent + 5]
        if not before:
            return "before the first kill"
        i, t = before[-1]
        return f"sent {answer.sent - t:+.2f} s from kill {i}"

    codes: dict[str, int] = {}
    for a in answers:
        label = f"{a.kind} {a.status}"
        codes[label] = codes.get(label, 0) + 1
    return {"kills": runs, "answers": codes,
            "acknowledged": sum(a.acknowledged for a in answers),
            "failed_requests": [f"{a.kind} ({when(a)}): {a.status} {a.body[:200]}"
                                for a in bad],
            "lost_acknowledged_writes": lost}


def write_results(out: Path, data: dict[str, Any]) -> None:
    """failover-latest.json and .md in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "failover-latest.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = ["# PostgreSQL failover (Patroni + HAProxy), latest run", "",
             f"{data['finished_at']}; `python bench/failover.py`; stack up in "
             f"{data['up_s']} s (default topology, no Prometheus).", "",
             "| kill | member | new leader | elected after s | service back after s "
             "| old leader streams again after s |", "|---|---|---|---|---|---|"]
    for i, k in enumerate(data["kills"], start=1):
        lines.append(f"| {i} | {k['killed']} | {k['new_leader']} | {k['new_leader_s']} | "
                     f"{k['service_back_s']} | {k['rejoined_as_replica_s']} |")
    backs = [k["service_back_s"] for k in data["kills"] if k["service_back_s"] is not None]
    lines += ["", f"Worst service-back time: {max(backs) if backs else 'n/a'} s "
              f"(promise: {BACK_WITHIN:.0f} s). Acknowledged writes: {data['acknowledged']}; "
              f"lost: {len(data['lost_acknowledged_writes'])}. Requests answered other than "
              f"2xx/4xx/503 or not at all: {len(data['failed_requests'])}.", "",
              "Answers by kind and status: "
              + ", ".join(f"{k}: {v}" for k, v in sorted(data["answers"].items())) + ".", "",
              "| component | RSS MiB | PSS MiB |", "|---|---|---|"]
    for name, mem in data["memory"].items():
        lines.append(f"| {name} | {mem['rss_mib']} | {mem['pss_mib']} |")
    if data["failed_requests"]:
        lines += ["", "First failed requests:", ""]
        lines += [f"* `{f}`" for f in data["failed_requests"][:10]]
    if data["lost_acknowledged_writes"]:
        lines += ["", "Lost writes:", ""] + [f"* {p}" for p in data["lost_acknowledged_writes"]]
    (out / "failover-latest.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="use the stack running in DIR")
    parser.add_argument("--keep", action="store_true", help="leave the scratch directory")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args(argv)
    directory = args.dir or scratch_dir("authloyalty-failover-")
    ours = args.dir is None
    ok = False
    try:
        up_s = up(directory) if ours else float("nan")
        log(f"stack up in {up_s} s")
        stack = StackHandle(directory, report(directory))
        data: dict[str, Any] = {"up_s": up_s, "memory": memory_report(stack)}
        data |= run(stack, args.kills)
        data["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        write_results(args.out, data)
        log(f"results in {args.out / 'failover-latest.md'}")
        ok = (not data["lost_acknowledged_writes"] and not data["failed_requests"]
              and all(k["service_back_s"] is not None and k["service_back_s"] <= BACK_WITHIN
                      for k in data["kills"]))
    finally:
        if ours:
            subprocess.run([sys.executable, "-m", "devstack", "down", "--dir", str(directory)],
                           cwd=ROOT, capture_output=True, timeout=300, check=False)
            if ok and not args.keep:
                shutil.rmtree(directory, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
