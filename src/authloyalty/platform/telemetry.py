"""Tracing as code: one tracer provider per process, explicit instrumentation, W3C context.

Off unless ``telemetry.enabled``; then FastAPI, SQLAlchemy, gRPC and the event bus produce spans,
and the trace context travels with each event (outbox row headers → Kafka headers), so one
trace spans registration → outbox → relay → consumer → bonus transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind

from authloyalty.platform.settings import TelemetrySettings

_provider: trace.TracerProvider | None = None


def configure(settings: TelemetrySettings, service_name: str) -> TracerProvider | None:
    """Create this process's tracer provider (with an OTLP exporter when an endpoint is set)."""
    if not settings.enabled:
        return None
    provider = TracerProvider(resource=resource(settings, service_name),
                              sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)))
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
            endpoint=settings.otlp_endpoint.rstrip("/") + "/v1/traces")))
    use_provider(provider)
    return provider


def resource(settings: TelemetrySettings, service_name: str) -> Resource:
    """What every span of this process says about it: the service and which replica."""
    attributes = {"service.name": settings.service_name or service_name}
    if settings.instance_id:
        attributes["service.instance.id"] = settings.instance_id
    return Resource.create(attributes)


def use_provider(provider: trace.TracerProvider | None) -> None:
    """Make ``provider`` the one our spans and instrumentation use (None switches tracing off)."""
    global _provider
    _provider = provider
    if provider is None and _engines:
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        SQLAlchemyInstrumentor().uninstrument()
        _engines.clear()


def shutdown() -> None:
    """Flush spans still queued for export."""
    if isinstance(_provider, TracerProvider):
        _provider.shutdown()


def enabled() -> bool:
    """True when a tracer provider is configured."""
    return _provider is not None


def tracer() -> trace.Tracer:
    """Our tracer (a no-op one while tracing is off)."""
    if _provider is None:
        return trace.NoOpTracer()
    return _provider.get_tracer("authloyalty")


def current_headers() -> dict[str, str]:
    """W3C trace headers of the current span (empty when there is none)."""
    carrier: dict[str, str] = {}
    if _provider is not None:
        propagate.inject(carrier)
    return carrier


def headers_of(span: Span) -> dict[str, str]:
    """W3C trace headers naming ``span`` as the parent."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


@contextmanager
def span_from(headers: Mapping[str, Any], name: str, kind: SpanKind,
              attributes: Mapping[str, str | int] | None = None) -> Iterator[Span]:
    """A current span whose parent is the context carried in ``headers``."""
    carrier = {k: (v.decode() if isinstance(v, bytes) else str(v))
               for k, v in headers.items() if v is not None}
    parent = propagate.extract(carrier)
    token = otel_context.attach(parent)
    try:
        with tracer().start_as_current_span(name, kind=kind,
                                            attributes=dict(attributes or {})) as span:
            yield span
    finally:
        otel_context.detach(token)


def instrument_fastapi(app: Any) -> None:
    """Server spans for every request (health, readiness and metrics excluded)."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, tracer_provider=_provider,
                                       excluded_urls="healthz,ready,metrics")


_engines: list[Any] = []
_asyncpg_instrumented = False


def instrument_database(database: Any) -> None:
    """Client spans for every SQL statement of ``database`` (a platform ``Database``)."""
    global _asyncpg_instrumented
    if _provider is None:
        return
    engine = getattr(database, "engine", None)
    if engine is not None:
        instrument_engine(engine)
        return
    if not _asyncpg_instrumented:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        AsyncPGInstrumentor().instrument(  # type: ignore[no-untyped-call]
            tracer_provider=_provider)
        _asyncpg_instrumented = True


def instrument_engine(engine: Any) -> None:
    """Client spans for every SQL statement of ``engine`` (an AsyncEngine)."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    # The instrumentor is a singleton that takes its engines in one call: re-instrument with
    # the whole list each time a service adds its engine.
    _engines.append(engine.sync_engine)
    instrumentor = SQLAlchemyInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    instrumentor.instrument(engines=list(_engines), tracer_provider=_provider,
                            enable_commenter=False)


def grpc_server_interceptors() -> list[Any]:
    """The OpenTelemetry gRPC server interceptor, when tracing is on."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(tracer_provider=_provider)]  # type: ignore[no-untyped-call]


def log_ids() -> dict[str, str]:
    """trace_id and span_id of the current span, for log lines."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": format(context.trace_id, "032x"),
            "span_id": format(context.span_id, "016x")}
