"""gRPC plumbing shared by services: server factory, error mapping, logs, metrics, health.

Interceptors wrap unary-unary methods only (every method of our services is unary); the health
``Watch`` and reflection streams pass through untouched.

Requests of unary methods are decoded by the innermost interceptor, not by grpc.aio: grpc.aio
answers bytes that do not parse with ``UNKNOWN``, the exception's class and a logged traceback,
where a client's malformed message deserves ``INVALID_ARGUMENT`` and a plain sentence.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Histogram

from authloyalty.platform.errors import DomainError, ErrorKind, ValidationFailed

log = logging.getLogger(__name__)

Request = TypeVar("Request")
Response = TypeVar("Response")
Context = grpc.aio.ServicerContext[Any, Any]
Continuation = Callable[
    [grpc.HandlerCallDetails], Awaitable["grpc.RpcMethodHandler[Request, Response] | None"]
]
UnaryBehaviour = Callable[[Any, Context], Awaitable[Any]]

GRPC_STATUS: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.CONFLICT: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.THROTTLED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.GONE: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}
INTERNAL_MESSAGE = "internal error"
DEFAULT_GRACE_SECONDS = 5.0

GRPC_REQUESTS = Counter(
    "authloyalty_grpc_requests_total", "gRPC calls by method and status code", ["method", "code"]
)
GRPC_LATENCY = Histogram(
    "authloyalty_grpc_request_duration_seconds", "gRPC call latency by method", ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


def _wrap_unary(
    handler: grpc.RpcMethodHandler[Request, Response] | None,
    wrap: Callable[[UnaryBehaviour], UnaryBehaviour],
    *,
    decode_inside: bool = False,
) -> grpc.RpcMethodHandler[Request, Response] | None:
    """``handler`` with its unary behaviour wrapped; with ``decode_inside``, the wrapped
    behaviour receives the raw request bytes and decodes them itself."""
    if handler is None or handler.request_streaming or handler.response_streaming:
        return handler
    behaviour: Any = handler.unary_unary
    deserializer: Any = handler.request_deserializer
    if decode_inside and deserializer is not None:
        behaviour, deserializer = _decoding(behaviour, deserializer), None
    return grpc.unary_unary_rpc_method_handler(
        wrap(behaviour), request_deserializer=deserializer,
        response_serializer=handler.response_serializer)


def _decoding(behaviour: UnaryBehaviour, deserializer: Callable[[bytes], Any]) -> UnaryBehaviour:
    """``behaviour`` fed with ``deserializer``'s message; undecodable bytes are refused."""
    # Generated deserializers are the message class's bound FromString: name the message.
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    name = getattr(descriptor, "full_name", None)
    refusal = f"request is not a valid {name} protobuf" if name else (
        "request is not a valid protobuf message")

    async def decoded(raw: bytes, context: Context) -> Any:
        try:
            request = deserializer(raw)
        except DecodeError:
            # Corrupt wire format or a string field that is not UTF-8: the client's mistake.
            raise ValidationFailed(refusal) from None
        return await behaviour(request, context)
    return decoded


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Decodes requests, turns domain errors into their status codes and anything unexpected
    into INTERNAL; a request that does not decode is INVALID_ARGUMENT.

    The innermost interceptor, so the others see the final status code; they receive the raw
    request bytes (none of them reads the request).
    """

    async def intercept_service(
        self, continuation: Continuation[Request, Response],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Request, Response] | None:
        method = handler_call_details.method

        def wrap(behaviour: UnaryBehaviour) -> UnaryBehaviour:
            async def mapped(request: Any, context: Context) -> Any:
                try:
                    return await behaviour(request, context)
                except grpc.aio.AbortError:
                    raise  # the handler chose its status already
                except DomainError as exc:
                    await abort_with(context, exc)
                except Exception:
                    # grpc.aio would answer UNKNOWN with the exception's text; say less.
                    log.exception("grpc %s failed unexpectedly", method)
                    await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
            return mapped

        return _wrap_unary(await continuation(handler_call_details), wrap, decode_inside=True)


async def abort_with(context: Context, exc: DomainError) -> None:
    """End the call with the status code of ``exc``'s kind and its message."""
    retry_after = getattr(exc, "retry_after", None)
    trailers = (("retry-after", str(retry_after)),) if retry_after is not None else ()
    await context.abort(GRPC_STATUS[exc.kind], exc.message, trailers)


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    """One log line and the request metrics per call; never logs the request or the response,
    which carry passwords and tokens."""

    async def intercept_service(
        self, continuation: Continuation[Request, Response],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Request, Response] | None:
        method = handler_call_details.method

        def wrap(behaviour: UnaryBehaviour) -> UnaryBehaviour:
            async def observed(request: Any, context: Context) -> Any:
                started = time.perf_counter()
                peer = context.peer()  # gone once the call is cancelled
                code = grpc.StatusCode.UNKNOWN
                try:
                    response = await behaviour(request, context)
                    code = context.code() or grpc.StatusCode.OK
                    return response
                except grpc.aio.AbortError:
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                except asyncio.CancelledError:
                    # grpc.aio cancels the handler when the deadline passes or the client leaves.
                    remaining = context.time_remaining()
                    expired = remaining is not None and remaining <= 0
                    code = (grpc.StatusCode.DEADLINE_EXCEEDED if expired
                            else grpc.StatusCode.CANCELLED)
                    raise
                finally:
                    elapsed = time.perf_counter() - started
                    GRPC_REQUESTS.labels(method, code.name).inc()
                    GRPC_LATENCY.labels(method).observe(elapsed)
                    log.info("grpc %s %s %.1fms peer=%s", method, code.name, elapsed * 1000,
                             peer)
            return observed

        return _wrap_unary(await continuation(handler_call_details), wrap)


_HEALTH: weakref.WeakKeyDictionary[grpc.aio.Server, health.aio.HealthServicer] = (
    weakref.WeakKeyDictionary())


def _serving_now(checker: health.aio.HealthServicer, services: Sequence[str]) -> None:
    # HealthServicer.set is async only to wake watchers; before the server starts there are
    # none and the coroutine ends without suspending, so the factory can stay synchronous.
    for name in services:
        step = checker.set(name, health_pb2.HealthCheckResponse.SERVING)
        try:
            step.send(None)
        except StopIteration:
            continue
        step.close()
        raise RuntimeError(f"could not mark {name!r} SERVING before the server starts")


def create_server(
    register: Callable[[grpc.aio.Server], None],
    service_names: Sequence[str],
    host: str,
    port: int,
    *,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> tuple[grpc.aio.Server, int]:
    """A not yet started server with our interceptors, health and reflection; and its port.

    ``register`` adds the services; ``port`` 0 picks a free port. ``interceptors`` run between
    logging/metrics and error mapping: the seam for tracing (e.g. OpenTelemetry's
    ``aio_server_interceptor()`` once it is installed).
    """
    server = grpc.aio.server(
        interceptors=[ObservabilityInterceptor(), *interceptors, ErrorMappingInterceptor()],
        # Without this, Linux lets a second server bind the same port and share its traffic.
        options=[("grpc.so_reuseport", 0)],
    )
    register(server)
    checker = health.aio.HealthServicer()
    _serving_now(checker, service_names)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    _HEALTH[server] = checker
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"cannot listen for gRPC on {host}:{port}")
    return server, bound


async def stop_server(server: grpc.aio.Server, grace: float = DEFAULT_GRACE_SECONDS) -> None:
    """Report NOT_SERVING, refuse new calls, and give calls in flight ``grace`` seconds."""
    checker = _HEALTH.get(server)
    if checker is not None:
        await checker.enter_graceful_shutdown()
    await server.stop(grace)
