"""Every request is counted and timed under its own method, route template and status."""

from __future__ import annotations

import httpx
from fastapi import HTTPException
from prometheus_client import REGISTRY

from authloyalty.platform.http.app import create_app


def _count(service: str, method: str, route: str, status: str) -> float:
    return REGISTRY.get_sample_value("authloyalty_http_requests_total", {
        "service": service, "method": method, "route": route, "status": status}) or 0.0


def _timed(service: str, method: str, route: str) -> float:
    return REGISTRY.get_sample_value("authloyalty_http_request_duration_seconds_count", {
        "service": service, "method": method, "route": route}) or 0.0


async def test_series_per_method_route_and_status_repeated_requests_included() -> None:
    service = "metrics-test"
    app = create_app("t", "t", service, "0")

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        if item_id == 0:
            raise HTTPException(404, "no such item")
        return {"id": item_id}

    route = "/items/{item_id}"
    before = {status: _count(service, "GET", route, status) for status in ("200", "404")}
    timed_before = _timed(service, "GET", route)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for item_id in (1, 2, 0, 3, 0):
            await client.get(f"/items/{item_id}")
        await client.post("/items/1")  # 405: its own series
        await client.get("/nowhere")
    assert _count(service, "GET", route, "200") - before["200"] == 3
    assert _count(service, "GET", route, "404") - before["404"] == 2
    assert _timed(service, "GET", route) - timed_before == 5
    assert _count(service, "POST", route, "405") == 1
    assert _count(service, "GET", "unmatched", "404") == 1
