"""Helpers shared by the throwaway-infrastructure modules: loopback ports, logs, state files."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
# Set to 1 to forbid installing missing Debian packages (then a missing tool is an error).
NO_APT_ENV = "AUTHLOYALTY_NO_APT"


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
    """Return a TCP port on 127.0.0.1 that is free right now (it may be taken again later)."""
    return free_ports(1)[0]


def port_open(port: int, host: str = HOST) -> bool:
    """True if something accepts connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def tail(text: str, lines: int = 40) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.splitlines()[-lines:])


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def can_apt_install() -> bool:
    """Missing Debian packages may be installed here: root, apt-get, not forbidden."""
    return (os.geteuid() == 0 and shutil.which("apt-get") is not None
            and os.environ.get(NO_APT_ENV, "") in ("", "0"))


def apt_install(packages: Sequence[str]) -> None:
    """``apt-get update`` then ``apt-get install`` ``packages`` (no recommends)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
    ):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed (exit {proc.returncode}):\n"
                f"{tail(proc.stdout + proc.stderr, 30)}"
            )


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without our settings (``AUTHLOYALTY_*``, ``CONFIG_PATH``),
    plus ``extra``: a child started with a generated config must not have it overridden."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AUTHLOYALTY_") and k != "CONFIG_PATH"}
    env.update(extra)
    return env
