"""Events in flight and the bus the services exchange them on.

A service's events are frozen dataclasses with a class-level ``name`` (its wire name); the bus
carries each one in an :class:`Envelope` with the id that lets consumers drop redeliveries and
the trace headers. A bus adapter (in-process here, Kafka in production) only has to implement
:class:`EventPublisher` for the relay and call the registered handlers for the consumer side;
the services never see which one runs.
"""

from __future__ import annotations

import asyncio
import logging
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable
from uuid import UUID, uuid4

from opentelemetry.trace import SpanKind

from authloyalty.platform import telemetry
from authloyalty.platform.clock import as_utc, utcnow

log = logging.getLogger(__name__)


class IntegrationEvent(Protocol):
    """What the bus needs of an event: its wire name."""

    name: ClassVar[str]


E = TypeVar("E", bound=IntegrationEvent, covariant=True)


@dataclass(frozen=True)
class Envelope(Generic[E]):
    """One event in flight; ``id`` is unique and lets consumers drop redeliveries."""

    event: E
    id: UUID = field(default_factory=uuid4)
    occurred_at: datetime = field(default_factory=utcnow)
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The event's wire name."""
        return self.event.name


def event_payload(event: IntegrationEvent) -> dict[str, Any]:
    """``event`` as JSON values: UUIDs as text, datetimes in ISO 8601, the rest as they are."""
    payload: dict[str, Any] = {}
    for f in fields(event):  # type: ignore[arg-type]
        value = getattr(event, f.name)
        payload[f.name] = str(value) if isinstance(value, UUID) \
            else value.isoformat() if isinstance(value, datetime) else value
    return payload


def event_from_payload(event_type: type[E], payload: Mapping[str, Any]) -> E:
    """The inverse of :func:`event_payload`, reading each field by its declared type; a field
    with a default may be missing (a row written before the field existed)."""
    hints = typing.get_type_hints(event_type)
    values: dict[str, Any] = {}
    for f in fields(event_type):  # type: ignore[arg-type]
        if f.name not in payload and f.default is not MISSING:
            continue
        raw, kind = payload[f.name], hints[f.name]
        values[f.name] = UUID(str(raw)) if kind is UUID \
            else as_utc(datetime.fromisoformat(str(raw))) if kind is datetime else raw
    return event_type(**values)


class PermanentEventError(Exception):
    """The event can never be processed (malformed); retrying will not help."""


EventHandler = Callable[[Envelope[Any]], Awaitable[None]]


class EventPublisher(Protocol):
    """Delivers events; returns one entry per event: None on success, else the error text."""

    async def publish(self, events: Sequence[Envelope[Any]]) -> list[str | None]: ...


@runtime_checkable
class StreamingPublisher(EventPublisher, Protocol):
    """A publisher that reports each event as soon as it is delivered: the relay hands out the
    next rows, and records delivered ones, without waiting for the slowest event."""

    async def send(self, events: Sequence[Envelope[Any]]) -> list[asyncio.Future[str | None]]: ...


class InProcessBus:
    """Delivers events straight to handlers in this process.

    Publishing awaits the handlers, so the relay marks an outbox row delivered only after the
    consumer's transaction committed: a crash in between means a redelivery, never a loss.
    """

    def __init__(self) -> None:
        self._handlers: dict[type[IntegrationEvent], list[EventHandler]] = {}
        self.dead_letters: list[tuple[Envelope[Any], str]] = []

    def subscribe(self, event_type: type[IntegrationEvent], handler: EventHandler) -> None:
        """Call ``handler`` for every published event of ``event_type``."""
        self._handlers.setdefault(event_type, []).append(handler)

    async def publish(self, events: Sequence[Envelope[Any]]) -> list[str | None]:
        """Run the handlers of each event in order; report per-event failures."""
        results: list[str | None] = []
        for event in events:
            results.append(await self._deliver(event))
        return results

    async def _deliver(self, event: Envelope[Any]) -> str | None:
        for handler in self._handlers.get(type(event.event), []):
            try:
                with telemetry.span_from(event.headers, f"{event.name} process",
                                         SpanKind.CONSUMER, {"messaging.system": "inprocess"}):
                    await handler(event)
            except PermanentEventError as exc:
                # A poison event must not block the ones after it: park it and move on.
                log.error("event %s (%s) dead-lettered: %s", event.id, event.name, exc)
                self.dead_letters.append((event, str(exc)))
            except Exception as exc:
                log.warning("event %s (%s) failed, will retry: %r", event.id, event.name, exc)
                return f"{type(exc).__name__}: {exc}"
        return None
