"""The request-head limit holds on either HTTP implementation uvicorn may run (httptools, or
h11 where httptools is missing): a uvicorn server in a thread, spoken to over a socket."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
import uvicorn.server
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


class RecordingTransport(asyncio.Transport):
    """A connection's server side that keeps each write the protocol makes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        addresses = {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}
        return addresses.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def slow_body(scope: Scope, receive: Receive, send: Send) -> None:
    """Starts its answer, then waits before the body (as a streaming answer would)."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"4")]})
    await asyncio.sleep(0.01)
    await send({"type": "http.response.body", "body": b"slow"})


def serve_one(app: Any, implementation: str, request: bytes) -> RecordingTransport:
    """Feed one request to the protocol over a recording transport; run until it is answered."""
    async def run() -> RecordingTransport:
        config = uvicorn.Config(app, log_config=None, lifespan="off",
                                http=limited_protocol(LIMITS, implementation))
        config.load()
        protocol_class: Any = limited_protocol(LIMITS, implementation)
        protocol = protocol_class(config=config, server_state=uvicorn.server.ServerState(),
                                  app_state={}, _loop=asyncio.get_running_loop())
        transport = RecordingTransport()
        protocol.connection_made(transport)
        protocol.data_received(request)
        deadline = time.monotonic() + 5
        while not transport.closed:
            assert time.monotonic() < deadline, "no answer"
            await asyncio.sleep(0.001)
        return transport

    return asyncio.run(run())


@pytest.mark.parametrize("implementation", ["httptools", "h11"])
def test_an_answer_leaves_in_one_write(implementation: str) -> None:
    # A process killed between its head and its body would leave a gateway holding half an
    # answer it cannot retry elsewhere; in one write, the answer is all sent or not at all.
    transport = serve_one(hello, implementation,
                          b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert len(transport.writes) == 1, transport.writes
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"\r\n\r\nok")


@pytest.mark.parametrize("implementation", ["httptools", "h11"])
def test_an_answer_written_over_time_arrives_whole_and_in_order(implementation: str) -> None:
    transport = serve_one(slow_body, implementation,
                          b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    sent = b"".join(transport.writes)
    assert sent.startswith(b"HTTP/1.1 200 OK\r\n")
    assert sent.endswith(b"\r\n\r\nslow")


def service_app() -> Any:
    """Our services' app shape (error envelope, body limit, metrics, access log) with a route."""
    from authloyalty.platform.http.app import create_app

    app = create_app("t", "t", "t", "0")

    @app.get("/thing")
    async def thing() -> dict[str, str]:
        return {"status": "Success"}

    return app


@pytest.mark.parametrize("path", [b"/thing", b"/missing"])
def test_a_service_answer_leaves_in_one_write(path: bytes) -> None:
    transport = serve_one(service_app(), "httptools",
                          b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert len(transport.writes) == 1, transport.writes
    assert transport.writes[0].endswith(b"}")
