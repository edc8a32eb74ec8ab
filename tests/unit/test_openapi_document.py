"""What Swagger UI shows comes from the OpenAPI documents: each operation lists the errors it
can answer with (and no other), the original API's routes have real titles, the examples are
usable and the Authorize dialog says where a token comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from authloyalty.loyalty import http as loyalty_http
from authloyalty.platform.http.app import create_app
from authloyalty.sso import http as sso_http

ROOT = Path(__file__).resolve().parents[2]

# (method, path) -> the error statuses it can answer with; every route of both services.
EXPECTED_ERRORS: dict[tuple[str, str], set[int]] = {
    ("post", "/auth/registration"): {400, 409, 413, 422, 503},
    ("post", "/auth/login"): {400, 401, 413, 422, 429, 503},
    ("post", "/auth/refresh"): {400, 401, 413, 422, 503},
    ("post", "/auth/logout"): {400, 401, 413, 422, 503},
    ("get", "/auth/info"): {401, 503},
    ("get", "/auth/sessions"): {401, 503},
    ("delete", "/auth/sessions"): {401, 503},
    ("delete", "/auth/sessions/{session_id}"): {401, 404, 422, 503},
    ("post", "/auth/password"): {400, 401, 413, 422, 429, 503},
    ("delete", "/auth/me"): {400, 401, 409, 413, 422, 429, 503},
    ("post", "/auth/admin/users/{user_id}/restore"): {401, 403, 404, 409, 410, 422, 503},
    ("get", "/auth/admin/users"): {401, 403, 422, 503},
    ("get", "/auth/admin/users/{user_id}"): {401, 403, 404, 422, 503},
    ("put", "/auth/admin/users/{user_id}/admin"): {400, 401, 403, 404, 409, 413, 422, 503},
    ("post", "/auth/admin/users/{user_id}/sessions/revoke"): {401, 403, 404, 422, 503},
    ("get", "/auth/admin/audit"): {401, 403, 422, 503},
    ("get", "/.well-known/jwks.json"): set(),
    ("get", "/auth/healthz"): set(),
    ("get", "/auth/ready"): {503},
    ("get", "/loyalty/healthz"): set(),
    ("get", "/loyalty/ready"): {503},
    ("get", "/loyalty/me"): {401, 404, 503},
    ("post", "/loyalty/me/withdrawals"): {400, 401, 404, 409, 413, 422, 503},
    ("get", "/loyalty/me/transactions"): {401, 404, 422, 503},
    ("get", "/loyalty/admin/accounts/{uuid}"): {401, 403, 404, 422, 503},
    ("post", "/loyalty/admin/accounts/{uuid}/deposits"): {400, 401, 403, 404, 409, 413, 422,
                                                          503},
    ("post", "/loyalty/admin/accounts/{uuid}/withdrawals"): {400, 401, 403, 404, 409, 413, 422,
                                                             503},
    ("get", "/loyalty/admin/accounts/{uuid}/transactions"): {401, 403, 404, 422, 503},
    ("get", "/loyalty/admin/audit"): {401, 403, 422, 503},
    ("post", "/loyalty/admin/transactions/{transaction_id}/reversal"): {
        400, 401, 403, 404, 409, 413, 422, 503},
    ("post", "/loyalty/me/holds"): {400, 401, 404, 409, 413, 422, 503},
    ("get", "/loyalty/me/holds"): {401, 404, 422, 503},
    ("post", "/loyalty/me/holds/{hold_id}/capture"): {400, 401, 404, 409, 413, 422, 503},
    ("post", "/loyalty/me/holds/{hold_id}/release"): {401, 404, 409, 422, 503},
    ("post", "/loyalty/admin/accounts/{uuid}/holds"): {400, 401, 403, 404, 409, 413, 422,
                                                       503},
    ("get", "/loyalty/admin/accounts/{uuid}/holds"): {401, 403, 404, 422, 503},
    ("post", "/loyalty/admin/accounts/{uuid}/holds/{hold_id}/capture"): {
        400, 401, 403, 404, 409, 413, 422, 503},
    ("post", "/loyalty/admin/accounts/{uuid}/holds/{hold_id}/release"): {
        401, 403, 404, 409, 422, 503},
    ("post", "/loyalty"): {400, 401, 403, 404, 409, 413, 422, 503},
    ("get", "/loyalty/{uuid}"): {401, 403, 404, 422, 503},
}


def _document(service: str) -> dict[str, Any]:
    app: FastAPI = create_app(f"authloyalty {service}", "", service, "0")
    (sso_http if service == "sso" else loyalty_http).install(app)
    return app.openapi()


@pytest.fixture(scope="module")
def documents() -> dict[str, dict[str, Any]]:
    return {service: _document(service) for service in ("sso", "loyalty")}


def _operations(documents: dict[str, dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method, path): operation
            for document in documents.values()
            for path, methods in document["paths"].items()
            for method, operation in methods.items()}


def _errors(operation: dict[str, Any]) -> set[int]:
    return {int(status) for status in operation["responses"] if int(status) >= 400}


def test_each_operation_lists_the_errors_it_can_return(
        documents: dict[str, dict[str, Any]]) -> None:
    operations = _operations(documents)
    assert set(operations) == set(EXPECTED_ERRORS)
    listed = {key: _errors(operation) for key, operation in operations.items()}
    assert listed == EXPECTED_ERRORS


def test_only_a_body_can_be_too_large_or_not_json(documents: dict[str, dict[str, Any]]) -> None:
    for (method, path), operation in _operations(documents).items():
        has_body = "requestBody" in operation
        assert (413 in _errors(operation)) == has_body, (method, path)
        assert (400 in _errors(operation)) == has_body, (method, path)
        if method == "get":
            assert not _errors(operation) & {400, 409, 413, 429}, (method, path)


def test_every_error_is_the_envelope_with_a_description(
        documents: dict[str, dict[str, Any]]) -> None:
    for key, operation in _operations(documents).items():
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (key, status)
            assert response["description"] not in ("", "Error", "Successful Response"), key


def test_the_original_api_has_real_titles(documents: dict[str, dict[str, Any]]) -> None:
    paths = documents["loyalty"]["paths"]
    assert paths["/loyalty"]["post"]["summary"] == "Withdraw or deposit (original API)"
    assert paths["/loyalty/{uuid}"]["get"]["summary"] == "Account balance (original API)"
    summaries = [op.get("summary", "") for op in _operations(documents).values()]
    assert not [s for s in summaries if s.startswith("Seed ")], summaries


def test_reversals_and_expiring_points_are_documented(
        documents: dict[str, dict[str, Any]]) -> None:
    doc = documents["loyalty"]
    schemas = doc["components"]["schemas"]

    def ref(name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{name}"}

    reversal = doc["paths"]["/loyalty/admin/transactions/{transaction_id}/reversal"]["post"]
    assert reversal["requestBody"]["content"]["application/json"]["schema"] == ref(
        "ReversalIn")
    assert reversal["responses"]["201"]["content"]["application/json"]["schema"] == ref(
        "MovementOut")
    assert [p["name"] for p in reversal["parameters"]] == ["transaction_id", "Idempotency-Key"]
    assert set(schemas["ReversalIn"]["properties"]) == {"comment"}
    transaction = schemas["TransactionOut"]["properties"]
    assert transaction["kind"]["enum"] == ["deposit", "withdrawal", "expiry", "reversal"]
    assert "reverses" in transaction
    deposit = doc["paths"]["/loyalty/admin/accounts/{uuid}/deposits"]["post"]
    assert deposit["requestBody"]["content"]["application/json"]["schema"] == ref("DepositIn")
    expires_at = schemas["DepositIn"]["properties"]["expires_at"]["anyOf"][0]
    assert expires_at == {"type": "string", "format": "date-time"}
    for name in ("AccountOut", "AdminAccountOut"):
        assert schemas[name]["properties"]["expiring"]["items"] == ref("ExpiringOut")
    # The original's answers keep their exact shape.
    original = doc["paths"]["/loyalty/{uuid}"]["get"]["responses"]["200"]
    assert original["content"]["application/json"]["schema"] == ref("BalanceOut")
    assert set(schemas["BalanceOut"]["properties"]) == {"status", "uuid", "balance"}


def test_the_registration_example_is_real_and_not_the_readme_user(
        documents: dict[str, dict[str, Any]]) -> None:
    schema = documents["sso"]["components"]["schemas"]["RegisterIn"]["properties"]
    email = schema["email"]["examples"][0]
    name_examples = schema["name"]["examples"]
    assert email == "alex.morgan@example.com"
    assert email not in (ROOT / "README.md").read_text()
    assert name_examples == ["Alex Morgan"]


@pytest.mark.parametrize("service", ["sso", "loyalty"])
def test_the_authorize_dialog_names_both_token_sources(
        documents: dict[str, dict[str, Any]], service: str) -> None:
    (scheme,) = documents[service]["components"]["securitySchemes"].values()
    assert scheme["type"] == "http"
    assert scheme["scheme"].lower() == "bearer"
    assert "/auth/registration" in scheme["description"]
    assert "/auth/login" in scheme["description"]
    assert "`Bearer <token>` works too" in scheme["description"]
