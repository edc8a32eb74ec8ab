"""Profile one service under one scenario's load with py-spy, and summarise where time goes.

    python bench/profile.py [--scenario balance] [--duration 20] [--rate 200] [--out DIR]

Deploys the same stack as ``bench/run.py`` (durable PostgreSQL, Kafka, seeded users, the
production ``authloyalty sso`` / ``authloyalty loyalty`` processes), drives the scenario with
wrk, and attaches ``py-spy record`` (sampling, needs ptrace: run as root or with
CAP_SYS_PTRACE) to the process that serves it:

* ``<out>/profile-<scenario>.svg`` — flame graph (open in a browser);
* ``<out>/profile-<scenario>.collapsed.gz`` — collapsed stacks (flamegraph.pl, speedscope...);
* ``<out>/profile-<scenario>.txt`` — top functions by own ("self") and inclusive time, own
  time per package, and inclusive time of authloyalty's own functions.

The two py-spy passes (flame graph, then collapsed stacks) run back to back under the same wrk
run. Only threads doing work are sampled (py-spy's default, no ``--idle``).
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # devstack/ (not installed)

from benchlib import loadgen
from benchlib.deploy import deploy
from benchlib.stack import PASSWORD, log, stop_on_sigterm

BENCH_DIR = Path(__file__).resolve().parent


def git_revision() -> str:
    proc = subprocess.run(["git", "-C", str(BENCH_DIR.parent), "describe", "--always",
                           "--dirty"], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "unknown"


# scenario → (service, wrk script, path, wrk connections)
SCENARIOS: dict[str, tuple[str, str, str, int]] = {
    "balance": ("loyalty", "balance", "/loyalty/me", 16),
    "seed_balance": ("loyalty", "seed_balance", "/loyalty", 16),
    "withdrawal": ("loyalty", "withdrawal", "/loyalty/me/withdrawals", 16),
    "seed_withdrawal": ("loyalty", "seed_withdrawal", "/loyalty", 16),
    "bare_loyalty": ("loyalty", "bare", "/loyalty/healthz", 16),
    "refresh": ("sso", "refresh", "/auth/refresh", 16),
    "login": ("sso", "login", "/auth/login", 8),
    "bare_sso": ("sso", "bare", "/auth/healthz", 16),
}


def find_py_spy() -> str:
    for candidate in (Path(sys.executable).parent / "py-spy", shutil.which("py-spy")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")


def py_spy(pid: int, fmt: str, output: Path, duration: int, rate: int,
           extra: list[str]) -> None:
    proc = subprocess.run([find_py_spy(), "record", "--pid", str(pid), "--format", fmt,
                           "--output", str(output), "--duration", str(duration),
                           "--rate", str(rate), *extra],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not output.exists():
        raise RuntimeError(f"py-spy failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")


def _package(frame: str) -> str:
    """``func (sqlalchemy/engine/base.py:123)`` → ``sqlalchemy``; our code by subpackage."""
    if "(" not in frame:
        return frame
    path = frame.rsplit("(", 1)[1].rstrip(")").rsplit(":", 1)[0]
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    parts = [p for p in path.split("/") if p]
    if "authloyalty" in parts:
        i = parts.index("authloyalty")
        return "/".join(parts[i:i + 2]).removesuffix(".py")
    if "lib" in parts and any(p.startswith("python3") for p in parts):
        # the standard library: asyncio, json, ...
        i = next(i for i, p in enumerate(parts) if p.startswith("python3"))
        rest = parts[i + 1:]
        return f"stdlib:{rest[0].removesuffix('.py')}" if rest else "stdlib"
    return parts[0].removesuffix(".py") if parts else path


# Thread-pool workers blocked waiting for a job: py-spy reports them as active.
WAITING = {
    "Condition.wait (threading.py)",
    "_worker (concurrent/futures/thread.py)",
    "Thread.run (threading.py)",
    "EpollSelector.select (selectors.py)",
    "Event.wait (threading.py)",
}


def _function(frame: str) -> str:
    """``func (path.py:123)`` → ``func (path.py)``: a function's lines counted together."""
    head, sep, tail = frame.rpartition(":")
    return f"{head})" if sep and tail.rstrip(")").isdigit() else frame


def _read_collapsed(path: Path) -> str:
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes()).decode()
    return path.read_text()


def summarize(collapsed: Path, top: int = 30) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = waiting = 0
    for line in _read_collapsed(collapsed).splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        # py-spy puts the thread name first ("process 1:"/"thread (0x...)"): skip non-frames.
        frames = [_function(f) for f in frames if "(" in f]
        if not frames:
            continue
        if frames[-1] in WAITING:
            waiting += count
            continue
        total += count
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count

    def table(title: str, counter: Counter[str]) -> list[str]:
        rows = [f"## {title}", "", f"{'samples':>8} {'%':>6}  function (file)"]
        for name, n in counter.most_common(top):
            rows.append(f"{n:>8} {100 * n / total:>5.1f}%  {name}")
        return [*rows, ""]

    out = [f"# {collapsed.name}: {total} samples of work ({waiting} more of threads waiting "
           "for work, left out)", ""]
    out += table("Own time (the frame on top of the stack)", own)
    out += table("Own time per package", packages)
    out += table("Inclusive time (the frame anywhere on the stack)", inclusive)
    ours = Counter({k: v for k, v in inclusive.items() if "authloyalty/" in k})
    out += table("Inclusive time, authloyalty's own functions only", ours)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="balance")
    parser.add_argument("--duration", type=int, default=20, help="seconds per py-spy pass")
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--connections", type=int)
    parser.add_argument("--threads", choices=["auto", "gil", "all"], default="auto",
                        help="gil: only samples holding the GIL (the CPU of Python code; a "
                             "thread waiting for the GIL would otherwise show up in whatever "
                             "call it is returning from); all: every active thread (Argon2 "
                             "hashing releases the GIL, so login needs it); auto (default): "
                             "all for login, gil otherwise")
    parser.add_argument("--nonblocking", action="store_true",
                        help="do not pause the process to sample (less overhead, less exact)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "profiles")
    parser.add_argument("--suffix", default="", help="added to the output file names")
    parser.add_argument("--summarize", type=Path, metavar="COLLAPSED",
                        help="only print the summary of an existing .collapsed[.gz] file")
    args = parser.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return 0
    find_py_spy()
    loadgen.ensure_tools()
    stop_on_sigterm()
    service, script, path, connections = SCENARIOS[args.scenario]
    connections = args.connections or connections
    args.out.mkdir(parents=True, exist_ok=True)

    revision = git_revision()
    dep = deploy(users=10_000, refresh_sessions=10_000, logout_sessions=0,
                 distinct_hashes=200)
    stack, seeded = dep.stack, dep.seeded
    try:
        base = stack.sso if service == "sso" else stack.loyalty
        env = {"BENCH_USERS": str(seeded.users_file), "BENCH_LOGINS": str(seeded.logins_file),
               "BENCH_PASSWORD": PASSWORD, "BENCH_REFRESH": str(seeded.refresh_file)}
        pid = stack.pid(service)
        assert pid is not None
        next_tokens = seeded.token_dir / "refresh-next.txt"
        env["BENCH_REFRESH_OUT"] = str(next_tokens)
        if service == "loyalty" and script != "bare":
            # every token verified once, as bench/run.py does before these scenarios
            loadgen.run_wrk("prime", base + "/loyalty/me", duration=max(2, seeded.users / 1000),
                            connections=connections, threads=1, env=env)
        loadgen.run_wrk(script, base + path, duration=3, connections=connections, threads=1,
                        env=env)  # warm-up
        if script == "refresh":
            # The warm-up spent the file's first tokens: continue the chains it handed back.
            shutil.copyfile(next_tokens, seeded.refresh_file)
        result: dict[str, Any] = {}

        def load() -> None:
            result["wrk"] = loadgen.run_wrk(script, base + path,
                                            duration=2 * args.duration + 4,
                                            connections=connections, threads=1, env=env)

        loader = threading.Thread(target=load)
        loader.start()
        stem = args.out / f"profile-{args.scenario}{args.suffix}"
        log(f"py-spy on {service} (pid {pid}) under {args.scenario}, {args.duration} s x 2")
        gil = args.threads == "gil" or (args.threads == "auto" and args.scenario != "login")
        extra = [*(["--gil"] if gil else []),
                 *(["--nonblocking"] if args.nonblocking else [])]
        py_spy(pid, "flamegraph", stem.with_suffix(".svg"), args.duration, args.rate, extra)
        raw = stem.with_suffix(".collapsed")
        py_spy(pid, "raw", raw, args.duration, args.rate, extra)
        collapsed = stem.with_suffix(".collapsed.gz")
        collapsed.write_bytes(gzip.compress(raw.read_bytes()))
        raw.unlink()
        loader.join()
        summary = loadgen.wrk_summary(result["wrk"], {200, 201})
        text = summarize(collapsed)
        header = (f"revision {revision}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                  f"scenario {args.scenario}: {service} pid {pid}, {connections} connections, "
                  f"py-spy {' '.join(extra) or '(all active threads, blocking)'}, "
                  f"{summary['throughput_rps']} req/s under py-spy (sampling slows it), "
                  f"errors {summary['errors']}\n\n")
        stem.with_suffix(".txt").write_text(header + text)
        print(header + text)
        log(f"written {stem}.svg, .collapsed.gz, .txt")
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
