"""HTTP plumbing shared by both services: error envelope, limits, metrics, bearer auth."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import TypeAdapter, ValidationError
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authloyalty.platform import metrics
from authloyalty.platform.errors import DomainError, ErrorKind, MissingToken
from authloyalty.platform.schemas import ErrorOut, StatusOut

T = TypeVar("T")

HTTP_STATUS = {
    ErrorKind.INVALID: 422,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.THROTTLED: 429,
    ErrorKind.UNAVAILABLE: 503,
}
MAX_BODY_BYTES = 64 * 1024


def dump_json(body: dict[str, Any]) -> bytes:
    """Compact JSON in UTF-8, keys in insertion order (stored idempotent responses replay
    byte for byte)."""
    return orjson.dumps(body)


def json_response(status: int, body: dict[str, Any],
                  headers: dict[str, str] | None = None) -> Response:
    """A JSON response with our content type."""
    return Response(dump_json(body), status_code=status, media_type="application/json",
                    headers=headers)


def success(status: int = 200, **fields: Any) -> Response:
    """``{"status":"Success", ...fields}``."""
    return json_response(status, {"status": "Success", **fields})


# Answers carrying tokens or personal data: no cache, shared or private, may keep them
# (RFC 9111 §5.2.2.5), and HTTP/1.0 caches are told too, as RFC 6749 §5.1 asks of token answers.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def private_success(status: int = 200, **fields: Any) -> Response:
    """:func:`success` for an answer with tokens or personal data: never cached."""
    return json_response(status, {"status": "Success", **fields}, NO_STORE)


class PrivateJSONResponse(JSONResponse):
    """The response class of routes answering with personal data: the response model's JSON
    (:func:`dump_json`) with :data:`NO_STORE` (a JSONResponse, so that OpenAPI documents the
    route's response model)."""

    def __init__(self, content: Any, status_code: int = 200,
                 headers: Mapping[str, str] | None = None, media_type: str | None = None,
                 background: BackgroundTask | None = None) -> None:
        super().__init__(content, status_code, {**NO_STORE, **(headers or {})}, media_type,
                         background)

    def render(self, content: Any) -> bytes:
        """``content`` (a serialised response model) as compact JSON."""
        return dump_json(content)


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None, **extra: Any) -> Response:
    """``{"status":"Error","error":message,"code":code}``."""
    body = {"status": "Error", "error": message, "code": code, **extra}
    return json_response(status, body, headers)


def _field_name(loc: Sequence[int | str]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _validation_message(error: dict[str, Any]) -> str:
    msg = str(error.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ")


async def _on_validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "validation_error", "request body is not valid JSON")
    fields = [{"field": _field_name(e.get("loc", ())), "message": _validation_message(e)}
              for e in errors]
    message = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return error_response(422, "validation_error", message, fields=fields)


async def _on_domain_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    status = HTTP_STATUS[exc.kind]
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(int(retry_after))
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return error_response(status, exc.code, exc.message, headers or None)


_HTTP_CODES = {400: "validation_error", 404: "not_found", 405: "method_not_allowed",
               413: "payload_too_large"}


async def _on_http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = {404: "no such route", 405: "method not allowed"}.get(
        exc.status_code, str(exc.detail))
    return error_response(exc.status_code, code, message, dict(exc.headers or {}) or None)


async def _on_unexpected(_: Request, exc: Exception) -> Response:
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Map every failure to the JSON error envelope, once."""
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(DomainError, _on_domain_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)


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
            method = scope["method"]
            metrics.HTTP_REQUESTS.labels(self.service, method, route, str(status)).inc()
            metrics.HTTP_LATENCY.labels(self.service, method, route).observe(
                time.perf_counter() - started)


def install_metrics(app: FastAPI, service: str) -> None:
    """Count and time every request by route template; serve ``/metrics``."""
    app.add_middleware(MetricsMiddleware, service=service)

    @app.get("/metrics", include_in_schema=False)
    async def _metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class BearerToken(HTTPBearer):
    """``Authorization: Bearer <jwt>`` or, as the original accepted, a bare ``<jwt>``.

    Declared as HTTP bearer in OpenAPI so Swagger UI's Authorize button adds the prefix.
    """

    def __init__(self) -> None:
        # One scheme name for subclasses too (loyalty's caller dependency is one).
        super().__init__(auto_error=False, scheme_name="BearerToken",
                         description="Access token from /auth/login")

    async def __call__(self, request: HTTPConnection) -> Any:  # returns the raw token
        return bearer_token(request.scope)


def bearer_token(scope: Scope) -> str:
    """The token of the ``Authorization`` header (``Bearer <jwt>`` or a bare ``<jwt>``), read
    straight from the ASGI scope; :class:`MissingToken` without one."""
    header = _header(scope, b"authorization").strip()
    scheme, _, rest = header.partition(" ")
    token = rest.strip() if scheme.lower() == "bearer" else header
    if not token:
        raise MissingToken()
    return token


def health_router(prefix: str) -> APIRouter:
    """``{prefix}/healthz`` (the process answers) and ``{prefix}/ready`` (its database does,
    and the container's ``not_ready()``, when it has one, names no reason to wait)."""
    router = APIRouter(prefix=prefix, tags=["health"])

    @router.get("/healthz", response_model=StatusOut)
    async def healthz() -> Response:
        """Liveness: the process answers."""
        return success(200)

    @router.get("/ready", response_model=StatusOut, responses={503: {"model": ErrorOut}})
    async def ready(request: Request) -> Response:
        """Readiness: the database answers and the service is not still starting up."""
        container = request.app.state.container
        try:
            await container.database.ping()
        except Exception:
            return error_response(503, "database_unavailable", "database is unreachable")
        not_ready: Callable[[], DomainError | None] | None = getattr(container, "not_ready",
                                                                     None)
        problem = not_ready() if not_ready is not None else None
        if problem is not None:
            return error_response(503, problem.code, problem.message, {"Retry-After": "1"})
        return success(200)

    return router


def create_app(title: str, description: str, service: str, version: str) -> FastAPI:
    """A FastAPI app with our docs URLs, error envelope, body limit and metrics."""
    app = FastAPI(
        title=title,
        description=description,
        version=version,
        docs_url="/swagger",
        redoc_url=None,
        openapi_url="/openapi.json",
        swagger_ui_parameters={"persistAuthorization": True},
        # Traces come from OpenTelemetry's instrumentation (telemetry.instrument_fastapi) and
        # metrics from our middleware; FastAPI's own telemetry would look the providers up on
        # every request (environment reads included) to find them unset.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    install_metrics(app, service)
    app.add_middleware(BodyLimitMiddleware)
    return app


# --- Hand-resolved routes (the hottest endpoints) ----------------------------------------

Resolver = Callable[[Request], Awaitable[dict[str, Any]]]


class _ResolvedRoute(APIRoute):
    """Documented like any route (OpenAPI comes from the endpoint's signature), but each
    request is served by building the endpoint's arguments with a hand-written resolver
    instead of FastAPI's dependency resolution. That resolution was the largest single cost of
    a balance read or a withdrawal besides the database; e2e tests hold these routes to the
    same answers, error codes included, as the rest."""

    resolver: Resolver

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint
        resolver = type(self).resolver

        status_code = self.status_code or 200

        async def handler(request: Request) -> Response:
            answer = await endpoint(**await resolver(request))
            if isinstance(answer, Response):
                return answer
            # The endpoint's response model, rendered as FastAPI renders it for this route's
            # response class (PrivateJSONResponse).
            return PrivateJSONResponse(answer.model_dump(mode="json"), status_code)

        return handler


def resolved_by(resolver: Resolver) -> type[APIRoute]:
    """A route class whose requests ``resolver`` turns into the endpoint's keyword arguments
    (for ``APIRouter.add_api_route(..., route_class_override=...)``)."""
    return type("ResolvedRoute", (_ResolvedRoute,), {"resolver": staticmethod(resolver)})


async def json_body(request: Request) -> Any:
    """The request's JSON body as FastAPI reads it: no body → :data:`MISSING`, a non-JSON
    content type → the raw bytes (which then fail validation), bad or unparseable JSON → 400."""
    raw = await _body(request)
    if not raw:
        return MISSING
    content_type = _header(request.scope, b"content-type")
    media = content_type.split(";", 1)[0].strip().lower()
    main, _, sub = media.partition("/")
    if main != "application" or not (sub == "json" or sub.endswith("+json")):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestValidationError([{
            "type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
            "input": {}, "ctx": {"error": exc.msg}}]) from exc
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number, nesting too deep
        raise StarletteHTTPException(400, "There was an error parsing the body") from exc


MISSING: Any = object()


async def _body(request: Request) -> bytes:
    """The whole body, read from ``receive`` as :meth:`Request.body` would (and kept for it),
    without its async-generator machinery: a visible share of a short request."""
    if hasattr(request, "_body"):
        body: bytes = request._body
        return body
    chunks: list[bytes] = []
    receive = request.receive
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()
    request._body = b"".join(chunks)
    request._stream_consumed = True
    return request._body


def _header(scope: Scope, name: bytes) -> str:
    """The first value of header ``name`` (lower case), or ""."""
    for key, value in scope["headers"]:
        if key == name:  # ASGI servers lower-case header names
            return str(value.decode("latin-1"))
    return ""


def validate(adapter: TypeAdapter[T], value: Any, loc: tuple[str, ...],
             errors: list[dict[str, Any]]) -> T | None:
    """``value`` through ``adapter``; failures are appended to ``errors`` under ``loc``."""
    if value is MISSING:
        errors.append({"type": "missing", "loc": loc, "msg": "Field required", "input": None})
        return None
    try:
        return adapter.validate_python(value, from_attributes=True)  # as FastAPI does
    except ValidationError as exc:
        errors.extend({**e, "loc": (*loc, *e["loc"])} for e in exc.errors(include_url=False))
        return None
