"""What ``authloyalty up`` prints in a terminal, and without one.

The process runs as a user runs it: its stdout and stderr on a pseudo-terminal (or on pipes, as
under a supervisor), stopped with Ctrl+C (SIGINT) or SIGTERM. The tests read what a user would:
readable lines naming their service, one line per request, no line twice, nothing alarming at
shutdown, exit code 0; JSON lines when no terminal is attached or when configured."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from devstack.common import free_ports
from tests.e2e.e2e_helpers import (
    AUTHLOYALTY,
    PASSWORD,
    START_TIMEOUT,
    STOP_TIMEOUT,
    bearer,
    server_env,
    unique_email,
)

pytestmark = pytest.mark.e2e

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# time, level, service, message: ``12:00:01 info    loyalty GET /loyalty/me 200 3.1 ms ...``
CONSOLE_LINE = re.compile(
    r"^(?P<time>\d\d:\d\d:\d\d) (?P<level>debug|info|warning|error|critical)\s+"
    r"(?P<service>sso|loyalty|relay|cli)\s+(?P<message>\S.*)$")
BANNER_FIRST, BANNER_LAST = "authloyalty is running", "Stop with Ctrl+C."
# What must never reach a user's screen when the server stops.
ALARMS = ("Traceback", "Task was destroyed", "Event loop is closed", "Exception ignored",
          "was never awaited", "RuntimeWarning", "Exception in ASGI application",
          "CancelledError", "KeyboardInterrupt")


@dataclass
class Run:
    """One ``authloyalty up`` on free ports in a temp dir; stdout and stderr on one
    pseudo-terminal (``tty``) or on two pipes."""

    data_dir: Path
    tty: bool
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    sso: str = ""
    loyalty: str = ""
    _chunks: dict[str, list[bytes]] = field(default_factory=dict)
    _readers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        """Start and wait for the banner."""
        sso_port, loyalty_port, grpc_port = free_ports(3)
        self.sso, self.loyalty = f"http://127.0.0.1:{sso_port}", f"http://127.0.0.1:{loyalty_port}"
        command = [AUTHLOYALTY, "up", "--data-dir", str(self.data_dir),
                   "--sso-port", str(sso_port), "--loyalty-port", str(loyalty_port),
                   "--grpc-port", str(grpc_port)]
        env = server_env(**self.env)
        if "NO_COLOR" not in self.env:
            env.pop("NO_COLOR", None)  # colours as a user sees them; the reader strips them
        if self.tty:
            main, child = pty.openpty()
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=child,
                                            stderr=child, env=env, start_new_session=True)
            os.close(child)
            self._read("terminal", main)
        else:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            env=env)
            assert self.process.stdout is not None
            assert self.process.stderr is not None
            self._read("stdout", self.process.stdout.fileno())
            self._read("stderr", self.process.stderr.fileno())
        deadline = time.monotonic() + START_TIMEOUT
        while BANNER_LAST not in self.text("terminal" if self.tty else "stdout"):
            assert self.process.poll() is None, f"exited before its banner:\n{self.everything()}"
            assert time.monotonic() < deadline, f"no banner in {START_TIMEOUT} s:\n" \
                                                f"{self.everything()}"
            time.sleep(0.05)

    def _read(self, name: str, fd: int) -> None:
        chunks = self._chunks.setdefault(name, [])

        def read() -> None:
            while True:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: the terminal's last writer has gone
                    data = b""
                if not data:
                    break
                chunks.append(data)
            if name == "terminal":
                os.close(fd)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        self._readers.append(reader)

    def raw(self, name: str) -> str:
        """What was written to ``name`` so far, byte for byte."""
        return b"".join(self._chunks.get(name, [])).decode(errors="replace")

    def text(self, name: str) -> str:
        """What was written to ``name`` so far, as a user reads it (no colours, no CR)."""
        return ANSI.sub("", self.raw(name)).replace("\r\n", "\n")

    def everything(self) -> str:
        return "\n".join(f"--- {name}\n{self.text(name)}" for name in self._chunks)

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self) -> int:
        """The exit code, once the process and everything it wrote are done."""
        assert self.process is not None
        try:
            code = self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)
            pytest.fail(f"still running {STOP_TIMEOUT} s after the signal:\n{self.everything()}")
        for reader in self._readers:
            reader.join(timeout=5)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        self.process = None
        return code

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.wait()


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    """An ``authloyalty up`` on a pseudo-terminal (configured by the test before start)."""
    started = Run(tmp_path / "data", tty=True)
    try:
        yield started
    finally:
        started.kill()


def log_lines(terminal: str) -> list[str]:
    """The terminal's lines without the banner (printed once, between its first and last
    lines)."""
    lines = terminal.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(BANNER_FIRST))
    last = lines.index(BANNER_LAST)
    return [line for line in lines[:first] + lines[last + 1:] if line.strip()]


def request_id_of(response: httpx.Response, sent: str | None) -> str:
    """The request id the server logged: the one sent, else the one it made and answered."""
    made: str | None = response.headers.get("x-request-id")
    if sent is not None:
        assert made is None, "a request id sent is not answered again"
        return sent
    assert made is not None, response.headers
    assert re.fullmatch(r"[0-9a-f]{32}", made), made
    return made


def use_the_api(run: Run) -> tuple[str, dict[str, tuple[str, str, int, str]]]:
    """Register, read the balance until the welcome bonus is there, call without a token:
    the user id, and per request id the service, method, path and status."""
    calls: dict[str, tuple[str, str, int, str]] = {}
    with httpx.Client(timeout=30) as client:
        sent = f"tty-{uuid.uuid4().hex[:12]}"
        r = client.post(f"{run.sso}/auth/registration", headers={"X-Request-Id": sent},
                        json={"email": unique_email("tty"), "password": PASSWORD})
        assert r.status_code == 201, r.text
        calls[request_id_of(r, sent)] = ("sso", "POST", 201, "/auth/registration")
        user_id, token = r.json()["user_id"], r.json()["access_token"]
        deadline = time.monotonic() + 15
        while True:
            r = client.get(f"{run.loyalty}/loyalty/me", headers=bearer(token))
            calls[request_id_of(r, None)] = ("loyalty", "GET", r.status_code, "/loyalty/me")
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert r.status_code == 200, r.text
        r = client.get(f"{run.loyalty}/loyalty/me")
        assert r.status_code == 401
        calls[request_id_of(r, None)] = ("loyalty", "GET", 401, "/loyalty/me")
    return user_id, calls


def assert_no_alarm(output: str) -> None:
    for alarm in ALARMS:
        assert alarm not in output, output


def test_a_terminal_shows_one_readable_line_per_event_naming_its_service(run: Run) -> None:
    run.start()
    user_id, calls = use_the_api(run)
    time.sleep(0.3)  # the last access line is written just after its answer
    run.signal(signal.SIGINT)
    assert run.wait() == 0, run.everything()

    terminal = run.text("terminal")
    assert_no_alarm(terminal)
    lines = log_lines(terminal)
    parsed = [CONSOLE_LINE.match(line) for line in lines]
    assert all(parsed), [line for line, m in zip(lines, parsed, strict=True) if not m]
    messages = [(m["service"], m["message"]) for m in parsed if m]
    assert not any(m["level"] in ("error", "critical") for m in parsed if m), terminal
    # No line twice (the time aside): each lifecycle line once per server, or once.
    twice = [line for line, count in Counter(messages).items() if count > 1]
    assert not twice, terminal
    services_shutting_down = sorted(s for s, text in messages if text == "Shutting down")
    assert services_shutting_down == ["loyalty", "sso"], terminal
    assert sum(text.startswith("Started server process") for _, text in messages) == 1

    # One access line per request: its service, method, path, status, duration, request id.
    for request_id, (service, method, status, path) in calls.items():
        logged = [(s, text) for s, text in messages if f"request_id={request_id}" in text]
        assert len(logged) == 1, (request_id, terminal)
        [(logged_service, text)] = logged
        assert logged_service == service, text
        assert re.fullmatch(rf"{method} {re.escape(path)} {status} \d+(\.\d+)? ms "
                            rf"request_id={request_id}", text), text
    requests = [text for _, text in messages if "request_id=" in text]
    assert len(requests) == len(calls), terminal
    # A line written outside any request names its service too.
    assert any(s == "loyalty" and text.startswith(f"account {user_id} opened with a welcome "
                                                  "bonus of 100 points")
               for s, text in messages), terminal


def test_a_second_ctrl_c_stops_at_once_without_a_traceback(run: Run) -> None:
    run.env = {"NO_COLOR": "1"}
    run.start()
    sso_port = int(run.sso.rsplit(":", 1)[1])
    # A request whose body never finishes: the first Ctrl+C waits for it.
    with socket.create_connection(("127.0.0.1", sso_port), timeout=10) as hanging:
        hanging.sendall(b"POST /auth/login HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"em")
        time.sleep(0.3)
        run.signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        while "Waiting for connections to close" not in run.text("terminal"):
            assert time.monotonic() < deadline, run.everything()
            time.sleep(0.05)
        assert run.process is not None
        assert run.process.poll() is None, "did not wait for the request"
        run.signal(signal.SIGINT)
        assert run.wait() == 0, run.everything()

    terminal = run.text("terminal")
    assert_no_alarm(terminal)
    assert terminal == run.raw("terminal").replace("\r\n", "\n"), "colours despite NO_COLOR"
    lines = log_lines(terminal)
    assert all(CONSOLE_LINE.match(line) for line in lines), terminal
    waiting = [CONSOLE_LINE.match(line) for line in lines
               if "Waiting for connections to close" in line]
    assert [m["service"] for m in waiting if m] == ["sso"], terminal
    cancelled = [line for line in lines if "request cancelled" in line]
    assert len(cancelled) == 1, terminal
    assert re.search(r" warning +sso +request cancelled: the server was stopped before it was "
                     r"answered$", cancelled[0]), cancelled


def json_lines(text: str) -> list[dict[str, object]]:
    """Every line as a JSON object (fails on a line that is not one)."""
    parsed = []
    for line in text.splitlines():
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}\n{text}")
    return parsed


def test_without_a_terminal_every_log_line_is_json(tmp_path: Path) -> None:
    run = Run(tmp_path / "data", tty=False)
    try:
        run.start()
        user_id, calls = use_the_api(run)
        time.sleep(0.3)
        run.signal(signal.SIGTERM)  # as a supervisor stops it
        assert run.wait() == 0, run.everything()
    finally:
        run.kill()
    assert_no_alarm(run.everything())
    assert BANNER_LAST in run.text("stdout")
    lines = json_lines(run.text("stderr"))
    assert all({"event", "level", "service", "timestamp", "logger"} <= line.keys()
               for line in lines), lines
    requests = [line for line in lines if line["event"] == "request"]
    assert len(requests) == len(calls), lines
    for line in requests:
        service, method, status, path = calls[str(line["request_id"])]
        assert (line["service"], line["method"], line["route"], line["status"]) == (
            service, method, path, status), line
        assert isinstance(line["duration_ms"], float | int), line
    assert [line["service"] for line in lines
            if str(line["event"]).startswith(f"account {user_id} opened")] == ["loyalty"]


def test_a_terminal_shows_json_when_configured_and_no_request_lines_when_off(
        run: Run) -> None:
    run.env = {"AUTHLOYALTY_LOG_FORMAT": "json", "AUTHLOYALTY_ACCESS_LOG": "false"}
    run.start()
    with httpx.Client(timeout=30) as client:
        r = client.post(f"{run.sso}/auth/registration",
                        json={"email": unique_email("tty"), "password": PASSWORD})
        assert r.status_code == 201, r.text
        assert "x-request-id" not in r.headers
    time.sleep(0.3)
    run.signal(signal.SIGINT)
    assert run.wait() == 0, run.everything()
    terminal = run.text("terminal")
    assert_no_alarm(terminal)
    lines = json_lines("\n".join(log_lines(terminal)))
    assert not [line for line in lines if line["event"] == "request" or "request_id" in line]
    assert {"sso", "loyalty"} <= {line["service"] for line in lines}, lines
