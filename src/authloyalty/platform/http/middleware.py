"""The ASGI middlewares of both services: the request-body limit (413), the request
metrics by route and the access log."""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.contextvars import bind_contextvars, reset_contextvars

from authloyalty.platform import metrics
from authloyalty.platform.http.responses import dump_json
from authloyalty.platform.logging import access_log, log_request

MAX_BODY_BYTES = 64 * 1024


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes with 413, declared or streamed; a request
    whose client disconnected ends quietly."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _send_413(send)
                return
        received = 0
        started = False
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Answer 413 ourselves; the app sees a client that went away.
                    refused = True
                    if not started:
                        await _send_413(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except ClientDisconnect:
            # The client went away (or we answered 413 and told the app so): its mistake, not
            # ours, and nobody is left to answer. No traceback in the log.
            return


async def _send_413(send: Send) -> None:
    body = dump_json({"status": "Error", "error": "request body exceeds 64 KiB",
                      "code": "payload_too_large"})
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class MetricsMiddleware:
    """Counts and times every request by route template (plain ASGI: no per-request tasks)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        # The labelled series of each (method, route, status) seen, so that a request costs
        # one dictionary lookup, not prometheus_client's label handling (`labels()` was 3.3 %
        # of the samples of `bench/profile.py --scenario bare_loyalty`). As many entries as the
        # metrics themselves hold series.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            # The router records the matched route in the (shared) scope.
            route = getattr(scope.get("route"), "path", "unmatched")
            key = (scope["method"], route, status)
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = (
                    metrics.HTTP_REQUESTS.labels(self.service, key[0], route, str(status)),
                    metrics.HTTP_LATENCY.labels(self.service, key[0], route))
            series[0].inc()
            series[1].observe(time.perf_counter() - started)


# Polled by the stack's readiness checks and by Prometheus: not worth a line each.
_UNLOGGED_ROUTES = frozenset({"/metrics", "/auth/healthz", "/auth/ready", "/loyalty/healthz",
                              "/loyalty/ready"})


class AccessLogMiddleware:
    """One log line per request: method, route template, status and duration. Every line
    logged while the request is served carries the gateway's ``X-Request-Id`` as
    ``request_id`` (one made here, and sent back as ``X-Request-Id``, when the request came
    without a usable one, as when nothing stands in front of the service), and, since this
    runs inside the request's server span, its trace_id and span_id (platform/logging.py):
    the gateway's access log (request id) leads to the trace and back. The route template,
    never the raw path: paths hold ids. With the access log off, a client's own request id is
    still bound: the audit log of admin actions records it (platform/audit.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not access_log.isEnabledFor(logging.INFO):
            await self._unlogged(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        request_id = _request_id(scope)
        made_here = request_id is None
        if request_id is None:
            request_id = secrets.token_hex(16)

        async def observing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if made_here:
                    message["headers"] = [*message.get("headers", ()),
                                          (b"x-request-id", request_id.encode())]
            await send(message)

        bound = bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, observing_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            if route not in _UNLOGGED_ROUTES:
                log_request(scope["method"], route, status,
                            round((time.perf_counter() - started) * 1000, 2))
            reset_contextvars(**bound)

    async def _unlogged(self, scope: Scope, receive: Receive, send: Send) -> None:
        # No log line to tie a request id of our own to: none is made, the client's is kept.
        request_id = _request_id(scope)
        if request_id is None:
            await self.app(scope, receive, send)
            return
        bound = bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send)
        finally:
            reset_contextvars(**bound)


# The gateway's rule for a client's request id (deploy/nginx/gateway.conf.template): anything
# else, control characters included, never reaches a log line.
_USABLE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def _request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            return value.decode() if _USABLE_REQUEST_ID.fullmatch(value) else None
    return None


def install_metrics(app: FastAPI, service: str) -> None:
    """Count and time every request by route template; serve ``/metrics``."""
    app.add_middleware(MetricsMiddleware, service=service)

    @app.get("/metrics", include_in_schema=False)
    async def _metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
