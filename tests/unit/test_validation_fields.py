"""A 422 names the field that failed, wherever in the request it was."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Query
from pydantic import BaseModel

from authloyalty.platform.http.errors import install_error_handlers


class Inner(BaseModel):
    query: int


class Body(BaseModel):
    inner: Inner


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/search")
    async def search(query: Annotated[str, Query(max_length=3)] = "",
                     body: Annotated[int, Query()] = 0) -> dict[str, str]:
        return {}

    @app.post("/items/{path}")
    async def item(path: int, payload: Body) -> dict[str, str]:
        return {}

    return app


async def _fields(method: str, url: str, **kw: Any) -> list[str]:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.request(method, url, **kw)
    assert r.status_code == 422, r.text
    fields = [f["field"] for f in r.json()["fields"]]
    assert r.json()["error"].startswith(f"{fields[0]}: ")
    return fields


@pytest.mark.parametrize(("method", "url", "kw", "expected"), [
    ("GET", "/search", {"params": {"query": "long"}}, ["query"]),
    ("GET", "/search", {"params": {"body": "x"}}, ["body"]),
    ("POST", "/items/x", {"json": {"inner": {"query": 1}}}, ["path"]),
    ("POST", "/items/1", {"json": {"inner": {"query": "x"}}}, ["inner.query"]),
    ("POST", "/items/1", {"json": {}}, ["inner"]),
])
async def test_the_field_is_named_without_its_location(
        method: str, url: str, kw: dict[str, Any], expected: list[str]) -> None:
    assert await _fields(method, url, **kw) == expected
