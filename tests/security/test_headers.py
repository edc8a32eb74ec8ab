"""Request heads are bounded (item 5 of the hardening issue): a head over the limit (16 KiB,
100 fields by default) is answered 431 or its connection closed, quickly, without the server
holding it in memory, on both services."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.e2e_helpers import Server

pytestmark = pytest.mark.e2e

MAX_BYTES = 16 * 1024  # the default of sso/loyalty.request_headers
MAX_FIELDS = 100
SERVICES = [("sso", "/auth/healthz"), ("loyalty", "/loyalty/healthz")]


def port_and_path(target: Server, service: str) -> tuple[int, str]:
    path = dict(SERVICES)[service]
    return (target.sso_port if service == "sso" else target.loyalty_port), path


def send_head(port: int, path: str, fields: list[bytes], *, piece: int = 1 << 20,
              timeout: float = 20.0) -> tuple[int | None, float]:
    """Send ``GET path`` with ``fields`` (raw ``name: value`` lines) in writes of ``piece``
    bytes; return the answer's status (None: connection closed without one) and the seconds
    from the first byte sent to the answer or the close."""
    head = b"".join([f"GET {path} HTTP/1.1\r\n".encode(), b"Host: 127.0.0.1\r\n",
                     *(line + b"\r\n" for line in fields), b"\r\n"])
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            view = memoryview(head)
            for offset in range(0, len(head), piece):
                sock.sendall(view[offset:offset + piece])
        except OSError:
            pass  # the server stopped reading: what it answered is still worth reading
        answer = b""
        try:
            while b"\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except OSError:
            pass
    elapsed = time.monotonic() - started
    if not answer.startswith(b"HTTP/1.1 "):
        return None, elapsed
    return int(answer.split(b" ", 2)[1]), elapsed


def rss_kib(pid: int) -> int:
    """The resident memory of process ``pid`` now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def peak_rss_growth_kib(pid: int, action: threading.Thread) -> int:
    """How far the resident memory of ``pid`` rose above its level before, while ``action``
    ran (sampled every 10 ms)."""
    before = peak = rss_kib(pid)
    action.start()
    while action.is_alive():
        peak = max(peak, rss_kib(pid))
        time.sleep(0.01)
    action.join()
    return peak - before


@pytest.mark.parametrize("service", ["sso", "loyalty"])
@pytest.mark.parametrize("size_mb", [16, 64])
def test_a_huge_header_is_refused_at_once_and_never_held_in_memory(
        target: Server, service: str, size_mb: int) -> None:
    assert target.process is not None
    port, path = port_and_path(target, service)
    results: list[tuple[int | None, float]] = []
    big = b"X-Big: " + b"a" * (size_mb << 20)
    sender = threading.Thread(
        target=lambda: results.append(send_head(port, path, [big], piece=64 * 1024)))
    growth = peak_rss_growth_kib(target.process.pid, sender)
    status, elapsed = results[0]
    assert growth < 8 * 1024, f"the server's memory grew by {growth} KiB"
    assert status in (431, None), status
    assert elapsed < 5.0, f"answered after {elapsed:.1f} s"
    assert send_head(port, path, [])[0] == 200  # and it still serves


@pytest.mark.parametrize("service", ["sso", "loyalty"])
def test_five_thousand_headers_are_refused(target: Server, service: str) -> None:
    port, path = port_and_path(target, service)
    fields = [f"X-H{i}: v".encode() for i in range(5000)]
    assert send_head(port, path, fields)[0] in (431, None)


@pytest.mark.parametrize("service", ["sso", "loyalty"])
def test_the_field_limit_counts_every_field(target: Server, service: str) -> None:
    port, path = port_and_path(target, service)
    # Host is one of them.
    at_limit = [f"X-H{i}: v".encode() for i in range(MAX_FIELDS - 1)]
    assert send_head(port, path, at_limit)[0] == 200
    assert send_head(port, path, [*at_limit, b"X-One-More: v"])[0] == 431


@pytest.mark.parametrize("service", ["sso", "loyalty"])
@pytest.mark.parametrize("piece", [1 << 20, 1000], ids=["one write", "1000-byte writes"])
def test_the_byte_limit_holds_however_the_head_is_split(
        target: Server, service: str, piece: int) -> None:
    port, path = port_and_path(target, service)
    # Split over fields, so that no single field is what gives it away.
    fitting = [f"X-Cookie-{i}: {'c' * 3000}".encode() for i in range(4)]  # ~12 KiB
    assert send_head(port, path, fitting, piece=piece)[0] == 200
    too_much = [f"X-Cookie-{i}: {'c' * 3000}".encode() for i in range(6)]  # ~18 KiB
    assert send_head(port, path, too_much, piece=piece)[0] == 431


def test_a_refused_head_is_answered_with_the_error_envelope(target: Server) -> None:
    with socket.create_connection(("127.0.0.1", target.loyalty_port), timeout=10) as sock:
        sock.sendall(b"GET /loyalty/healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
                     + b"a" * (MAX_BYTES + 1) + b"\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), head
    assert b"connection: close" in head.lower()
    assert body == (b'{"status":"Error","error":"request header fields too large",'
                    b'"code":"request_header_fields_too_large"}')


def test_requests_on_a_kept_alive_connection_each_get_the_whole_limit(target: Server) -> None:
    fields = b"".join(f"X-H{i}: v\r\n".encode() for i in range(MAX_FIELDS - 2))
    one = b"GET /auth/healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"
    with socket.create_connection(("127.0.0.1", target.sso_port), timeout=10) as sock:
        for _ in range(5):
            sock.sendall(one)
            answer = b""
            while not answer.endswith(b'{"status":"Success"}'):
                chunk = sock.recv(4096)
                assert chunk, answer
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 "), answer
