"""Structured logs: one JSON object per line, or readable console lines on a terminal.

Every line names the ``service`` that wrote it (sso, loyalty, relay, or the command itself:
``cli``). Every line written inside a span carries its ``trace_id`` and ``span_id``; every line
written while a request is served carries its ``request_id`` (bound by the access log
middleware), so a line, its request and its trace can be found from one another."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import MutableMapping
from functools import lru_cache
from typing import Any, TextIO

import structlog

from authloyalty.platform import telemetry

EventDict = MutableMapping[str, Any]


def _add_trace_ids(_logger: Any, _method: str, event: EventDict) -> EventDict:
    event.update(telemetry.log_ids())
    return event


# Fields passed with ``extra=`` that become keys of the JSON line (the access log's,
# platform/http/middleware.py, and ``service`` set by _UvicornLines); others (uvicorn's
# colour copies) are left out.
EXTRA_FIELDS = ("method", "route", "status", "duration_ms", "service")

# Loggers whose lines belong to one service wherever they run (in ``authloyalty up`` the relay
# delivers to loyalty's handlers in its own task). Other lines take the service bound to the
# task that wrote them (cli.py binds each HTTP server's), else the process's own.
SERVICE_OF_LOGGER = {
    "authloyalty.sso": "sso",
    "authloyalty.loyalty": "loyalty",
    "authloyalty.platform.outbox": "relay",
    "authloyalty.platform.bus": "relay",
    "authloyalty.platform.grpc": "sso",
    "authloyalty.platform.jwks": "loyalty",
    "authloyalty.platform.kafka_reader": "loyalty",
}


@lru_cache(maxsize=256)
def service_of_logger(name: str) -> str | None:
    """The service a logger's lines always belong to, if any (longest dotted prefix)."""
    while name:
        if name in SERVICE_OF_LOGGER:
            return SERVICE_OF_LOGGER[name]
        name = name.rpartition(".")[0]
    return None


class _ServiceNamer:
    """Processor: set ``service`` from the logger, else the task's binding, else the process."""

    def __init__(self, default: str) -> None:
        self.default = default

    def __call__(self, _logger: Any, _method: str, event: EventDict) -> EventDict:
        owner = service_of_logger(str(event.get("logger", "")))
        if owner is not None:
            event["service"] = owner
        elif not event.get("service"):
            event["service"] = self.default
        return event


class _UvicornLines(logging.Filter):
    """Two of uvicorn's lines, as a user should read them.

    uvicorn logs "Started/Finished server process [pid]" once per server; ``authloyalty up``
    runs two servers in one process, so the second copy is dropped and the first is the
    process's own line. A request cancelled because the server was stopped without waiting
    for it (a second Ctrl+C) is one warning, not uvicorn's traceback of the cancellation."""

    PROCESS_LINES = frozenset({"Started server process [%d]", "Finished server process [%d]"})

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
            record.msg, record.args, record.exc_info = CANCELLED_REQUEST, None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            return True
        if record.msg not in self.PROCESS_LINES:
            return True
        text = record.getMessage()
        if text in self.seen:
            return False
        self.seen.add(text)
        record.service = self.service
        return True


CANCELLED_REQUEST = "request cancelled: the server was stopped before it was answered"


def _for_console(_logger: Any, _method: str, event: EventDict) -> EventDict:
    """Console lines: an access line reads ``POST /auth/registration 201 12.3 ms``; the
    logger's name is left to the JSON lines."""
    event.pop("logger", None)
    if event.get("event") == "request" and "route" in event:
        event["event"] = (f"{event.pop('method', '?')} {event.pop('route')} "
                          f"{event.pop('status', '?')} {event.pop('duration_ms', '?')} ms")
    return event


def wants_colors(stream: TextIO) -> bool:
    """Colours on a terminal unless ``NO_COLOR`` is set (https://no-color.org)."""
    return _isatty(stream) and not os.environ.get("NO_COLOR")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def resolve_format(fmt: str, stream: TextIO) -> str:
    """``auto`` is ``console`` on a terminal and ``json`` otherwise (a file, a pipe, a
    supervisor, a container's log collector)."""
    if fmt == "auto":
        return "console" if _isatty(stream) else "json"
    return fmt


def _console_renderer(colors: bool) -> structlog.dev.ConsoleRenderer:
    dev = structlog.dev
    styles = dev.ConsoleRenderer.get_default_level_styles(colors=colors)
    reset = dev.RESET_ALL if colors else ""
    plain = dev.KeyValueColumnFormatter(key_style=None, value_style="", reset_style="",
                                        value_repr=str)
    dim = dev.DIM if colors else ""
    bright = dev.BRIGHT if colors else ""
    # The columns carry the colours (none without ``colors``).
    return dev.ConsoleRenderer(
        exception_formatter=dev.plain_traceback,  # never locals: they may hold secrets
        columns=[
            dev.Column("timestamp", dev.KeyValueColumnFormatter(
                key_style=None, value_style=dim, reset_style=reset, value_repr=str)),
            dev.Column("level", lambda _key, level: (
                f"{styles.get(str(level), '')}{level!s:<7}{reset}")),
            dev.Column("service", dev.KeyValueColumnFormatter(
                key_style=None, value_style=bright, reset_style=reset, value_repr=str,
                width=7)),
            dev.Column("event", plain),
            dev.Column("", dev.KeyValueColumnFormatter(
                key_style=dim, value_style="", reset_style=reset, value_repr=str)),
        ])


ACCESS_LOGGER = "authloyalty.access"
access_log = logging.getLogger(ACCESS_LOGGER)


class _JsonAccessLines:
    """The access log's JSON line, written straight to the handler's stream.

    It is written once per request, and the general path (a LogRecord, copied by structlog's
    formatter, then eight processors) cost ~50 µs of a ~200 µs balance read; this one writes
    the same line (same keys, order and rendering; tests/unit/test_access_lines.py holds the
    two to one output) for a fraction of that. Lines are whole and written under the
    handler's lock, like every other line."""

    def __init__(self, handler: logging.StreamHandler[TextIO],
                 name_service: _ServiceNamer, stamp: structlog.types.Processor) -> None:
        self.handler = handler
        # The chain's own processors for the service and the timestamp.
        self._name_service = name_service
        self._stamp = stamp

    def __call__(self, method: str, route: str, status: int, duration_ms: float) -> None:
        event: dict[str, Any] = {"event": "request"}
        event.update(structlog.contextvars.get_contextvars())
        event.update(telemetry.log_ids())
        event["method"], event["route"] = method, route
        event["status"], event["duration_ms"] = status, duration_ms
        event["level"], event["logger"] = "info", ACCESS_LOGGER
        self._name_service(None, "info", event)
        self._stamp(None, "info", event)
        line = _ENCODER.encode(event) + "\n"  # as structlog's JSONRenderer writes it
        handler = self.handler
        handler.acquire()
        try:
            handler.stream.write(line)
            handler.flush()
        finally:
            handler.release()


_ENCODER = json.JSONEncoder(default=repr)
_json_access_lines: _JsonAccessLines | None = None


def log_request(method: str, route: str, status: int, duration_ms: float) -> None:
    """The access log's line for one request (callers check the logger is enabled)."""
    lines = _json_access_lines
    # Straight to the stream only while the handler set up for it is the only one: whoever
    # replaced or added handlers since gets the line through them.
    handlers = logging.root.handlers
    if lines is not None and len(handlers) == 1 and handlers[0] is lines.handler:
        lines(method, route, status, duration_ms)
    else:
        access_log.info("request", extra={"method": method, "route": route, "status": status,
                                          "duration_ms": duration_ms})


def configure_logging(level: str = "INFO", fmt: str = "auto", *, access_log: bool = True,
                      service: str = "cli", stream: TextIO | None = None) -> None:
    """Route stdlib and structlog records through one renderer on ``stream`` (stderr):
    ``json``, ``console`` or ``auto`` (console on a terminal); lines of no service are
    ``service``'s. Without ``access_log`` no line per HTTP request (nor its ``request_id``
    on other lines)."""
    stream = sys.stderr if stream is None else stream
    console = resolve_format(fmt, stream) == "console"
    name_service = _ServiceNamer(service)
    stamp = (structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False) if console
             else structlog.processors.TimeStamper(fmt="iso", utc=True))
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_trace_ids,
        structlog.stdlib.ExtraAdder(allow=EXTRA_FIELDS),
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        name_service,
        stamp,
    ]
    renderer: list[structlog.types.Processor] = (
        [_for_console, _console_renderer(wants_colors(stream))] if console
        else [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    global _json_access_lines
    _json_access_lines = None if console else _JsonAccessLines(handler, name_service, stamp)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "httpx", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.filters[:] = [f for f in uvicorn_error.filters
                                if not isinstance(f, _UvicornLines)]
    uvicorn_error.addFilter(_UvicornLines(service))
    # The access log middleware does nothing while its logger is below INFO.
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.NOTSET if access_log
                                              else logging.WARNING)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
