"""Integration events and the bus interface the services use to exchange them.

A bus adapter (in-process here, Kafka in production) only has to implement
:class:`EventPublisher` for the relay and call the registered handlers for the consumer side;
the services never see which one runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable
from uuid import UUID, uuid4

from opentelemetry.trace import SpanKind

from authloyalty.platform import telemetry
from authloyalty.platform.db import utcnow

log = logging.getLogger(__name__)

USER_REGISTERED = "user_registered"
SESSION_REVOKED = "session_revoked"


@dataclass(frozen=True)
class Event:
    """One integration event; ``id`` is unique and lets consumers drop redeliveries."""

    type: str
    key: str
    data: Mapping[str, Any]
    id: UUID = field(default_factory=uuid4)
    occurred_at: datetime = field(default_factory=utcnow)
    headers: Mapping[str, str] = field(default_factory=dict)


class PermanentEventError(Exception):
    """The event can never be processed (malformed); retrying will not help."""


EventHandler = Callable[[Event], Awaitable[None]]


class EventPublisher(Protocol):
    """Delivers events; returns one entry per event: None on success, else the error text."""

    async def publish(self, events: Sequence[Event]) -> list[str | None]: ...


@runtime_checkable
class StreamingPublisher(EventPublisher, Protocol):
    """A publisher that reports each event as soon as it is delivered: the relay hands out the
    next rows, and records delivered ones, without waiting for the slowest event."""

    async def send(self, events: Sequence[Event]) -> list[asyncio.Future[str | None]]: ...


class InProcessBus:
    """Delivers events straight to handlers in this process.

    Publishing awaits the handlers, so the relay marks an outbox row delivered only after the
    consumer's transaction committed: a crash in between means a redelivery, never a loss.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, list[EventHandler]] = {}
        self.dead_letters: list[tuple[Event, str]] = []

    def subscribe(self, event_type: str, handler: EventHandler) -> None:
        """Call ``handler`` for every published event of ``event_type``."""
        self._handlers.setdefault(event_type, []).append(handler)

    async def publish(self, events: Sequence[Event]) -> list[str | None]:
        """Run the handlers of each event in order; report per-event failures."""
        results: list[str | None] = []
        for event in events:
            results.append(await self._deliver(event))
        return results

    async def _deliver(self, event: Event) -> str | None:
        for handler in self._handlers.get(event.type, []):
            try:
                with telemetry.span_from(event.headers, f"{event.type} process",
                                         SpanKind.CONSUMER, {"messaging.system": "inprocess"}):
                    await handler(event)
            except PermanentEventError as exc:
                # A poison event must not block the ones after it: park it and move on.
                log.error("event %s (%s) dead-lettered: %s", event.id, event.type, exc)
                self.dead_letters.append((event, str(exc)))
            except Exception as exc:
                log.warning("event %s (%s) failed, will retry: %r", event.id, event.type, exc)
                return f"{type(exc).__name__}: {exc}"
        return None
