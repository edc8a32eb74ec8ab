"""Every fast route answers exactly as FastAPI's own resolution of the same declaration.

The cases are generated from the table of fast routes (``loyalty.http.hot_router``): each
route is asked the same requests through the fast resolution and through FastAPI's
(``standard_resolution``), and the two answers must be the same bytes — status, headers
(``Cache-Control: no-store`` and ``Pragma`` included) and body, error envelopes and field
lists included. Fresh movements differ only in what a second movement must change (its id,
balance and time); a replay of one is compared byte for byte. The original's routes
(``GET /loyalty/{uuid}``, ``POST /loyalty``) are fast routes too, asked besides about other
people's accounts, unknown ones and admins' operations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import Request
from fastapi.routing import APIRoute
from pydantic import BaseModel

from authloyalty.bootstrap import loyalty_app
from authloyalty.loyalty import http as loyalty_http
from authloyalty.loyalty.schemas import MovementIn, SeedOperationIn
from authloyalty.platform.http.fast import FastRoute
from authloyalty.platform.http.responses import PrivateJSONResponse
from tests.integration.conftest import WithUsers
from tests.integration.equivalence import (
    STREAMED_OVERSIZED,
    body_shapes,
    both_resolutions,
    streamed,
    without_length,
)

JSON = "application/json"
# A valid body for each body model of a fast route: a new fast route with a new body model
# needs its row here (test_every_fast_route_is_covered says so).
VALID_BODIES: dict[type[BaseModel], bytes] = {
    MovementIn: '{"amount": 3, "comment": "coffee ☕ \\"quoted\\"\\tand\\nline 🙂"}'.encode(),
    SeedOperationIn: '{"operation": "w", "balance": 3, "comment": "tea 🍵"}'.encode(),
}
# In a case's path and body, these stand for the ids of the test's accounts.
USER, ADMIN, NOBODY = "@user", "@admin", "@nobody"
FAST_ROUTES = [r for r in loyalty_http.hot_router.routes if isinstance(r, FastRoute)]


@dataclass(frozen=True)
class Case:
    """One request to a fast route."""

    name: str
    route: FastRoute
    headers: dict[str, str]
    content: bytes | None = None
    streamed: bool = False
    auth: str | None = "user"  # whose token goes in Authorization; None: the header as given
    path: str | None = None  # the route's path with {uuid} the user's id unless given


def _body_model(route: FastRoute) -> type[BaseModel] | None:
    params = route.dependant.body_params
    if not params:
        return None
    model = params[0].field_info.annotation
    assert isinstance(model, type)
    assert issubclass(model, BaseModel)
    return model


def _method(route: FastRoute) -> str:
    (method,) = route.methods or set()
    return method


def _cases(route: FastRoute) -> Iterator[Case]:
    """The requests every fast route is asked, generated from what its declaration takes."""
    model = _body_model(route)
    good = VALID_BODIES[model] if model else None
    typed = {"Content-Type": JSON} if model else {}
    yield Case("valid", route, typed, good)
    yield Case("no token", route, typed, good, auth=None)
    yield Case("empty authorization", route, {**typed, "Authorization": ""}, good, auth=None)
    yield Case("bad token", route, {**typed, "Authorization": "Bearer nope"}, good, auth=None)
    yield Case("bad scheme", route, {**typed, "Authorization": "Basic dXNlcjpwYXNz"}, good,
               auth=None)
    for field in route.dependant.header_params:
        alias = field.alias
        yield Case(f"valid {alias}", route, {**typed, alias: "key-1"}, good)
        yield Case(f"{alias} with a space", route, {**typed, alias: "has space"}, good)
        yield Case(f"{alias} too long", route, {**typed, alias: "k" * 256}, good)
        yield Case(f"empty {alias}", route, {**typed, alias: ""}, good)
        if model:
            yield Case(f"bad {alias} and body", route, {**typed, alias: "k" * 256},
                       b'{"amount": -1}')
    if model is None:
        return
    bodies: list[tuple[str, dict[str, str], bytes | None]] = [
        *body_shapes(good or b"{}"),
        ("malformed JSON", typed, b'{"amount": 1,'),
        ("invalid UTF-8", typed, b'{"amount": 1, "comment": "\xff"}'),
        ("huge number", typed, b'{"amount": 1' + b"0" * 5000 + b', "comment": "x"}'),
        ("oversized", typed, b'{"amount": 1, "comment": "' + b"c" * 70_000 + b'"}'),
        ("form content type", {"Content-Type": "application/x-www-form-urlencoded"},
         b"amount=1&comment=x"),
        ("zero amount", typed, b'{"amount": 0, "comment": "x"}'),
        ("string amount", typed, b'{"amount": "ten", "comment": "x"}'),
        ("fractional amount", typed, b'{"amount": 1.5, "comment": "x"}'),
        ("too much", typed, b'{"amount": 1000000000, "comment": "x"}'),
        ("unknown field", typed, b'{"amount": 1, "comment": "x", "extra": true}'),
        ("comment too long", typed, b'{"amount": 1, "comment": "' + b"c" * 300 + b'"}'),
        ("NUL in comment", typed, b'{"amount": 1, "comment": "a\\u0000b"}'),
    ]
    for name, headers, content in bodies:
        yield Case(name, route, headers, content)
    yield Case("oversized, streamed", route, typed, STREAMED_OVERSIZED, streamed=True)
    if model is SeedOperationIn:
        yield from _original_operations(route, typed)


def _original_accounts(route: FastRoute) -> Iterator[Case]:
    """The original's balance read about every kind of account, by a user and an admin."""
    for who in ("user", "admin"):
        for account, name in ((USER, "the user's"), (ADMIN, "the admin's"),
                              (NOBODY, "an unknown")):
            yield Case(f"{who} reads {name} account", route, {}, auth=who,
                       path=route.path.replace("{uuid}", account))
    for bad in ("not-a-uuid", "12345678-1234-1234-1234-12345678901z", "me%20"):
        yield Case(f"malformed uuid {bad}", route, {}, path=route.path.replace("{uuid}", bad))
    yield Case("malformed uuid, no token", route, {}, auth=None,
               path=route.path.replace("{uuid}", "x"))


def _original_operations(route: FastRoute, typed: dict[str, str]) -> Iterator[Case]:
    """The original's operations: whose account, which operation, by whom."""
    def body(operation: str, amount: int = 3, uuid: str | None = None) -> bytes:
        target = f'"uuid": "{uuid}", ' if uuid else ""
        return f'{{{target}"operation": "{operation}", "balance": {amount}, "comment": "c"}}' \
            .encode()
    for who in ("user", "admin"):
        yield Case(f"{who}: own uuid", route, typed, body("w", uuid=f"@{who}"), auth=who)
        yield Case(f"{who}: deposit, no uuid", route, typed, body("d"), auth=who)
        yield Case(f"{who}: withdrawal, no uuid", route, typed, body("w"), auth=who)
        for account, name in ((USER, "the user's"), (ADMIN, "the admin's"),
                              (NOBODY, "an unknown")):
            for operation in ("w", "d"):
                yield Case(f"{who}: {operation} on {name} account", route, typed,
                           body(operation, uuid=account), auth=who)
        yield Case(f"{who}: more than the balance", route, typed,
                   body("w", 999_999_999, uuid=USER), auth=who)
    yield Case("unknown operation", route, typed, body("x"))
    yield Case("malformed uuid", route, typed, body("w", uuid="nope"))
    yield Case("balance as a string", route, typed,
               b'{"operation": "w", "balance": "3", "comment": "c"}')


CASES = [case for route in FAST_ROUTES for case in (
    *_cases(route), *(_original_accounts(route) if route.dependant.path_params else ()))]


def _id(case: Case) -> str:
    return f"{_method(case.route)} {case.route.path}: {case.name}"


@dataclass
class Loyalty:
    """Both resolutions of one loyalty app, and the tokens of its users."""

    fast: httpx.AsyncClient
    standard: httpx.AsyncClient
    tokens: dict[str, str]
    ids: dict[str, str]


@pytest.fixture
async def loyalty(with_users: WithUsers) -> AsyncIterator[Loyalty]:
    app = loyalty_app(with_users.system.loyalty)
    async with both_resolutions(app, "http://loyalty") as (fast, standard):
        deposit = await fast.post(
            f"/loyalty/admin/accounts/{with_users.user.user_id}/deposits",
            headers=with_users.auth(with_users.admin),
            json={"amount": 1_000_000, "comment": "for the tests"})
        assert deposit.status_code == 201, deposit.text
        yield Loyalty(fast, standard,
                      {"user": with_users.user.tokens.access_token,
                       "admin": with_users.admin.tokens.access_token},
                      {USER: str(with_users.user.user_id), ADMIN: str(with_users.admin.user_id),
                       NOBODY: "00000000-0000-4000-8000-000000000000"})


async def _send(client: httpx.AsyncClient, case: Case, loyalty: Loyalty) -> httpx.Response:
    # The client's own request id: with the access log on, each answer would carry a random
    # one made for it (the log's state is not this test's business).
    headers = {"X-Request-Id": "equivalence", **case.headers}
    if case.auth is not None:
        headers["Authorization"] = f"Bearer {loyalty.tokens[case.auth]}"
    path = case.path or case.route.path.replace("{uuid}", USER)
    content: Any = case.content
    for placeholder, account in loyalty.ids.items():
        path = path.replace(placeholder, account)
        if content is not None:
            content = content.replace(placeholder.encode(), account.encode())
    if case.streamed and content is not None:
        content = streamed(content)
    return await client.request(_method(case.route), path, headers=headers, content=content)


def _fresh_movement(reply: httpx.Response) -> dict[str, Any]:
    """A movement's answer without what a second, equal movement must change."""
    body: dict[str, Any] = reply.json()
    if "transaction" not in body:  # the original's answer: its balance only
        return {**body, "balance": None}
    transaction = dict(body["transaction"])
    for changing in ("id", "balance_after", "created_at"):
        transaction.pop(changing)
    return {**body, "balance": None, "transaction": transaction}


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
async def test_fast_and_standard_resolution_answer_alike(loyalty: Loyalty, case: Case) -> None:
    standard = await _send(loyalty.standard, case, loyalty)
    fast = await _send(loyalty.fast, case, loyalty)
    assert fast.status_code == standard.status_code, (fast.text, standard.text)
    replay = any(field.alias in case.headers for field in case.route.dependant.header_params)
    if _method(case.route) == "POST" and fast.is_success and not replay:
        # Two fresh movements: all but their id, balances and time (and so perhaps their
        # length) is the same; test_a_fresh_answer_is_rendered_as_fastapi_renders_it
        # compares the bytes of one movement rendered both ways.
        assert _fresh_movement(fast) == _fresh_movement(standard)
        assert without_length(fast) == without_length(standard)
    else:  # errors, reads and replays of the same Idempotency-Key: the same bytes
        assert fast.headers.raw == standard.headers.raw
        assert fast.content == standard.content


async def test_a_fresh_answer_is_rendered_as_fastapi_renders_it(loyalty: Loyalty) -> None:
    """A fresh movement is rendered by each resolution; its replay by the other one is the
    stored result rendered again, so the first answer and the replay must be the same
    bytes whichever resolution answered first."""
    headers = {"Content-Type": JSON, "Authorization": f"Bearer {loyalty.tokens['user']}",
               "X-Request-Id": "equivalence"}
    for route, first, then, key in (
            (route, first, then, f"{route.path}-{key}")
            for route in FAST_ROUTES if _method(route) == "POST"
            for first, then, key in ((loyalty.fast, loyalty.standard, "fast-first"),
                                     (loyalty.standard, loyalty.fast, "standard-first"))):
        good = VALID_BODIES[_body_model(route) or MovementIn]
        sent = {**headers, "Idempotency-Key": key}
        a = await first.post(route.path, headers=sent, content=good)
        b = await then.post(route.path, headers=sent, content=good)
        assert a.status_code == (route.status_code or 200)
        assert (a.status_code, a.headers.raw, a.content) == (b.status_code, b.headers.raw,
                                                             b.content)
        assert a.headers["cache-control"] == "no-store"
        assert a.headers["pragma"] == "no-cache"


def test_every_fast_route_is_covered() -> None:
    """The table holds only fast routes, each with cases; no other route is fast."""
    assert {(r.path, _method(r)) for r in FAST_ROUTES} == {
        ("/loyalty/me", "GET"), ("/loyalty/me/withdrawals", "POST"),
        ("/loyalty", "POST"), ("/loyalty/{uuid}", "GET")}
    assert all(isinstance(r, FastRoute) for r in loyalty_http.hot_router.routes)
    assert not any(isinstance(r, FastRoute) for r in loyalty_http.router.routes)
    for route in FAST_ROUTES:
        model = _body_model(route)
        assert model is None or model in VALID_BODIES, route.path


def test_a_declaration_the_plan_cannot_serve_is_refused() -> None:
    """A fast route is served by its plan or not declared at all."""
    async def wants_the_request(request: Request) -> dict[str, str]:
        return {}

    with pytest.raises(TypeError, match="a fast route"):
        FastRoute("/x", wants_the_request, methods=["GET"],
                  response_class=PrivateJSONResponse)
    with pytest.raises(TypeError, match="PrivateJSONResponse"):
        FastRoute("/x", _plain_endpoint, methods=["GET"])
    assert isinstance(APIRoute("/x", _plain_endpoint, methods=["GET"]), APIRoute)


async def _plain_endpoint() -> dict[str, str]:
    return {}
