"""Liveness and readiness routes."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response

from authloyalty.platform.errors import DomainError
from authloyalty.platform.http.fast import FastRoute
from authloyalty.platform.http.responses import PrivateJSONResponse, error_response, success
from authloyalty.platform.schemas import ErrorOut, StatusOut


def health_router(prefix: str) -> APIRouter:
    """``{prefix}/healthz`` (the process answers) and ``{prefix}/ready`` (its database does,
    and the container's ``not_ready()``, when it has one, names no reason to wait)."""
    router = APIRouter(prefix=prefix, tags=["health"])

    async def healthz() -> Response:
        """Liveness: the process answers."""
        return success(200)

    # Probed every few seconds by every orchestrator and balancer: a fast route.
    router.add_api_route("/healthz", healthz, methods=["GET"], response_model=StatusOut,
                         response_class=PrivateJSONResponse, route_class_override=FastRoute)

    @router.get("/ready", response_model=StatusOut, responses={503: {"model": ErrorOut}})
    async def ready(request: Request) -> Response:
        """Readiness: the database answers and the service is not still starting up."""
        container = request.app.state.container
        try:
            await container.database.ping()
        except Exception:
            return error_response(503, "database_unavailable", "database is unreachable",
                                  {"Retry-After": "1"})
        not_ready: Callable[[], DomainError | None] | None = getattr(container, "not_ready",
                                                                     None)
        problem = not_ready() if not_ready is not None else None
        if problem is not None:
            return error_response(503, problem.code, problem.message, {"Retry-After": "1"})
        return success(200)

    return router
