"""Tracing on the local production topology: one registration is one trace in Jaeger.

The request enters through the gateway, sso writes the user and the outbox row, the relay (in
an sso replica) produces the event to Kafka, loyalty consumes it and inserts the welcome bonus:
all of it must be one trace in the stack's Jaeger, found through its query API, and the trace
id must be in the services' log lines for that request (sso's access log line, which also
holds the gateway's request id, and loyalty's line for the bonus).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.e2e_helpers import PASSWORD, bearer, unique_email
from tests.e2e.full_stack import StackHandle

pytestmark = pytest.mark.e2e

WELCOME_BONUS = 100
# Spans leave each process in batches (every 5 s); Jaeger stores them as they come.
TRACE_TIMEOUT = 45.0


def json_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON log lines of one component's log (other output is skipped)."""
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                yield json.loads(line)
            except ValueError:
                continue


def log_lines(stack: StackHandle, prefix: str) -> list[dict[str, Any]]:
    """Every JSON line of the components whose name starts with ``prefix``."""
    return [entry for c in stack.refresh().state["components"]
            if c["name"].startswith(prefix) for entry in json_lines(Path(c["log"]))]


def register_and_wait_for_bonus(stack: StackHandle,
                                headers: dict[str, str]) -> tuple[str, str]:
    """Register through the gateway; return (user id, access token) once the bonus is there."""
    with stack.client() as http:
        r = http.post("/auth/registration", headers=headers,
                      json={"email": unique_email("trace"), "password": PASSWORD})
        assert r.status_code == 201, r.text
        user_id, token = r.json()["user_id"], r.json()["access_token"]
        deadline = time.monotonic() + 30
        balance = None
        while time.monotonic() < deadline:
            me = http.get("/loyalty/me", headers=bearer(token))
            if me.status_code == 200:
                balance = me.json()["balance"]
                if balance == WELCOME_BONUS:
                    return user_id, token
            time.sleep(0.2)
    raise AssertionError(f"no welcome bonus within 30 s (balance {balance})")


def wait_for_trace(stack: StackHandle, trace_id: str,
                   complete: Any) -> dict[str, Any]:
    """The trace as Jaeger's query API returns it, once ``complete(trace)`` holds."""
    query = stack.component("jaeger")["urls"]["query"]
    deadline = time.monotonic() + TRACE_TIMEOUT
    trace: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = httpx.get(f"{query}/api/traces/{trace_id}", timeout=5.0)
        if r.status_code == 200 and r.json().get("data"):
            [trace] = r.json()["data"]
            if complete(trace):
                return trace
        time.sleep(1.0)
    raise AssertionError(f"trace {trace_id} incomplete after {TRACE_TIMEOUT} s: "
                         f"{summary(trace) if trace else 'not found'}")


def spans_of(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """Each span with its service name and its tags as a dict."""
    processes = trace["processes"]
    return [{**span, "service": processes[span["processID"]]["serviceName"],
             "attrs": {t["key"]: t["value"] for t in span.get("tags", [])}}
            for span in trace["spans"]]


def summary(trace: dict[str, Any]) -> list[str]:
    return sorted(f"{s['service']}: {s['operationName']}" for s in spans_of(trace))


def statement(span: dict[str, Any]) -> str:
    attrs = span["attrs"]
    return str(attrs.get("db.statement") or attrs.get("db.query.text") or "")


def registration_parts(trace: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The spans the registration's trace must have, by what they stand for."""
    spans = spans_of(trace)

    def where(service: str, test: Any) -> list[dict[str, Any]]:
        return [s for s in spans if s["service"] == service and test(s)]

    return {
        "sso request": where("sso", lambda s: s["operationName"] == "POST /auth/registration"
                             and s["attrs"].get("span.kind") == "server"),
        "sso user insert": where("sso", lambda s: "INSERT INTO users" in statement(s)),
        "sso outbox insert": where("sso", lambda s: "INSERT INTO outbox" in statement(s)),
        "relay produce": where("sso", lambda s: s["operationName"].endswith(" publish")
                               and s["attrs"].get("span.kind") == "producer"),
        "loyalty consume": where("loyalty", lambda s: s["operationName"].endswith(" process")
                                 and s["attrs"].get("span.kind") == "consumer"),
        "loyalty bonus insert": where("loyalty",
                                      lambda s: "INSERT INTO ledger_entries" in statement(s)),
    }


def complete_registration(trace: dict[str, Any]) -> bool:
    return all(registration_parts(trace).values())


def test_a_registration_is_one_trace_from_the_request_to_the_bonus(
        full_stack: StackHandle) -> None:
    request_id = f"trace-test-{secrets.token_hex(8)}"
    user_id, _ = register_and_wait_for_bonus(full_stack, {"X-Request-Id": request_id})

    # sso's access log line of the request names the request id and the trace.
    [line] = [e for e in log_lines(full_stack, "sso-")
              if e.get("request_id") == request_id and e.get("event") == "request"]
    assert line["route"] == "/auth/registration"
    assert line["status"] == 201
    trace_id = line["trace_id"]

    trace = wait_for_trace(full_stack, trace_id, complete_registration)
    parts = registration_parts(trace)
    # The relay's produce span continues the request's trace, and loyalty's consume span
    # continues the produce span, across the outbox table and Kafka's record headers.
    [produce] = parts["relay produce"]
    [consume] = parts["loyalty consume"]
    assert {"refType": "CHILD_OF", "traceID": trace_id, "spanID": produce["spanID"]} \
        in consume["references"]
    replicas = {p["serviceName"]: {t["key"]: t["value"] for t in p.get("tags", [])}
                for p in trace["processes"].values()}
    assert replicas["loyalty"]["service.instance.id"].startswith("loyalty-")
    assert replicas["sso"]["service.instance.id"].startswith("sso-")

    # loyalty's log line for the bonus carries the same trace.
    bonus_lines = [e for e in log_lines(full_stack, "loyalty-")
                   if user_id in str(e.get("event", ""))]
    assert bonus_lines
    assert all(e.get("trace_id") == trace_id for e in bonus_lines), bonus_lines


def test_a_trace_started_by_the_client_passes_the_gateway(full_stack: StackHandle) -> None:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    request_id = f"trace-test-{secrets.token_hex(8)}"
    register_and_wait_for_bonus(full_stack, {"traceparent": f"00-{trace_id}-{parent}-01",
                                             "X-Request-Id": request_id})

    # The gateway logs the client's traceparent beside its request id ...
    gateway_log = Path(full_stack.component("nginx")["log"]).with_name("nginx-access.log")
    [entry] = [e for e in json_lines(gateway_log) if e.get("request_id") == request_id]
    assert entry["traceparent"] == f"00-{trace_id}-{parent}-01"
    # ... and sso's request continues that trace.
    [line] = [e for e in log_lines(full_stack, "sso-") if e.get("request_id") == request_id
              and e.get("event") == "request"]
    assert line["trace_id"] == trace_id
    trace = wait_for_trace(full_stack, trace_id, complete_registration)
    [server] = registration_parts(trace)["sso request"]
    assert {"refType": "CHILD_OF", "traceID": trace_id, "spanID": parent} \
        in server["references"]
