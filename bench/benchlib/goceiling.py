"""The Go ``net/http`` ceiling: ``bench/go_ceiling.go`` built into ``~/.cache/authloyalty``
(once per content of the source and Go version), run on a free port for one measurement."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from devstack.common import free_port

SOURCE = Path(__file__).resolve().parent.parent / "go_ceiling.go"
CACHE = Path.home() / ".cache" / "authloyalty"
PATH = "/loyalty/healthz"


def build() -> Path:
    """The server's binary, built unless one of the same source and Go version is cached."""
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("the Go ceiling needs `go` on PATH")
    env = {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=True,
                             env=env).stdout
    digest = hashlib.sha256(SOURCE.read_bytes() + version.encode()).hexdigest()[:16]
    binary = CACHE / f"go-ceiling-{digest}"
    if binary.exists():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = CACHE / f".go-ceiling-{digest}.{os.getpid()}"
    subprocess.run([go, "build", "-trimpath", "-o", str(partial), str(SOURCE)], check=True,
                   env=env, cwd=SOURCE.parent)
    partial.replace(binary)  # whole or absent, even with two benches building at once
    return binary


@dataclass(frozen=True)
class GoServer:
    """A running Go ceiling."""

    port: int
    pid: int

    @property
    def url(self) -> str:
        """Where it answers the health JSON."""
        return f"http://127.0.0.1:{self.port}{PATH}"


@contextlib.contextmanager
def serving(timeout: float = 10.0) -> Iterator[GoServer]:
    """The Go ceiling, answering, for the duration of the block."""
    port = free_port()
    process = subprocess.Popen([str(build()), "-port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # as our services (benchlib/stack.py)
    server = GoServer(port, process.pid)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.url, timeout=1.0).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Go ceiling did not answer on port {port}")
            time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
