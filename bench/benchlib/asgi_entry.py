"""loyalty as a plain ASGI application, for HTTP servers other than our uvicorn (bench/servers.py).

    CONFIG_PATH=config.yaml granian --interface asgi --factory benchlib.asgi_entry:create_app

The application is the one ``authloyalty loyalty --config FILE`` serves (``cli._run_loyalty``):
the same settings file, logging, garbage-collector thresholds, telemetry, ``LoyaltyProcess``
(JWKS, Kafka consumers, maintenance) and FastAPI app. What the command does around uvicorn is
done here through the ASGI lifespan instead: the process is built and started at
``lifespan.startup``, before the server takes requests, and stopped at ``lifespan.shutdown``. A
start that fails is reported as ``lifespan.startup.failed`` (granian then exits) rather than
raised: granian takes an exception out of the lifespan for "no lifespan support" and would
serve without the process started.

Not the production entry point: it has none of what ``platform/httpserver.py`` adds to uvicorn
(the 431 for a request head over ``loyalty.request_headers``, one write per answer); whatever
server runs it brings its own rules for those.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from structlog.contextvars import bind_contextvars

from authloyalty.bootstrap import LoyaltyProcess, build_loyalty_process, loyalty_app
from authloyalty.cli import GC_THRESHOLDS
from authloyalty.platform import telemetry
from authloyalty.platform.logging import configure_logging
from authloyalty.settings import Settings, load_settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("authloyalty")


class LoyaltyASGI:
    """The loyalty app behind an ASGI lifespan that starts and stops its process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: LoyaltyProcess | None = None
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if self.app is None:  # a server that skipped the lifespan
            raise RuntimeError("loyalty was not started: the server must run the ASGI lifespan")
        await self.app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        # The server sends lifespan.startup, then (when it stops) lifespan.shutdown.
        for phase, step in (("startup", self._start), ("shutdown", self._stop)):
            message = await receive()
            if message["type"] != f"lifespan.{phase}":
                raise RuntimeError(f"lifespan.{phase} expected, got {message['type']}")
            try:
                await step()
            except Exception as exc:
                log.exception("loyalty's %s failed", phase)
                await send({"type": f"lifespan.{phase}.failed", "message": repr(exc)})
                return
            await send({"type": f"lifespan.{phase}.complete"})

    async def _start(self) -> None:
        # As cli._serve binds it for uvicorn's task: the background tasks started here copy
        # this task's context, so their log lines name the service.
        bind_contextvars(service="loyalty")
        telemetry.configure(self.settings.telemetry, "authloyalty-loyalty")
        process = build_loyalty_process(self.settings)
        self.process = process
        await process.start()
        self.app = loyalty_app(process.loyalty)

    async def _stop(self) -> None:
        if self.process is not None:
            await self.process.stop()


def create_app() -> LoyaltyASGI:
    """The factory a server calls in each worker process (``--factory``); the settings file is
    ``$CONFIG_PATH``, as for ``authloyalty loyalty`` without ``--config``."""
    if not os.environ.get("CONFIG_PATH"):
        raise RuntimeError("set CONFIG_PATH to loyalty's config file")
    settings = load_settings()
    if not settings.events.kafka.instance_id:
        # Each worker is a replica of its own (the name of its revocation reader), as each
        # `authloyalty loyalty` process is through its port; the workers here share one port.
        settings.events.kafka.instance_id = f"asgi-{settings.loyalty.http_port}-{os.getpid()}"
    # After the server's own logging set-up (granian configures it in each worker before
    # loading the application): the lines and the access log of `authloyalty loyalty`.
    configure_logging(settings.log_level, settings.log_format, access_log=settings.access_log,
                      service="loyalty")
    gc.set_threshold(*GC_THRESHOLDS)  # cli._tune_gc
    return LoyaltyASGI(settings)
