"""The original's routes against their ``/me`` twins, alternating, on the ``make bench`` shape.

    python bench/twins.py [--pair balance] [--rounds 4] [--duration 5] [--users 10000]
                          [--brokers 1]

Deploys what ``make bench`` deploys (2 sso and 2 loyalty processes, durable PostgreSQL, Kafka),
primes every token at both loyalty processes, then runs the ``/me`` route and the original's
twin one after the other for ``--rounds`` rounds, the order reversed every round (A B, B A,
...). Prints each leg's throughput, the CPU each request cost loyalty's processes and wrk, and
loyalty's system calls per request (``/proc/<pid>/io``), then the pair's ratio over all legs.

wrk does the same work for a request of either route, so its CPU per request gauges how fast
the machine was during a leg: a leg that is slow for loyalty and for wrk alike was a slow
moment of the machine, not a slow route.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # devstack/ (not installed)

from benchlib import loadgen
from benchlib.cpu import process_cpu
from benchlib.deploy import deploy
from benchlib.stack import stop_on_sigterm

# pair name -> (the /me route's script, URL path, label and success status; the original's)
PAIRS = {
    "balance": (("balance", "/loyalty/me", "GET /loyalty/me", 200),
                ("seed_balance", "/loyalty", "GET /loyalty/{uuid}", 200)),
    "withdrawal": (("withdrawal", "/loyalty/me/withdrawals", "POST /loyalty/me/withdrawals", 201),
                   ("seed_withdrawal", "/loyalty", "POST /loyalty", 200)),
}


def _counters(pid: int) -> tuple[float, int, int]:
    """CPU seconds (user + system), read and write system calls of process ``pid``."""
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return process_cpu(pid), int(io["syscr"]), int(io["syscw"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", choices=sorted(PAIRS), default="balance")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--brokers", type=int, choices=[1, 3], default=1)
    args = parser.parse_args(argv)
    stop_on_sigterm()
    dep = deploy(users=args.users, refresh_sessions=0, logout_sessions=0, distinct_hashes=50,
                 sso_processes=2, loyalty_processes=2, brokers=args.brokers,
                 broker_warmup=10.0)
    stack = dep.stack
    me, seed = PAIRS[args.pair]
    totals = {me[0]: [0, 0.0], seed[0]: [0, 0.0]}
    try:
        pids = stack.pids("loyalty")
        url = stack.loyalty_urls[0]
        env = {"BENCH_USERS": str(dep.seeded.users_file),
               "BENCH_PORTS": ",".join(map(str, stack.loyalty_ports))}
        loadgen.run_wrk("prime", f"{url}/loyalty/me", duration=max(2.0, args.users / 1000),
                        connections=args.connections, threads=len(pids), env=env)
        print(f"{'round':>5} {'route':<29} {'req/s':>7} {'loyalty µs/req':>15} "
              f"{'wrk µs/req':>11} {'reads/req':>10} {'writes/req':>11}")
        for round_no in range(1, args.rounds + 1):
            for script, path, label, ok in (me, seed) if round_no % 2 else (seed, me):
                before = [_counters(pid) for pid in pids]
                report = loadgen.run_wrk(script, f"{url}{path}", duration=args.duration,
                                         connections=args.connections, threads=len(pids),
                                         env=env)
                after = [_counters(pid) for pid in pids]
                requests = report["requests"]
                errors = loadgen.wrk_summary(report, {ok})["errors"]
                if errors:
                    raise RuntimeError(f"{script}: {errors} of {requests} requests failed")
                seconds = report["duration_us"] / 1e6
                used = [sum(a[i] - b[i] for a, b in zip(after, before, strict=True))
                        for i in range(3)]
                totals[script][0] += requests
                totals[script][1] += seconds
                print(f"{round_no:>5} {label:<29} {requests / seconds:>7.0f} "
                      f"{used[0] / requests * 1e6:>15.0f} "
                      f"{report['cpu_seconds'] / requests * 1e6:>11.0f} "
                      f"{used[1] / requests:>10.2f} {used[2] / requests:>11.2f}", flush=True)
        me_rate, seed_rate = (totals[s][0] / totals[s][1] for s in (me[0], seed[0]))
        print(f"over all legs: {seed[2]} {seed_rate:.0f}/s, {me[2]} {me_rate:.0f}/s, "
              f"ratio {seed_rate / me_rate:.3f}")
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
