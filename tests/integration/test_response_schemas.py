"""Every loyalty route answers what its OpenAPI document declares: real responses, success and
error alike, validated against the schema of their path, method and status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema
import pytest

from authloyalty.bootstrap import loyalty_app
from tests.integration.conftest import WithUsers


@pytest.fixture
async def loyalty(with_users: WithUsers) -> AsyncIterator[tuple[httpx.AsyncClient,
                                                              dict[str, str], dict[str, str],
                                                              str]]:
    transport = httpx.ASGITransport(app=loyalty_app(with_users.system.loyalty))
    async with httpx.AsyncClient(transport=transport, base_url="http://loyalty") as client:
        yield (client, with_users.auth(with_users.admin), with_users.auth(with_users.user),
               str(with_users.user.user_id))


def check(document: dict[str, Any], route: str, method: str, reply: httpx.Response) -> None:
    """``reply`` is valid against the schema declared for it; a success carries no field
    its model does not name."""
    responses = document["paths"][route][method]["responses"]
    declared = responses[str(reply.status_code)]["content"]["application/json"]["schema"]
    schema = {**declared, "components": document["components"]}
    body = reply.json()
    jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)
    resolved = declared
    if "$ref" in declared:
        resolved = document["components"]["schemas"][declared["$ref"].rsplit("/", 1)[1]]
    # Success bodies carry exactly the model's fields; errors none their envelope does not
    # name (a 422 adds "fields").
    if reply.status_code < 300:
        assert set(body) == set(resolved["properties"]), (route, body)
    else:
        assert set(body) <= set(resolved["properties"]), (route, body)
    if reply.status_code < 300:  # personal data: never cached
        assert reply.headers["cache-control"] == "no-store", route


async def test_every_route_answers_its_declared_schema(
        loyalty: tuple[httpx.AsyncClient, dict[str, str], dict[str, str], str]) -> None:
    client, admin, user, user_id = loyalty
    document = (await client.get("/openapi.json")).json()
    movement = {"amount": 5, "comment": "coffee ☕ \"quoted\"\nline"}
    calls: list[tuple[str, str, str, dict[str, str], dict[str, Any] | None]] = [
        ("/loyalty/me", "get", "/loyalty/me", user, None),
        ("/loyalty/me/withdrawals", "post", "/loyalty/me/withdrawals", user, movement),
        ("/loyalty/me/withdrawals", "post", "/loyalty/me/withdrawals", user,
         {"amount": 10**9, "comment": "too much"}),
        ("/loyalty/me/withdrawals", "post", "/loyalty/me/withdrawals", user, {"amount": 0}),
        ("/loyalty/me/transactions", "get", "/loyalty/me/transactions?limit=1", user, None),
        ("/loyalty/admin/accounts/{uuid}", "get", f"/loyalty/admin/accounts/{user_id}",
         admin, None),
        ("/loyalty/admin/accounts/{uuid}", "get", f"/loyalty/admin/accounts/{user_id}",
         user, None),
        ("/loyalty/admin/accounts/{uuid}/deposits", "post",
         f"/loyalty/admin/accounts/{user_id}/deposits", admin, movement),
        ("/loyalty/admin/accounts/{uuid}/withdrawals", "post",
         f"/loyalty/admin/accounts/{user_id}/withdrawals", admin, movement),
        ("/loyalty/admin/accounts/{uuid}/transactions", "get",
         f"/loyalty/admin/accounts/{user_id}/transactions", admin, None),
        ("/loyalty", "post", "/loyalty", user,
         {"operation": "w", "comment": "seed", "balance": 1}),
        ("/loyalty", "post", "/loyalty", admin,
         {"uuid": user_id, "operation": "d", "comment": "seed", "balance": 1}),
        ("/loyalty/{uuid}", "get", f"/loyalty/{user_id}", user, None),
    ]
    statuses = []
    for route, method, url, auth, body in calls:
        reply = await client.request(method.upper(), url, headers=auth, json=body)
        check(document, route, method, reply)
        statuses.append(reply.status_code)
    assert statuses == [200, 201, 409, 422, 200, 200, 403, 201, 201, 200, 200, 200, 200]


async def test_replayed_answers_are_the_first_answers(
        loyalty: tuple[httpx.AsyncClient, dict[str, str], dict[str, str], str]) -> None:
    client, admin, user, user_id = loyalty
    for url, auth, body in (
            ("/loyalty/me/withdrawals", user, {"amount": 3, "comment": "é\t☕"}),
            (f"/loyalty/admin/accounts/{user_id}/deposits", admin, {"amount": 4,
                                                                     "comment": "gift"}),
            ("/loyalty", admin, {"uuid": user_id, "operation": "w", "comment": "s",
                                 "balance": 2})):
        headers = {**auth, "Idempotency-Key": f"k-{url}"}
        first = await client.post(url, headers=headers, json=body)
        again = await client.post(url, headers=headers, json=body)
        assert first.status_code in (200, 201)
        assert (again.status_code, again.content) == (first.status_code, first.content)
        assert again.headers["cache-control"] == first.headers["cache-control"] == "no-store"
