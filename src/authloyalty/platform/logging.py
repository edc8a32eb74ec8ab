"""Structured logs: one JSON object per line (or readable console lines), via structlog.

Every line written inside a span carries its ``trace_id`` and ``span_id``; every line written
while a request is served carries the gateway's ``request_id`` (bound by the access log
middleware), so a line, its request and its trace can be found from one another."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from authloyalty.platform import telemetry


def _add_trace_ids(_logger: Any, _method: str, event: MutableMapping[str, Any]
                   ) -> MutableMapping[str, Any]:
    event.update(telemetry.log_ids())
    return event


# Fields passed with ``extra=`` that become keys of the JSON line (the access log's,
# platform/http/middleware.py); others (uvicorn's colour copies) are left out.
EXTRA_FIELDS = ("method", "route", "status", "duration_ms")


def configure_logging(level: str = "INFO", fmt: str = "json", *, access_log: bool = True
                      ) -> None:
    """Route stdlib and structlog records through one renderer on stderr; without
    ``access_log`` no line per HTTP request (nor its ``request_id`` on other lines)."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_trace_ids,
        structlog.stdlib.ExtraAdder(allow=EXTRA_FIELDS),
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "httpx", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The access log middleware does nothing while its logger is below INFO.
    logging.getLogger("authloyalty.access").setLevel(logging.NOTSET if access_log
                                                     else logging.WARNING)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
