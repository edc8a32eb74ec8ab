"""Helpers shared by the devstack modules: loopback ports, output tails, environments, tools."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[1]
# Tools in sbin are not on a non-root PATH (nginx lives in /usr/sbin).
_EXTRA_PATH = ("/usr/local/sbin", "/usr/sbin", "/sbin")
# Variables that would silently redirect psql/pg_basebackup to another server or database.
_LIBPQ_ENV = re.compile(r"^PG(HOST|HOSTADDR|PORT|DATABASE|USER|PASSWORD|PASSFILE|SERVICE\w*|"
                        r"OPTIONS|SSL\w*|TARGETSESSIONATTRS|APPNAME|DATA)$")


class DevstackError(RuntimeError):
    """Infrastructure cannot be provisioned, started, inspected or stopped; the message says why."""


def free_ports(count: int, avoid: Iterable[int] = ()) -> list[int]:
    """``count`` distinct loopback ports free right now (none of ``avoid``)."""
    avoided = set(avoid)
    # Hold every socket until all are chosen, so no port is handed out twice.
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
            if port not in avoided:
                ports.append(port)
        return ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (it may be taken again later)."""
    return free_ports(1)[0]


def port_open(port: int, host: str = HOST) -> bool:
    """True if something accepts connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def bindable(port: int, host: str = HOST) -> bool:
    """True if this process could listen on ``host:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def tail(text: str, lines: int = 40) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.splitlines()[-lines:])


def tail_file(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of the file at ``path`` (a note if there is none)."""
    try:
        return tail(path.read_text(errors="replace"), lines)
    except OSError:
        return f"(no log at {path})"


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without our settings (``AUTHLOYALTY_*``, ``CONFIG_PATH``) and
    libpq's connection variables, plus ``extra``: a child started with a generated config must
    not have it overridden."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AUTHLOYALTY_") and k != "CONFIG_PATH" and not _LIBPQ_ENV.match(k)}
    env.update(extra)
    return env


def find_command(name: str) -> str | None:
    """``name`` on PATH or in the sbin directories."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _EXTRA_PATH:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def require_commands(commands: Mapping[str, str]) -> dict[str, str]:
    """The path of every command (``commands`` maps a command to its Debian package); a clear
    error naming the packages if any is missing. Never installs anything."""
    found = {cmd: find_command(cmd) for cmd in commands}
    missing = sorted(cmd for cmd, path in found.items() if path is None)
    if missing:
        packages = " ".join(sorted({commands[cmd] for cmd in missing}))
        raise DevstackError(
            f"missing commands {missing}: run `make system-deps` (scripts/install-system-deps.sh)"
            f" or `apt-get install {packages}`")
    return {cmd: str(path) for cmd, path in found.items()}


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing): one process at a time
    fills a shared cache."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
