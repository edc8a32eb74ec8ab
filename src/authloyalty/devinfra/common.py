"""Helpers shared by the throwaway-infrastructure modules: loopback ports, logs, state files."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


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
