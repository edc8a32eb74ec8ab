"""Health, readiness, metrics and API docs of both services."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.e2e_helpers import Api

pytestmark = pytest.mark.e2e

SSO_ROUTES = {"/auth/registration": "post", "/auth/login": "post", "/auth/refresh": "post",
              "/auth/logout": "post", "/auth/info": "get", "/auth/healthz": "get",
              "/auth/ready": "get", "/.well-known/jwks.json": "get"}
LOYALTY_ROUTES = {"/loyalty": "post", "/loyalty/{uuid}": "get", "/loyalty/me": "get",
                  "/loyalty/me/withdrawals": "post", "/loyalty/me/transactions": "get",
                  "/loyalty/admin/accounts/{uuid}": "get",
                  "/loyalty/admin/accounts/{uuid}/deposits": "post",
                  "/loyalty/admin/accounts/{uuid}/withdrawals": "post",
                  "/loyalty/admin/accounts/{uuid}/transactions": "get",
                  "/loyalty/healthz": "get", "/loyalty/ready": "get"}
# Operations that need the bearer token must say so in the schema (Swagger's Authorize).
SSO_SECURED = {("/auth/info", "get")}
LOYALTY_SECURED = {(path, method) for path, method in LOYALTY_ROUTES.items()
                   if path not in ("/loyalty/healthz", "/loyalty/ready")}


@pytest.mark.parametrize("path", ["/auth/healthz", "/auth/ready"])
def test_sso_health(api: Api, path: str) -> None:
    r = api.sso("GET", path)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "Success"


@pytest.mark.parametrize("path", ["/loyalty/healthz", "/loyalty/ready"])
def test_loyalty_health(api: Api, path: str) -> None:
    r = api.loy("GET", path)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "Success"


@pytest.mark.parametrize("service", ["sso", "loyalty"])
def test_metrics(api: Api, service: str) -> None:
    call = api.sso if service == "sso" else api.loy
    health = "/auth/healthz" if service == "sso" else "/loyalty/healthz"
    assert call("GET", health).status_code == 200
    r = call("GET", "/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    lines = [line for line in r.text.splitlines()
             if line.startswith("authloyalty_http_requests_total{")]
    assert lines, r.text[:2000]
    assert any(health in line and 'method="GET"' in line and '"200"' in line
               for line in lines), lines
    assert "# TYPE authloyalty_http_requests_total counter" in r.text


def _security_schemes(doc: dict[str, Any]) -> dict[str, Any]:
    schemes: dict[str, Any] = doc.get("components", {}).get("securitySchemes", {})
    return {name: s for name, s in schemes.items()
            if s.get("type") == "http" and s.get("scheme", "").lower() == "bearer"}


@pytest.mark.parametrize("service", ["sso", "loyalty"])
def test_openapi(api: Api, service: str) -> None:
    call = api.sso if service == "sso" else api.loy
    routes, secured = ((SSO_ROUTES, SSO_SECURED) if service == "sso"
                       else (LOYALTY_ROUTES, LOYALTY_SECURED))
    r = call("GET", "/openapi.json")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for path, method in routes.items():
        assert path in paths, (path, sorted(paths))
        assert method in paths[path], (path, paths[path].keys())
    bearer_schemes = _security_schemes(doc)
    assert bearer_schemes, doc.get("components", {}).get("securitySchemes")
    for path, method in secured:
        requirements = paths[path][method].get("security", doc.get("security", []))
        names = {name for requirement in requirements for name in requirement}
        assert names & set(bearer_schemes), (path, method, requirements)


@pytest.mark.parametrize("service", ["sso", "loyalty"])
def test_swagger_ui(api: Api, service: str) -> None:
    call = api.sso if service == "sso" else api.loy
    r = call("GET", "/swagger")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert "swagger" in r.text.lower()
    assert "/openapi.json" in r.text
