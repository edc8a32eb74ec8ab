"""The JSON answers of both services: compact bodies, the success and error envelopes, and the
no-store headers of answers with tokens or personal data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pydantic_core
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.background import BackgroundTask


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
    with :data:`NO_STORE` (a JSONResponse, so that OpenAPI documents the route's response
    model).

    FastAPI hands it the model already dumped to plain data (written by :func:`dump_json`);
    a fast route (:mod:`.fast`) answers through :meth:`of` instead."""

    def __init__(self, content: Any, status_code: int = 200,
                 headers: Mapping[str, str] | None = None, media_type: str | None = None,
                 background: BackgroundTask | None = None) -> None:
        super().__init__(content, status_code, {**NO_STORE, **(headers or {})}, media_type,
                         background)

    def render(self, content: Any) -> bytes:
        """``content`` (a serialised response model) as compact JSON."""
        return dump_json(content)

    @classmethod
    def of(cls, model: BaseModel, status_code: int = 200) -> Response:
        """The answer FastAPI would make of ``model``, byte for byte, headers included:
        written by pydantic's serialiser in one pass (compact UTF-8 as :func:`dump_json`),
        without the intermediate dict, FastAPI's revalidation of the model or JSONResponse's
        detour (together ~4 µs of a withdrawal's answer). ``tests/integration/
        test_fast_routes.py`` compares the two."""
        return Response(pydantic_core.to_json(model), status_code, NO_STORE, cls.media_type)


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None, **extra: Any) -> Response:
    """``{"status":"Error","error":message,"code":code}``."""
    body = {"status": "Error", "error": message, "code": code, **extra}
    return json_response(status, body, headers)
