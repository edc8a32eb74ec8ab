"""Every failure becomes the JSON error envelope, mapped once: domain errors by their kind,
request validation, Starlette's HTTP errors and anything unexpected."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from authloyalty.platform.errors import DomainError, ErrorKind
from authloyalty.platform.http.responses import error_response

HTTP_STATUS = {
    ErrorKind.INVALID: 422,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.THROTTLED: 429,
    ErrorKind.GONE: 410,
    ErrorKind.UNAVAILABLE: 503,
}


_LOCATIONS = ("body", "query", "path", "header", "cookie")


def _field_name(loc: Sequence[int | str]) -> str:
    # Only the first part says where the field was; a field may itself be named ``query``.
    parts = [str(p) for p in loc]
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
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
