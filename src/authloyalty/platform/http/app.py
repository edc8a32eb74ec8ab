"""The FastAPI application both services start from."""

from __future__ import annotations

from fastapi import FastAPI

from authloyalty.platform.http.docs import install_swagger_ui
from authloyalty.platform.http.errors import install_error_handlers
from authloyalty.platform.http.fast import install_fast_lane
from authloyalty.platform.http.middleware import (
    AccessLogMiddleware,
    BodyLimitMiddleware,
    install_metrics,
)


def create_app(title: str, description: str, service: str, version: str) -> FastAPI:
    """A FastAPI app with our docs URLs, error envelope, body limit, metrics and access
    log, whose fast routes are found by the fast lane (platform.http.fast)."""
    app = FastAPI(
        title=title,
        description=description,
        version=version,
        docs_url=None,  # served from the installed package: install_swagger_ui
        redoc_url=None,
        openapi_url="/openapi.json",
        swagger_ui_parameters={"persistAuthorization": True},
        # Traces come from OpenTelemetry's instrumentation (telemetry.instrument_fastapi) and
        # metrics from our middleware; FastAPI's own telemetry would look the providers up on
        # every request (environment reads included) to find them unset.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_swagger_ui(app)
    install_error_handlers(app)
    install_metrics(app, service)
    install_fast_lane(app)
    app.add_middleware(BodyLimitMiddleware)
    # Outermost (added last): a body refused with 413 gets its access line too.
    app.add_middleware(AccessLogMiddleware)
    return app
