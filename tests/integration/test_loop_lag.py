"""Event-loop lag: exported by both services, and a loop held by blocking code shows in it.

The embedded system is started as ``authloyalty up`` starts it (its background tasks with it);
its services are asked for ``/metrics`` in process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from authloyalty.bootstrap import EmbeddedSystem, build_embedded, loyalty_app, sso_app
from tests.conftest import FAST_ARGON2, settings_for

LAG = "authloyalty_event_loop_lag_seconds"
BLOCKED_SECONDS = 0.3
# The test's wake-ups are frequent, so that a stall is seen whole (it starts about when a
# wake-up is due); the services wake ten times a second.
TEST_INTERVAL_SECONDS = 0.005


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[EmbeddedSystem]:
    system = build_embedded(settings_for(tmp_path, sso={"argon2": FAST_ARGON2.model_dump()}))
    system.loop_lag_interval = TEST_INTERVAL_SECONDS
    await system.start()
    try:
        yield system
    finally:
        await system.stop()


async def _lag(app: FastAPI, service: str) -> dict[str, float]:
    """``service``'s lag histogram as the app's ``/metrics`` shows it: count, sum, and the
    count of observations over a quarter of a second."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://service") as client:
        reply = await client.get("/metrics")
    assert reply.status_code == 200
    seen: dict[str, float] = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            if sample.labels.get("service") != service:
                continue
            if sample.name == f"{LAG}_count":
                seen["count"] = sample.value
            elif sample.name == f"{LAG}_sum":
                seen["sum"] = sample.value
            elif sample.name == f"{LAG}_bucket" and sample.labels["le"] == "0.25":
                seen["le_0.25"] = sample.value
    if seen:
        seen["over_0.25"] = seen["count"] - seen["le_0.25"]
    return seen


async def _observed(app: FastAPI, service: str, more_than: float) -> dict[str, float]:
    """The histogram once it holds more than ``more_than`` observations (waits up to 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        lag = await _lag(app, service)
        if lag.get("count", 0) > more_than or time.monotonic() > deadline:
            return lag
        await asyncio.sleep(0.02)


async def test_both_services_export_their_loop_lag(started: EmbeddedSystem) -> None:
    for app, service in ((sso_app(started.sso), "sso"),
                         (loyalty_app(started.loyalty), "loyalty")):
        lag = await _observed(app, service, 0)
        assert lag["count"] > 0, f"{service}: no {LAG} on /metrics"


async def test_a_blocked_loop_is_seen_as_lag(started: EmbeddedSystem) -> None:
    app = loyalty_app(started.loyalty)
    before = await _observed(app, "loyalty", 0)
    # What a blocking call in a request handler does to the loop:
    time.sleep(BLOCKED_SECONDS)  # noqa: ASYNC251
    after = await _observed(app, "loyalty", before["count"] + 1)
    assert after["over_0.25"] >= before["over_0.25"] + 1
    assert after["sum"] - before["sum"] >= BLOCKED_SECONDS - TEST_INTERVAL_SECONDS
