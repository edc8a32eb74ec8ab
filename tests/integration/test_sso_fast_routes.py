"""sso's fast routes (``POST /auth/refresh``, ``POST /auth/logout``) answer exactly as FastAPI's
own resolution of the same declaration.

Each case is asked of both resolutions (``standard_resolution`` and the app as served), each
with tokens of its own: a refresh token can be spent once, so the two cannot share one. Answers
must be the same bytes — status, headers (``Cache-Control: no-store`` and ``Pragma`` included)
and body, error envelopes and field lists included — except a fresh pair of tokens, which must
differ only in the tokens themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from authloyalty.bootstrap import sso_app
from authloyalty.platform.http.fast import FastRoute
from authloyalty.sso import http as sso_http
from tests.integration.conftest import WithUsers
from tests.integration.equivalence import (
    JSON,
    STREAMED_OVERSIZED,
    body_shapes,
    both_resolutions,
    streamed,
    without_length,
)

FAST_ROUTES = [r for r in sso_http.hot_router.routes if isinstance(r, FastRoute)]
# In a case's body, each stands for a token made for that one request.
REFRESH, ACCESS, SPENT, ENDED = "@refresh", "@access", "@spent", "@ended"


@dataclass(frozen=True)
class Case:
    """One request to a fast route."""

    name: str
    route: FastRoute
    headers: dict[str, str]
    content: bytes | None
    streamed: bool = False


def _cases(route: FastRoute) -> Iterator[Case]:
    def token(value: str) -> bytes:
        return f'{{"token": "{value}"}}'.encode()

    for name, value in (("a fresh refresh token", REFRESH), ("an access token", ACCESS),
                        ("a spent refresh token", SPENT), ("an ended session's token", ENDED),
                        ("garbage", "nope"), ("empty", ""), ("three dots", ".."),
                        ("huge", "x" * 5000), ("control characters", "a\\u0000b\\nc")):
        yield Case(f"token: {name}", route, JSON, token(value))
    bodies: list[tuple[str, dict[str, str], bytes | None]] = [
        *body_shapes(token(REFRESH)),
        ("token not a string", JSON, b'{"token": 12}'),
        ("token null", JSON, b'{"token": null}'),
        ("malformed JSON", JSON, b'{"token": "x",'),
        ("invalid UTF-8", JSON, b'{"token": "\xff"}'),
        ("oversized", JSON, b'{"token": "' + b"t" * 70_000 + b'"}'),
        ("unknown field", JSON, b'{"token": "' + REFRESH.encode() + b'", "extra": true}'),
        ("form content type", {"Content-Type": "application/x-www-form-urlencoded"},
         b"token=x"),
    ]
    for name, headers, content in bodies:
        yield Case(name, route, headers, content)
    yield Case("oversized, streamed", route, JSON, STREAMED_OVERSIZED, streamed=True)


CASES = [case for route in FAST_ROUTES for case in _cases(route)]


def _id(case: Case) -> str:
    return f"{case.route.path}: {case.name}"


@dataclass
class Sso:
    """Both resolutions of one sso app, and a way to open sessions."""

    fast: httpx.AsyncClient
    standard: httpx.AsyncClient
    users: WithUsers

    async def tokens(self, placeholder: str) -> str:
        """A token for one request: a new session's, spent or ended as asked."""
        service = self.users.system.sso.service
        issued = await service.login("user@example.com", "long enough", "127.0.0.1")
        refresh = issued.tokens.refresh_token
        if placeholder == ACCESS:
            return issued.tokens.access_token
        if placeholder == SPENT:
            await service.refresh(refresh)
        elif placeholder == ENDED:
            await service.logout(refresh)
        return refresh


@pytest.fixture
async def sso(with_users: WithUsers) -> AsyncIterator[Sso]:
    async with both_resolutions(sso_app(with_users.system.sso), "http://sso") as (fast, standard):
        yield Sso(fast, standard, with_users)


async def _send(client: httpx.AsyncClient, case: Case, sso: Sso) -> httpx.Response:
    # The client's own request id: with the access log on, each answer would carry a random one.
    headers = {"X-Request-Id": "equivalence", **case.headers}
    content: Any = case.content
    for placeholder in (REFRESH, ACCESS, SPENT, ENDED):
        if content is not None and placeholder.encode() in content:
            content = content.replace(placeholder.encode(),
                                      (await sso.tokens(placeholder)).encode())
    if case.streamed and content is not None:
        content = streamed(content)
    (method,) = case.route.methods or set()
    return await client.request(method, case.route.path, headers=headers, content=content)


def _new_pair(reply: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = reply.json()
    return {**body, "access_token": None, "refresh_token": None}


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
async def test_fast_and_standard_resolution_answer_alike(sso: Sso, case: Case) -> None:
    standard = await _send(sso.standard, case, sso)
    fast = await _send(sso.fast, case, sso)
    assert fast.status_code == standard.status_code, (fast.text, standard.text)
    if "access_token" in standard.text and standard.is_success:
        # Two new pairs: the same answer but for the tokens (and perhaps their length).
        assert _new_pair(fast) == _new_pair(standard)
        assert fast.json()["refresh_token"] != standard.json()["refresh_token"]
        assert without_length(fast) == without_length(standard)
        assert fast.headers["cache-control"] == "no-store"
    else:
        assert fast.headers.raw == standard.headers.raw
        assert fast.content == standard.content


async def test_a_refresh_through_the_lane_rotates_the_session(sso: Sso) -> None:
    """The lane's answer is a working pair: the new refresh token refreshes again, the spent
    one is refused as reused and ends the session, and logout through the lane ends it."""
    first = await sso.tokens(REFRESH)
    rotated = await sso.fast.post("/auth/refresh", json={"token": first})
    assert rotated.status_code == 200, rotated.text
    again = await sso.fast.post("/auth/refresh", json={"token": rotated.json()["refresh_token"]})
    assert again.status_code == 200, again.text
    reused = await sso.fast.post("/auth/refresh", json={"token": first})
    assert reused.status_code == 401, reused.text
    ended = await sso.fast.post("/auth/refresh", json={"token": again.json()["refresh_token"]})
    assert ended.status_code == 401, ended.text  # the reuse ended the whole session

    other = await sso.tokens(ACCESS)
    assert (await sso.fast.post("/auth/logout", json={"token": other})).status_code == 200
    info = await sso.fast.get("/auth/info", headers={"Authorization": f"Bearer {other}"})
    assert info.status_code == 401, info.text


def test_every_fast_route_is_covered() -> None:
    """Exactly these routes are fast in sso, and the cases above are generated for each."""
    assert {(r.path, *(r.methods or ())) for r in FAST_ROUTES} == {
        ("/auth/refresh", "POST"), ("/auth/logout", "POST")}
    assert not any(isinstance(r, FastRoute) for r in sso_http.router.routes)
    assert {c.route.path for c in CASES} == {"/auth/refresh", "/auth/logout"}
