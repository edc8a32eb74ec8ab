"""Components: one declaration per long-running process, and starting them in order.

A component is what supervisord runs (command, environment, working directory, how to stop it)
plus what only we know: when it is ready (a callable polled until true), which components must
be ready before it starts, and one-off work to do before its first start (``setup``: initdb,
formatting Kafka storage, migrations). Adding a process to the stack is one ``Component`` in
:func:`devstack.topology.components`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.common import DevstackError, tail_file

if TYPE_CHECKING:
    from devstack.supervisor import Supervisor


def _never() -> bool:
    return False


@dataclass(frozen=True)
class Component:
    """One process of the stack."""

    name: str
    command: Sequence[str]
    ready: Callable[[], bool]
    log: Path
    depends_on: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    setup: Callable[[], None] | None = None
    # Processes of one group are stopped together (every Kafka node at once: a node stopped
    # last, alone, hangs in controlled shutdown without a quorum).
    group: str | None = None
    user: str | None = None  # run as this OS user (PostgreSQL refuses to run as root)
    stop_signal: str = "TERM"
    stop_wait: int = 20
    stop_as_group: bool = True  # signal the whole process group (workers, JVM children)

    @property
    def qualified(self) -> str:
        """supervisord's ``group:name``."""
        return f"{self.group or self.name}:{self.name}"


def in_start_order(components: Sequence[Component]) -> list[Component]:
    """``components`` sorted so that each comes after its dependencies (stable otherwise)."""
    by_name = {c.name: c for c in components}
    if len(by_name) != len(components):
        raise DevstackError("two components share a name")
    for c in components:
        unknown = [d for d in c.depends_on if d not in by_name]
        if unknown:
            raise DevstackError(f"{c.name} depends on unknown components {unknown}")
    ordered: list[Component] = []
    placed: set[str] = set()
    while len(ordered) < len(components):
        progress = False
        for c in components:
            if c.name not in placed and all(d in placed for d in c.depends_on):
                ordered.append(c)
                placed.add(c.name)
                progress = True
        if not progress:
            cycle = sorted(c.name for c in components if c.name not in placed)
            raise DevstackError(f"dependency cycle among {cycle}")
    return ordered


def _probe(component: Component) -> bool:
    # A readiness check that raises is "not ready yet" (connection refused and the like).
    with contextlib.suppress(Exception):
        return component.ready()
    return False


def wait_ready(supervisor: Supervisor, components: Iterable[Component], deadline: float,
               report: Callable[[str], None] = print) -> None:
    """Poll each component's readiness until all are ready; fail if one exits or is late."""
    waiting = {c.name: c for c in components}
    while waiting:
        for name, component in list(waiting.items()):
            if _probe(component):
                report(f"{name} ready")
                del waiting[name]
            elif not supervisor.is_running(component):
                raise DevstackError(f"{name} exited during startup; {component.log}:\n"
                                    f"{tail_file(component.log)}")
        if waiting and time.monotonic() > deadline:
            c = next(iter(waiting.values()))
            raise DevstackError(f"{', '.join(waiting)} not ready in time; {c.log}:\n"
                                f"{tail_file(c.log)}")
        time.sleep(0.1)


def bring_up(supervisor: Supervisor, components: Sequence[Component], *, timeout: float,
             report: Callable[[str], None] = print) -> None:
    """Start every component once its dependencies are ready (setup first), in parallel where
    the dependencies allow; return when all are ready."""
    deadline = time.monotonic() + timeout
    pending = in_start_order(components)
    ready: set[str] = set()
    starting: dict[str, Component] = {}
    while pending or starting:
        for component in list(pending):
            if all(d in ready for d in component.depends_on):
                if component.setup is not None:
                    component.setup()
                supervisor.start(component)
                pending.remove(component)
                starting[component.name] = component
        for name, component in list(starting.items()):
            if _probe(component):
                report(f"{name} ready")
                ready.add(name)
                del starting[name]
            elif not supervisor.is_running(component):
                raise DevstackError(f"{name} exited during startup; {component.log}:\n"
                                    f"{tail_file(component.log)}")
        if time.monotonic() > deadline:
            late = sorted(starting) or [c.name for c in pending]
            raise DevstackError(f"not ready in {timeout:.0f} s: {', '.join(late)}")
        if pending or starting:
            time.sleep(0.1)


def restart(supervisor: Supervisor, component: Component, *, timeout: float,
            report: Callable[[str], None] = print) -> None:
    """Stop ``component`` if it runs, start it again and wait until it is ready."""
    if supervisor.is_running(component):
        supervisor.stop(component)
        report(f"{component.name} stopped")
    supervisor.start(component)
    wait_ready(supervisor, [component], time.monotonic() + timeout, report)
