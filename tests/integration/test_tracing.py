"""One trace from the registration request to the bonus transaction, in process and via Kafka."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from authloyalty.bootstrap import build_embedded, sso_app
from authloyalty.events import UserRegistered
from authloyalty.loyalty.events import LOYALTY_EVENTS
from authloyalty.platform import telemetry
from authloyalty.platform.kafka import KafkaEventConsumer, KafkaPublisher
from authloyalty.platform.kafka_codec import EventDecoder, EventEncoder
from authloyalty.platform.logging import configure_logging
from authloyalty.platform.settings import KafkaSettings, TelemetrySettings
from authloyalty.sso.events import SSO_EVENTS
from tests.conftest import FAST_ARGON2, settings_for


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.use_provider(provider)
    try:
        yield exporter
    finally:
        telemetry.use_provider(None)
        provider.shutdown()


def trace_of(finished: tuple[ReadableSpan, ...], name: str) -> int:
    [root] = [s for s in finished if s.name == name]
    assert root.context is not None
    return int(root.context.trace_id)


def names_in(finished: tuple[ReadableSpan, ...], trace_id: int) -> list[str]:
    return [s.name for s in finished if s.context is not None and s.context.trace_id == trace_id]


async def test_registration_to_bonus_is_one_trace_in_process(
        tmp_path: Path, spans: InMemorySpanExporter) -> None:
    system = build_embedded(settings_for(tmp_path, sso={"argon2": FAST_ARGON2.model_dump()}))
    await system.migrate()
    try:
        transport = httpx.ASGITransport(app=sso_app(system.sso))
        async with httpx.AsyncClient(transport=transport, base_url="http://sso") as client:
            r = await client.post("/auth/registration",
                                  json={"email": "trace@example.com", "password": "long enough"})
        assert r.status_code == 201
        await system.sso.relay.run_once()
    finally:
        await system.stop()
    finished = spans.get_finished_spans()
    trace_id = trace_of(finished, "POST /auth/registration")
    in_trace = names_in(finished, trace_id)
    assert "user_registered process" in in_trace
    statements = [s for s in finished if s.context is not None
                  and s.context.trace_id == trace_id and s.attributes
                  and "ledger_entries" in str(s.attributes.get("db.statement", ""))]
    assert statements, in_trace  # the bonus INSERT belongs to the registration's trace


async def test_trace_context_crosses_kafka(
        tmp_path: Path, spans: InMemorySpanExporter, kafka_settings: KafkaSettings) -> None:
    system = build_embedded(settings_for(tmp_path, sso={"argon2": FAST_ARGON2.model_dump()}))
    await system.migrate()
    from confluent_kafka.schema_registry import SchemaRegistryClient

    registry = SchemaRegistryClient.new_client({"url": kafka_settings.schema_registry_url})
    system.sso.relay._publisher = KafkaPublisher(kafka_settings,
                                                 EventEncoder(kafka_settings, SSO_EVENTS,
                                                              registry))
    consumer = KafkaEventConsumer(kafka_settings, EventDecoder(kafka_settings, LOYALTY_EVENTS),
                                  {UserRegistered: system.loyalty.handlers.user_registered},
                                  [kafka_settings.registration_topic],
                                  kafka_settings.consumer_group)
    task = asyncio.create_task(consumer.run())
    try:
        transport = httpx.ASGITransport(app=sso_app(system.sso))
        async with httpx.AsyncClient(transport=transport, base_url="http://sso") as client:
            r = await client.post("/auth/registration",
                                  json={"email": "ktrace@example.com", "password": "long enough"})
        assert r.status_code == 201
        await system.sso.relay.run_once()
        trace_id = trace_of(spans.get_finished_spans(), "POST /auth/registration")
        for _ in range(100):
            if f"{kafka_settings.registration_topic} process" in names_in(
                    spans.get_finished_spans(), trace_id):
                break
            await asyncio.sleep(0.2)
        finished = spans.get_finished_spans()
        in_trace = names_in(finished, trace_id)
        assert f"{kafka_settings.registration_topic} publish" in in_trace
        assert f"{kafka_settings.registration_topic} process" in in_trace
        # The produce span continues the request (through the outbox row), the consume span
        # continues the produce span (through the record's headers).
        [request] = [s for s in finished if s.name == "POST /auth/registration"]
        [publish] = [s for s in finished
                     if s.name == f"{kafka_settings.registration_topic} publish"]
        [process] = [s for s in finished
                     if s.name == f"{kafka_settings.registration_topic} process"]
        assert publish.parent is not None
        assert request.context is not None
        assert publish.parent.span_id == request.context.span_id
        assert process.parent is not None
        assert publish.context is not None
        assert process.parent.span_id == publish.context.span_id
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 20)
        system.sso.relay._publisher.close()
        await system.stop()


def test_spans_name_the_service_and_the_replica() -> None:
    settings = TelemetrySettings(enabled=True, service_name="loyalty", instance_id="loyalty-2")
    attributes = telemetry.resource(settings, "authloyalty-loyalty").attributes
    assert attributes["service.name"] == "loyalty"
    assert attributes["service.instance.id"] == "loyalty-2"


@pytest.fixture(params=[True], ids=["access_log"])
def json_logs(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    """The services' JSON log lines (as configure_logging renders them, with the access log as
    the parameter says) for one test; the root logger restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("INFO", "json", access_log=request.param)
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(root.handlers[0].formatter)
    root.handlers[:] = [handler]
    try:
        yield written
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("authloyalty.access").setLevel(logging.NOTSET)


async def register_logged(tmp_path: Path, logs: io.StringIO) -> list[dict[str, object]]:
    """Register through sso's app with an X-Request-Id; the JSON lines logged meanwhile."""
    system = build_embedded(settings_for(tmp_path, sso={"argon2": FAST_ARGON2.model_dump()}))
    await system.migrate()
    try:
        transport = httpx.ASGITransport(app=sso_app(system.sso))
        async with httpx.AsyncClient(transport=transport, base_url="http://sso") as client:
            r = await client.post("/auth/registration", headers={"X-Request-Id": "req-42"},
                                  json={"email": "logged@example.com",
                                        "password": "long enough"})
        assert r.status_code == 201
    finally:
        await system.stop()
    return [json.loads(line) for line in logs.getvalue().splitlines()]


async def test_the_access_log_line_names_the_request_and_its_trace(
        tmp_path: Path, spans: InMemorySpanExporter, json_logs: io.StringIO) -> None:
    lines = await register_logged(tmp_path, json_logs)
    [line] = [e for e in lines if e.get("event") == "request"]
    assert line["request_id"] == "req-42"
    assert (line["method"], line["route"], line["status"]) == ("POST", "/auth/registration", 201)
    assert line["trace_id"] == format(trace_of(spans.get_finished_spans(),
                                               "POST /auth/registration"), "032x")


@pytest.mark.parametrize("json_logs", [False], ids=["no_access_log"], indirect=True)
async def test_the_access_log_can_be_switched_off(tmp_path: Path,
                                                  json_logs: io.StringIO) -> None:
    lines = await register_logged(tmp_path, json_logs)
    assert lines  # loyalty's bonus line is still there
    assert not [e for e in lines if e.get("event") == "request" or "request_id" in e]
