"""Swagger UI's page names only assets the service serves itself (from the installed
fastapi-offline package), so it works with nothing reachable off the machine."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from authloyalty.platform.http.app import create_app


def test_the_page_and_its_assets_are_served_locally() -> None:
    with TestClient(create_app("authloyalty sso", "", "sso", "0")) as client:
        page = client.get("/swagger")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "://" not in page.text, "the page names a URL off the service"
        assets = re.findall(r'(?:href|src)="([^"]+)"', page.text)
        assert sorted(assets) == ["/swagger/assets/favicon.png",
                                  "/swagger/assets/swagger-ui-bundle.js",
                                  "/swagger/assets/swagger-ui.css"]
        for asset in assets:
            reply = client.get(asset)
            assert reply.status_code == 200, asset
            assert len(reply.content) > 1000, asset
        assert "SwaggerUIBundle" in client.get("/swagger/assets/swagger-ui-bundle.js").text
        assert client.get("/swagger/assets/missing.js").status_code == 404
