"""Who used the CPU during a measurement: per process group, from /proc, plus the whole machine.

Each group is a set of PIDs whose CPU time (user + system, all threads) is read at the start and
at the end of a window. Children that exit inside the window are still counted when their parent
reaps them (``cutime``/``cstime``): that is how PostgreSQL backends of short-lived pgbench
connections are charged to the "postgres" group. The load generators (wrk, pgbench) are charged
from the ``rusage`` their ``wait4`` returns. Whatever the machine spent that no group accounts
for is "other" (other developers' test runs, the kernel's work for unknown processes, ...).
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode(errors="replace")
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(")") + 2:].split()


def process_cpu(pid: int, *, with_children: bool = False) -> float:
    """CPU seconds (user + system) used by ``pid`` so far; 0 if it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # fields[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17 → index n-3.
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def children_of(ppid: int) -> list[int]:
    """Live direct children of ``ppid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None and int(fields[1]) == ppid:
            found.append(int(entry))
    return found


def machine_times() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine since boot, summed over CPUs."""
    with open("/proc/stat") as fh:
        parts = fh.readline().split()[1:]
    user, nice, system, idle, iowait, irq, softirq = (int(p) for p in parts[:7])
    busy = user + nice + system + irq + softirq
    return busy / CLK_TCK, (idle + iowait) / CLK_TCK


@dataclass
class Group:
    """A named set of processes: ``sample`` returns {pid: CPU seconds so far} for each."""

    name: str
    sample: Callable[[], dict[int, float]]


def pid_group(name: str, pids: Callable[[], Iterable[int | None]]) -> Group:
    """Processes given by ``pids`` (threads included), without their children."""
    return Group(name, lambda: {pid: process_cpu(pid) for pid in pids() if pid})


def postgres_group(postmaster_pid: Callable[[], int | None]) -> Group:
    """The postmaster (with the CPU of the children it reaped) and its live children."""

    def sample() -> dict[int, float]:
        pid = postmaster_pid()
        if pid is None:
            return {}
        result = {pid: process_cpu(pid, with_children=True)}
        for child in children_of(pid):
            result[child] = process_cpu(child)
        return result

    return Group("postgres", sample)


@dataclass
class CpuWindow:
    """Started with :meth:`start`, closed with :meth:`stop`; :meth:`report` gives the shares."""

    groups: list[Group]
    started: float = 0.0
    wall: float = 0.0
    _before: dict[str, dict[int, float]] = field(default_factory=dict)
    _after: dict[str, dict[int, float]] = field(default_factory=dict)
    _machine_before: tuple[float, float] = (0.0, 0.0)
    _machine_after: tuple[float, float] = (0.0, 0.0)
    _self_before: float = 0.0
    _self_after: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def start(self) -> CpuWindow:
        self._before = {g.name: g.sample() for g in self.groups}
        self._machine_before = machine_times()
        self._self_before = _self_cpu()
        self.started = time.monotonic()
        return self

    def stop(self) -> CpuWindow:
        self.wall = time.monotonic() - self.started
        self._after = {g.name: g.sample() for g in self.groups}
        self._machine_after = machine_times()
        self._self_after = _self_cpu()
        return self

    def add(self, name: str, seconds: float) -> None:
        """Charge ``seconds`` of CPU to ``name`` (a load generator's rusage)."""
        self.extra[name] = self.extra.get(name, 0.0) + seconds

    def seconds(self) -> dict[str, float]:
        """CPU seconds per group inside the window, plus ``machine`` and ``other``."""
        out: dict[str, float] = {}
        for group in self.groups:
            # Sums, not per-pid differences: a postgres backend that exits inside the window
            # moves its time into the postmaster's cutime, so the total stays continuous.
            before = sum(self._before.get(group.name, {}).values())
            after = sum(self._after.get(group.name, {}).values())
            out[group.name] = max(0.0, after - before)
        out["bench-driver"] = max(0.0, self._self_after - self._self_before)
        out.update(self.extra)
        busy = self._machine_after[0] - self._machine_before[0]
        out["other"] = max(0.0, busy - sum(out.values()))
        out["machine"] = busy
        return out

    def report(self) -> dict[str, Any]:
        """Shares of the machine's capacity (wall x CPUs), in percent, and raw seconds."""
        secs = self.seconds()
        capacity = self.wall * NCPU
        return {
            "wall_s": round(self.wall, 3),
            "cpus": NCPU,
            "cpu_seconds": {k: round(v, 3) for k, v in secs.items()},
            "share_pct": {k: round(100 * v / capacity, 1) if capacity else 0.0
                          for k, v in secs.items()},
        }


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
