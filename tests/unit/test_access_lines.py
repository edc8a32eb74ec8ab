"""The access log's JSON line is written by a path of its own (it is written once per request):
it must say exactly what the general log path would have said for the same request."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from structlog.contextvars import bind_contextvars, clear_contextvars

from authloyalty.platform import logging as platform_logging
from authloyalty.platform.logging import access_log, configure_logging, log_request

SPAN = SpanContext(trace_id=0x1F2E3D4C5B6A79880123456789ABCDEF, span_id=0x0123456789ABCDEF,
                   is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging("INFO", "json", service="loyalty", stream=out)
    clear_contextvars()
    yield out
    clear_contextvars()
    logging.getLogger().handlers.clear()
    platform_logging._json_access_lines = None


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def general_path(method: str, route: str, status: int, duration_ms: float) -> None:
    access_log.info("request", extra={"method": method, "route": route, "status": status,
                                      "duration_ms": duration_ms})


@pytest.mark.parametrize("bindings", [{}, {"request_id": "req-1"},
                                      {"request_id": "req-2", "service": "sso"}])
@pytest.mark.parametrize("in_span", [False, True])
def test_the_access_line_says_what_the_general_path_says(
        stream: io.StringIO, bindings: dict[str, str], in_span: bool) -> None:
    bind_contextvars(**bindings)
    span = NonRecordingSpan(SPAN if in_span else SpanContext(0, 0, False))
    with trace.use_span(span):
        log_request("GET", "/loyalty/me", 200, 1.25)
        general_path("GET", "/loyalty/me", 200, 1.25)
    fast, general = lines(stream)
    assert list(fast) == list(general)  # the same keys, in the same order
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
    assert stamp.fullmatch(str(fast.pop("timestamp")))
    assert stamp.fullmatch(str(general.pop("timestamp")))
    assert fast == general
    raw_fast, raw_general = stream.getvalue().splitlines()
    assert raw_fast.split('"timestamp"')[0] == raw_general.split('"timestamp"')[0]  # same text
    assert fast["service"] == bindings.get("service", "loyalty")
    assert ("trace_id" in fast) is in_span


def test_a_field_json_cannot_hold_plainly_is_still_one_valid_line(stream: io.StringIO) -> None:
    bind_contextvars(request_id="req-3", odd=object(), text='quote " and\nnewline')
    log_request("POST", "/loyalty/me/withdrawals", 201, 3.5)
    (line,) = lines(stream)
    assert line["text"] == 'quote " and\nnewline'
    assert line["status"] == 201


def test_a_handler_put_in_place_later_gets_the_line(stream: io.StringIO) -> None:
    # Whoever replaces the handler (a test capturing logs, an embedding application) sees
    # the line through it, not on the stream configured first.
    root = logging.getLogger()
    captured = io.StringIO()
    replacement = logging.StreamHandler(captured)
    replacement.setFormatter(root.handlers[0].formatter)
    root.handlers[:] = [replacement]
    log_request("GET", "/loyalty/me", 200, 1.0)
    assert stream.getvalue() == ""
    (line,) = [json.loads(text) for text in captured.getvalue().splitlines()]
    assert (line["event"], line["route"]) == ("request", "/loyalty/me")


def test_on_a_terminal_the_access_line_is_the_console_one() -> None:
    out = io.StringIO()
    configure_logging("INFO", "console", service="sso", stream=out)
    try:
        log_request("GET", "/auth/info", 200, 2.0)
    finally:
        logging.getLogger().handlers.clear()
    assert out.getvalue().rstrip("\n").endswith("sso     GET /auth/info 200 2.0 ms")
