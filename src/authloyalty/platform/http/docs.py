"""Swagger UI served by the service itself: its script, style sheet and icon come from the
installed ``fastapi-offline`` package (swagger-ui-dist's files), so the page works with no
route off the machine."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

SWAGGER_URL = "/swagger"
ASSETS_URL = "/swagger/assets"
# The package's data directory: swagger-ui-bundle.js, swagger-ui.css, favicon.png.
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")


def install_swagger_ui(app: FastAPI) -> None:
    """Serve Swagger UI at ``/swagger`` and its assets under ``/swagger/assets``."""
    missing = [name for name in _ASSETS if not (ASSETS_DIR / name).is_file()]
    if missing:  # a broken install: say so at start, not with a blank page later
        raise RuntimeError(f"Swagger UI assets missing from {ASSETS_DIR}: {', '.join(missing)}"
                           " (reinstall fastapi-offline)")
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="swagger-assets")

    @app.get(SWAGGER_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        assert app.openapi_url is not None
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
