"""platform.http.fast.FastLane: a request reaches the route FastAPI would have chosen, fast or
not, whatever was declared before or after the fast routes; the scope says so as FastAPI's
router would; only fast routes take the lane."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from authloyalty.platform.http import create_app
from authloyalty.platform.http.fast import FastRoute, standard_resolution
from authloyalty.platform.http.responses import PrivateJSONResponse


class Served(BaseModel):
    by: str
    param: str | None = None


def _served_by(name: str, with_param: bool = False) -> Any:
    if with_param:
        async def endpoint(param: str) -> Served:
            return Served(by=name, param=param)
    else:
        async def endpoint() -> Served:  # type: ignore[misc]
            return Served(by=name)
    endpoint.__name__ = name.replace(" ", "_").replace("-", "_")
    return endpoint


def _route(router: APIRouter | FastAPI, method: str, path: str, name: str, *,
           fast: bool) -> None:
    kwargs: dict[str, Any] = {"methods": [method], "response_model": Served,
                              "response_class": PrivateJSONResponse}
    if fast:
        kwargs["route_class_override"] = FastRoute
    target = router.router if isinstance(router, FastAPI) else router
    target.add_api_route(path, _served_by(name, "{param}" in path), **kwargs)


class Seen:
    """An ASGI middleware that keeps, per request, the route FastAPI's scope names and
    whether FastAPI's own request handling ran (it leaves its exit stack in the scope)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.last: tuple[str | None, bool] = (None, False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        if scope["type"] == "http":
            route = scope.get("route")
            self.last = (getattr(route, "path", None), "fastapi_inner_astack" in scope)


def build(tmp_path: Any) -> FastAPI:
    app = create_app("lane", "", "lane", "0")
    (tmp_path / "file.txt").write_text("static")
    app.mount("/static", StaticFiles(directory=tmp_path), name="static")
    # Declared before the fast routes they shadow (or not).
    _route(app, "GET", "/things/special", "plain special", fast=False)
    _route(app, "POST", "/things/{param}", "plain post thing", fast=False)
    _route(app, "GET", "/items/{param}", "plain item", fast=False)
    fast = APIRouter(prefix="/v1")
    _route(fast, "GET", "/me", "fast me", fast=True)
    _route(fast, "GET", "/{param}", "fast v1 param", fast=True)
    app.include_router(fast)
    _route(app, "GET", "/things/{param}", "fast thing", fast=True)
    _route(app, "GET", "/items/fast", "fast item (shadowed)", fast=True)
    _route(app, "GET", "/static/{param}", "fast static (shadowed)", fast=True)
    _route(app, "GET", "/plain", "plain", fast=False)
    # Declared after a fast route matching the same requests: never reached.
    _route(app, "GET", "/v1/late", "plain late (shadowed)", fast=False)
    return app


@pytest.fixture
async def clients(tmp_path: Any) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient,
                                                        Seen, Seen]]:
    app = build(tmp_path)
    lane, standard = Seen(app), Seen(app)
    async with (httpx.AsyncClient(transport=httpx.ASGITransport(app=lane),
                                  base_url="http://lane") as via_lane,
                httpx.AsyncClient(transport=httpx.ASGITransport(
                    app=standard_resolution(standard)),
                                  base_url="http://lane") as via_router):
        yield via_lane, via_router, lane, standard


# (method, path, who FastAPI chooses, whether that is a fast route)
CHOICES = [
    ("GET", "/v1/me", "fast me", True),
    ("GET", "/v1/other", "fast v1 param", True),
    ("GET", "/v1/late", "fast v1 param", True),
    ("GET", "/things/special", "plain special", False),
    ("GET", "/things/else", "fast thing", True),
    ("POST", "/things/else", "plain post thing", False),
    ("GET", "/items/fast", "plain item", False),
    ("GET", "/static/file.txt", None, False),  # the mount's file
    ("GET", "/plain", "plain", False),
    ("DELETE", "/v1/me", None, False),  # 405
    ("HEAD", "/v1/me", None, False),  # 405 too: FastAPI adds no HEAD to GET routes
    ("GET", "/nowhere/at/all", None, False),  # 404
    ("GET", "/v1/me/", None, False),  # FastAPI's redirect to /v1/me
]


@pytest.mark.parametrize(("method", "path", "chosen", "fast"), CHOICES,
                         ids=[f"{m} {p}" for m, p, _, _ in CHOICES])
async def test_the_lane_serves_what_fastapi_would(
        clients: tuple[httpx.AsyncClient, httpx.AsyncClient, Seen, Seen],
        method: str, path: str, chosen: str | None, fast: bool) -> None:
    via_lane, via_router, lane, standard = clients
    headers = {"X-Request-Id": "lane-test"}
    a = await via_lane.request(method, path, headers=headers)
    b = await via_router.request(method, path, headers=headers)
    assert (a.status_code, a.headers.raw, a.content) == (b.status_code, b.headers.raw,
                                                         b.content)
    if chosen is not None:
        assert a.json()["by"] == chosen
    # The same route named in the scope (the metrics and the access log read it); only a
    # fast route skips FastAPI's request handling, and only through the lane.
    if fast:
        assert lane.last == (standard.last[0], False)
        assert standard.last[1]
    else:
        assert lane.last == standard.last


async def test_path_parameters_and_root_path(
        clients: tuple[httpx.AsyncClient, httpx.AsyncClient, Seen, Seen]) -> None:
    via_lane, _, lane, _ = clients
    answer = await via_lane.get("/things/caf%C3%A9")
    assert answer.json() == {"by": "fast thing", "param": "café"}
    assert lane.last == ("/things/{param}", False)
    behind = httpx.AsyncClient(transport=httpx.ASGITransport(app=lane, root_path="/api"),
                               base_url="http://lane")
    async with behind:
        answer = await behind.get("/api/v1/me")
    assert answer.json() == {"by": "fast me", "param": None}
    assert lane.last == ("/v1/me", False)


async def test_a_failing_fast_route_answers_with_the_error_handlers(tmp_path: Any) -> None:
    """An exception of a fast route reaches the app's handlers through the lane as it does
    through FastAPI's own handling: the same envelope, the same status."""
    app = create_app("lane", "", "lane", "0")

    async def refuses(param: int) -> Served:
        raise ValueError("not reached: the path parameter is not a number")

    app.router.add_api_route("/numbers/{param}", refuses, methods=["GET"], response_model=Served,
                      response_class=PrivateJSONResponse, route_class_override=FastRoute)
    async with (httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                  base_url="http://lane") as via_lane,
                httpx.AsyncClient(transport=httpx.ASGITransport(app=standard_resolution(app)),
                                  base_url="http://lane") as via_router):
        headers = {"X-Request-Id": "lane-test"}
        a = await via_lane.get("/numbers/seven", headers=headers)
        b = await via_router.get("/numbers/seven", headers=headers)
    assert a.status_code == b.status_code == 422
    assert (a.headers.raw, a.content) == (b.headers.raw, b.content)


async def gate(request: Request) -> None:
    """An inclusion's dependency, awaited for its effect."""
    if request.headers.get("x-pass") != "yes":
        raise HTTPException(403, "no pass")


@pytest.mark.parametrize("served_by", ["lane", "fastapi's resolution", "the route's plan"])
async def test_an_inclusions_dependencies_hold_on_its_fast_routes(served_by: str) -> None:
    """A fast route included with ``dependencies=[...]`` is served as FastAPI serves the
    inclusion: through the lane, through FastAPI's resolution, and by the route's own plan
    (an app without the lane), the gate is awaited before the endpoint."""
    gated = APIRouter()
    _route(gated, "GET", "/{param}", "gated", fast=True)
    app = create_app("lane", "", "lane", "0") if served_by != "the route's plan" else FastAPI()
    app.include_router(gated, prefix="/gated", dependencies=[Depends(gate)])
    asgi: ASGIApp = standard_resolution(app) if served_by == "fastapi's resolution" else app
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                 base_url="http://lane") as client:
        refused = await client.get("/gated/door")
        passed = await client.get("/gated/door", headers={"X-Pass": "yes"})
    assert refused.status_code == 403
    assert passed.status_code == 200
    assert passed.json() == {"by": "gated", "param": "door"}


CALLS: list[str] = []


async def who(request: Request) -> str:
    """A dependency both an inclusion and its route ask for; keeps each call."""
    CALLS.append(request.url.path)
    return "caller"


async def who_asks(caller: Annotated[str, Depends(who)]) -> Served:
    return Served(by=caller)


@pytest.mark.parametrize("served_by", ["lane", "fastapi's resolution", "the route's plan"])
async def test_a_dependency_asked_for_twice_runs_once_per_request(served_by: str) -> None:
    """The inclusion and the route both depend on ``who``: FastAPI runs it once per request
    (its dependency cache), and so does a fast route's plan."""
    CALLS.clear()
    router = APIRouter()
    router.add_api_route("/who", who_asks, methods=["GET"], response_model=Served,
                         response_class=PrivateJSONResponse, route_class_override=FastRoute)
    app = create_app("lane", "", "lane", "0") if served_by != "the route's plan" else FastAPI()
    app.include_router(router, dependencies=[Depends(who)])
    asgi: ASGIApp = standard_resolution(app) if served_by == "fastapi's resolution" else app
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                 base_url="http://lane") as client:
        answers = [await client.get("/who") for _ in range(2)]
    assert [a.json() for a in answers] == [{"by": "caller", "param": None}] * 2
    assert CALLS == ["/who", "/who"]
