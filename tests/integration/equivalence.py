"""What the fast routes' equivalence tests share: both resolutions of one app, the requests
about a JSON body that do not depend on its fields, and how answers are compared."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.types import ASGIApp

from authloyalty.platform.http.fast import standard_resolution

Headers = dict[str, str]
JSON: Headers = {"Content-Type": "application/json"}


@asynccontextmanager
async def both_resolutions(app: ASGIApp, base_url: str
                           ) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Clients of ``app`` as served (fast routes by their plan) and of its
    ``standard_resolution`` (every route by FastAPI): (fast, standard)."""
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as fast,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=standard_resolution(app)),
                          base_url=base_url) as standard,
    ):
        yield fast, standard


def body_shapes(good: bytes) -> list[tuple[str, Headers, bytes | None]]:
    """Requests whose body or content type is wrong whatever the model's fields (and ``good``,
    a valid body, under other content types): (name, headers, content)."""
    return [
        ("missing body", JSON, None),
        ("empty object", JSON, b"{}"),
        ("JSON null", JSON, b"null"),
        ("JSON array", JSON, b"[1]"),
        ("JSON string", JSON, b'"x"'),
        ("deep nesting", JSON, b"[" * 30000),
        ("no content type", {}, good),
        ("empty content type", {"Content-Type": ""}, good),
        ("text content type", {"Content-Type": "text/plain"}, good),
        ("JSON with charset", {"Content-Type": "application/json; charset=utf-8"}, good),
        ("upper-case JSON type", {"Content-Type": "Application/JSON"}, good),
        ("vendor JSON type", {"Content-Type": "application/vnd.api+json"}, good),
        ("odd JSON-like type", {"Content-Type": "application/x/+json"}, good),
    ]


# Over the 64 KiB body limit, sent in chunks without a declared length.
STREAMED_OVERSIZED = b"[" + b"1," * 40_000 + b"1]"


def streamed(content: bytes) -> AsyncIterator[bytes]:
    """``content`` as a request body sent in 4 KiB chunks (no Content-Length)."""
    chunks = [content[i:i + 4096] for i in range(0, len(content), 4096)]

    async def stream() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk
    return stream()


def without_length(reply: httpx.Response) -> list[tuple[bytes, bytes]]:
    """The answer's raw headers but its length (two answers differing in ids or tokens)."""
    return [(k, v) for k, v in reply.headers.raw if k != b"content-length"]
