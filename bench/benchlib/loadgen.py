"""Load generators as subprocesses: wrk (HTTP), pgbench (SQL ceilings), an Argon2id ceiling.

Each runner returns its own CPU time (user + system, from ``wait4``'s rusage), so the report can
show how much of the machine the generator itself took.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib.stats import summarize

BENCH_DIR = Path(__file__).resolve().parents[1]
LUA_DIR = BENCH_DIR / "lua"
SQL_DIR = BENCH_DIR / "sql"
PG_BINDIR = Path("/usr/lib/postgresql/15/bin")


@dataclass
class Finished:
    """A generator's exit code, CPU seconds, and output."""

    code: int
    cpu_seconds: float
    stdout: str
    stderr: str


def run_measured(argv: list[str], env: dict[str, str] | None = None,
                 cwd: Path | None = None, timeout: float | None = None) -> Finished:
    """Run ``argv`` to completion; its CPU time comes from ``wait4``."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        # A session of its own, like the services (benchlib/stack.py, Service.start).
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=cwd,
                                start_new_session=True)
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Finished(proc.returncode, usage.ru_utime + usage.ru_stime, out.read(), err.read())


def wrk_version() -> str:
    proc = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (proc.stdout + proc.stderr).strip().splitlines()
    return first[0] if first else "unknown"


def ensure_tools() -> None:
    """Fail early, with the fix, when a generator is missing."""
    missing = [name for name, path in (("wrk", shutil.which("wrk")),
                                       ("pgbench", str(pgbench_bin()) if pgbench_bin() else None))
               if not path]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: apt-get install wrk postgresql "
                         "(pgbench comes with Debian's postgresql-15)")


def pgbench_bin() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True)
    return candidates[0] if candidates else None


def run_wrk(script: str, url: str, *, duration: float, connections: int, threads: int,
            env: dict[str, str], timeout_s: float = 10.0, cpus: str | None = None
            ) -> dict[str, Any]:
    """One wrk run with ``lua/<script>.lua``; returns its JSON report plus CPU time."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out_path = tmp.name
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
            f"--timeout={int(timeout_s)}s", "-s", str(LUA_DIR / f"{script}.lua"), url]
    if cpus:
        argv = ["taskset", "-c", cpus, *argv]
    full_env = {**os.environ, **env, "BENCH_WRK_OUT": out_path,
                "BENCH_THREADS": str(threads), "LUA_PATH": f"{LUA_DIR}/?.lua;;"}
    try:
        finished = run_measured(argv, env=full_env)
        if finished.code != 0:
            raise RuntimeError(f"wrk failed ({finished.code}):\n{finished.stdout}\n"
                               f"{finished.stderr}")
        raw = Path(out_path).read_text()
    finally:
        Path(out_path).unlink(missing_ok=True)
    if not raw:
        raise RuntimeError(f"wrk wrote no report:\n{finished.stdout}\n{finished.stderr}")
    report: dict[str, Any] = json.loads(raw)
    report["cpu_seconds"] = finished.cpu_seconds
    report["argv"] = argv
    return report


def wrk_summary(report: dict[str, Any], ok_statuses: set[int]) -> dict[str, Any]:
    """Throughput, latency in ms and errors (socket errors, timeouts, unexpected statuses)."""
    duration = report["duration_us"] / 1e6
    statuses = {int(k): v for k, v in report["statuses"].items()}
    bad_statuses = sum(n for code, n in statuses.items() if code not in ok_statuses)
    sock = report["errors"]
    errors = sock["connect"] + sock["read"] + sock["write"] + sock["timeout"] + bad_statuses
    pct = report["latency_us"]["percentiles"]
    return {
        "requests": report["requests"],
        "duration_s": round(duration, 3),
        "throughput_rps": round(report["requests"] / duration, 1) if duration else 0.0,
        "latency_ms": {
            "p50": round(pct["50"] / 1000, 2),
            "p90": round(pct["90"] / 1000, 2),
            "p99": round(pct["99"] / 1000, 2),
            "max": round(report["latency_us"]["max"] / 1000, 2),
            "mean": round(report["latency_us"]["mean"] / 1000, 2),
        },
        "errors": errors,
        "error_detail": {**sock, "unexpected_status": bad_statuses},
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "extra": report.get("extra", {}),
    }


def run_pgbench(script: str, *, host: str, port: int, database: str, duration: float,
                clients: int, threads: int, variables: dict[str, str]) -> dict[str, Any]:
    """``pgbench -M prepared`` with ``sql/<script>.sql``; latency percentiles from its log."""
    binary = pgbench_bin()
    assert binary is not None
    with tempfile.TemporaryDirectory(prefix="bench-pgbench-") as tmp:
        argv = [str(binary), "-h", host, "-p", str(port), "-U", "postgres", "-n",
                "-M", "prepared", "-c", str(clients), "-j", str(threads),
                "-T", str(max(1, round(duration))), "-l", "--log-prefix", f"{tmp}/tx",
                "-f", str(SQL_DIR / f"{script}.sql")]
        for key, value in variables.items():
            argv += ["-D", f"{key}={value}"]
        argv.append(database)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        finished = run_measured(argv, env=env, cwd=Path(tmp))
        latencies: list[float] = []
        for log_file in Path(tmp).glob("tx*"):
            for line in log_file.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[2].isdigit():
                    latencies.append(int(parts[2]) / 1e6)
    text = finished.stdout + finished.stderr
    tps = _search(r"tps = ([\d.]+) \(without initial connection time\)", text)
    processed = _search(r"number of transactions actually processed: (\d+)", text)
    failed = _search(r"number of failed transactions: (\d+)", text) or 0
    aborted = len(re.findall(r"client \d+ script \d+ aborted", text))
    if finished.code not in (0, 2) or tps is None:
        raise RuntimeError(f"pgbench failed ({finished.code}):\n{text}")
    lat = summarize(latencies)
    return {
        "requests": int(processed or 0),
        "duration_s": float(round(duration)),
        "throughput_rps": round(tps, 1),
        "latency_ms": {k: lat[k] for k in ("p50", "p90", "p99", "max", "mean")},
        "errors": int(failed) + aborted,
        "error_detail": {"failed_transactions": int(failed), "aborted_clients": aborted},
        "cpu_seconds": finished.cpu_seconds,
        "argv": argv,
    }


def _search(pattern: str, text: str) -> float | None:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else None


_ARGON2_PROBE = r"""
import json, sys, threading, time
from argon2 import PasswordHasher
t, m, p, threads, duration, password = sys.argv[1:7]
hasher = PasswordHasher(time_cost=int(t), memory_cost=int(m), parallelism=int(p))
stored = hasher.hash(password)
counts = [0] * int(threads)
stop = time.monotonic() + float(duration)
def work(i):
    while time.monotonic() < stop:
        hasher.verify(stored, password)
        counts[i] += 1
workers = [threading.Thread(target=work, args=(i,)) for i in range(int(threads))]
started = time.monotonic()
for w in workers: w.start()
for w in workers: w.join()
print(json.dumps({"verifies": sum(counts), "elapsed": time.monotonic() - started}))
"""


def run_argon2_ceiling(*, time_cost: int, memory_kib: int, parallelism: int, threads: int,
                       duration: float, password: str) -> dict[str, Any]:
    """Bare Argon2id verifications per second with ``threads`` threads (argon2 drops the GIL)."""
    finished = run_measured([sys.executable, "-c", _ARGON2_PROBE, str(time_cost),
                             str(memory_kib), str(parallelism), str(threads), str(duration),
                             password])
    if finished.code != 0:
        raise RuntimeError(f"argon2 probe failed:\n{finished.stderr}")
    data = json.loads(finished.stdout)
    rate = data["verifies"] / data["elapsed"]
    return {"requests": data["verifies"], "duration_s": round(data["elapsed"], 3),
            "throughput_rps": round(rate, 1), "latency_ms": {
                "p50": None, "p90": None, "p99": None, "max": None,
                "mean": round(1000 * threads / rate, 2) if rate else None},
            "errors": 0, "error_detail": {}, "cpu_seconds": finished.cpu_seconds,
            "argv": ["argon2-probe", f"threads={threads}"]}
