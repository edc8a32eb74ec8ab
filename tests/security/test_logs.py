"""The log holds no client's mistake as a traceback and no personal data (item 10 of the
hardening issue): oversized or abandoned bodies end quietly, the bootstrap admin is logged by
id, not by email."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.e2e.e2e_helpers import ADMIN_EMAIL, Server

pytestmark = pytest.mark.e2e

BODY_LIMIT = 64 * 1024


def chunked_oversized_body(port: int, path: str) -> bytes:
    """POST a chunked body over the limit (no Content-Length to refuse it by), read what comes
    back, and disconnect."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Authorization: Bearer x.y.z\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b"a" * 16384
        answer = b""
        try:
            for _ in range(BODY_LIMIT // len(chunk) + 2):
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            answer = sock.recv(100)
        except OSError:
            pass
    return answer


def abandoned_body(port: int, path: str) -> None:
    """Announce a body, send part of it, and go away."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Authorization: Bearer x.y.z\r\nContent-Length: 1000\r\n\r\n{\"amo".encode())
        time.sleep(0.1)


def log_after(target: Server, offset: int) -> str:
    """What the server logged since ``offset``, once it has answered a request after it."""
    with httpx.Client(timeout=10) as client:
        assert client.get(f"{target.loyalty}/loyalty/healthz").status_code == 200
        assert client.get(f"{target.sso}/auth/healthz").status_code == 200
    time.sleep(0.5)
    return target.output()[offset:]


@pytest.mark.parametrize(("service", "path"), [
    ("loyalty", "/loyalty/me/withdrawals"),  # hand-resolved: reads the body itself
    ("loyalty", "/loyalty/admin/accounts/00000000-0000-0000-0000-000000000000/deposits"),
    ("sso", "/auth/login"),
])
def test_a_client_sending_too_much_or_going_away_leaves_no_traceback(
        target: Server, service: str, path: str) -> None:
    port = target.loyalty_port if service == "loyalty" else target.sso_port
    offset = len(target.output())
    answer = chunked_oversized_body(port, path)
    assert answer.startswith(b"HTTP/1.1 413 ") or not answer, answer
    abandoned_body(port, path)
    logged = log_after(target, offset)
    for sign in ("Traceback", "ClientDisconnect", "Exception in ASGI application"):
        assert sign not in logged, logged


def test_the_bootstrap_admin_is_logged_by_id_not_by_email(target: Server) -> None:
    # The helper writes the command line (with --admin-email) as a header: not the server's.
    logged = "\n".join(line for line in target.output().splitlines()
                       if not line.startswith("===== start"))
    assert "bootstrap admin" in logged
    assert ADMIN_EMAIL not in logged
