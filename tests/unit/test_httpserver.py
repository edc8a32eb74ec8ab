"""The request-head limit holds on either HTTP implementation uvicorn may run (httptools, or
h11 where httptools is missing): a uvicorn server in a thread, spoken to over a socket."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from authloyalty.platform.httpserver import HeadLimits, limited_protocol
from devstack.common import free_port

LIMITS = HeadLimits(max_bytes=4096, max_fields=20)


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    """The smallest app: 200 "ok"."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(params=["httptools", "h11"], scope="module")
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    """A uvicorn server running ``hello`` with the limited protocol of one implementation."""
    chosen = free_port()
    config = uvicorn.Config(hello, host="127.0.0.1", port=chosen, log_config=None,
                            lifespan="off", http=limited_protocol(LIMITS, request.param))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield chosen
    server.should_exit = True
    thread.join(timeout=10)


def status_of(port: int, head: bytes, piece: int = 1 << 20) -> int | None:
    """Send ``head`` in writes of ``piece`` bytes; the answer's status, None if closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            for offset in range(0, len(head), piece):
                sock.sendall(head[offset:offset + piece])
        except OSError:
            pass
        try:
            answer = sock.recv(100)
        except OSError:
            return None
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


def head_of(*fields: bytes) -> bytes:
    return b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


@pytest.mark.parametrize("piece", [1 << 20, 100])
def test_heads_within_the_limits_are_served(port: int, piece: int) -> None:
    assert status_of(port, head_of(*[b"X-A: " + b"a" * 100] * 19), piece) == 200
    assert status_of(port, head_of(b"X-A: " + b"a" * 3000), piece) == 200


@pytest.mark.parametrize("piece", [1 << 20, 100])
def test_too_many_fields_are_refused(port: int, piece: int) -> None:
    assert status_of(port, head_of(*[b"X-A: a"] * 20), piece) == 431


@pytest.mark.parametrize("piece", [1 << 20, 100])
def test_too_many_bytes_are_refused(port: int, piece: int) -> None:
    assert status_of(port, head_of(b"X-A: " + b"a" * 5000), piece) in (431, None)
    assert status_of(port, head_of(b"X-A: " + b"a" * (8 << 20)), 1 << 16) in (431, None)
