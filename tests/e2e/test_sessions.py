"""Refresh, reuse detection and logout, seen from sso and from loyalty."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.e2e_helpers import Account, Api, bearer, error_code, no_5xx, poll

pytestmark = pytest.mark.e2e

PROPAGATION = 1.0  # docs/contract.md: "refused by sso and loyalty within 1 s"


def _refused_everywhere(api: Api, access: str) -> None:
    """``access`` is refused by sso at once and by loyalty within 1 s."""
    r = api.sso("GET", "/auth/info", headers=bearer(access))
    assert r.status_code == 401, r.text
    assert error_code(r) == "invalid_token"

    def loyalty_refuses() -> bool:
        response = api.loy("GET", "/loyalty/me", headers=bearer(access))
        assert response.status_code in (200, 401), response.text
        return response.status_code == 401

    assert poll(loyalty_refuses, PROPAGATION), "loyalty still accepts a revoked session"
    r = api.loy("GET", "/loyalty/me", headers=bearer(access))
    assert error_code(r) == "invalid_token"


def _accepted_everywhere(api: Api, access: str) -> None:
    r = api.sso("GET", "/auth/info", headers=bearer(access))
    assert r.status_code == 200, r.text
    r = api.loy("GET", "/loyalty/me", headers=bearer(access))
    assert r.status_code == 200, r.text


def _refresh(api: Api, token: str) -> httpx.Response:
    return api.sso("POST", "/auth/refresh", json={"token": token})


def test_refresh_rotates_and_reuse_ends_the_session(api: Api) -> None:
    user = api.user()
    r = _refresh(api, user.refresh)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "Success"
    assert body["user_id"] == user.user_id
    new_access, new_refresh = body["access_token"], body["refresh_token"]
    assert new_access != user.access
    assert new_refresh != user.refresh
    _accepted_everywhere(api, new_access)

    # The spent refresh token is presented again: reuse, the whole session ends.
    r = _refresh(api, user.refresh)
    assert r.status_code == 401, r.text
    assert error_code(r) == "token_reused"
    _refused_everywhere(api, new_access)
    _refused_everywhere(api, user.access)
    r = _refresh(api, new_refresh)
    assert r.status_code == 401, r.text
    assert error_code(r) in ("invalid_token", "token_reused")
    # Other sessions of the same user are not affected.
    other = api.login(user.email, user.password)
    _accepted_everywhere(api, other.access)


def test_refresh_chain_keeps_working(api: Api) -> None:
    user = api.user()
    refresh = user.refresh
    for _ in range(3):
        r = _refresh(api, refresh)
        assert r.status_code == 200, r.text
        refresh = r.json()["refresh_token"]
        access = r.json()["access_token"]
    _accepted_everywhere(api, access)
    # The original access token of the session is still valid until it expires.
    _accepted_everywhere(api, user.access)


def test_access_token_cannot_refresh(api: Api) -> None:
    user = api.register()
    r = _refresh(api, user.access)
    assert r.status_code == 401, r.text
    assert error_code(r) == "invalid_token"
    # ... and that mistake does not end the session.
    r = _refresh(api, user.refresh)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", " "])
def test_refresh_with_garbage(api: Api, token: str) -> None:
    r = _refresh(api, token)
    assert r.status_code in (401, 422), r.text
    assert error_code(r) in ("invalid_token", "validation_error")


def test_logout_with_access_token(api: Api) -> None:
    user = api.user()
    r = api.sso("POST", "/auth/logout", json={"token": user.access})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "Success"}
    _refused_everywhere(api, user.access)
    r = _refresh(api, user.refresh)
    assert r.status_code == 401, r.text
    assert error_code(r) == "invalid_token"


def test_logout_with_refresh_token(api: Api) -> None:
    user = api.user()
    r = api.sso("POST", "/auth/logout", json={"token": user.refresh})
    assert r.status_code == 200, r.text
    _refused_everywhere(api, user.access)
    r = _refresh(api, user.refresh)
    assert r.status_code == 401, r.text


def test_logout_twice(api: Api) -> None:
    user = api.register()
    r = api.sso("POST", "/auth/logout", json={"token": user.access})
    assert r.status_code == 200, r.text
    for token in (user.access, user.refresh):
        r = api.sso("POST", "/auth/logout", json={"token": token})
        assert r.status_code == 401, r.text
        assert error_code(r) == "invalid_token"


def test_logout_ends_only_that_session(api: Api) -> None:
    user = api.user()
    second = api.login(user.email, user.password)
    r = api.sso("POST", "/auth/logout", json={"token": second.access})
    assert r.status_code == 200, r.text
    _refused_everywhere(api, second.access)
    _accepted_everywhere(api, user.access)
    r = _refresh(api, user.refresh)
    assert r.status_code == 200, r.text


def test_logout_with_garbage(api: Api) -> None:
    r = api.sso("POST", "/auth/logout", json={"token": "not-a-token"})
    assert r.status_code == 401, r.text
    assert error_code(r) == "invalid_token"


def test_parallel_refreshes_of_one_token(api: Api) -> None:
    user: Account = api.user()
    n = 10
    barrier = threading.Barrier(n)
    url = f"{api.srv.sso}/auth/refresh"

    def attempt(_: int) -> httpx.Response:
        with httpx.Client(timeout=30.0, event_hooks={"response": [no_5xx]}) as client:
            barrier.wait(timeout=30)
            return client.post(url, json={"token": user.refresh})

    with ThreadPoolExecutor(max_workers=n) as pool:
        responses = list(pool.map(attempt, range(n)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [401] * (n - 1), [r.text for r in responses]
    codes = sorted(error_code(r) for r in responses if r.status_code == 401)
    assert codes == ["token_reused"] * (n - 1), codes
    winner = next(r for r in responses if r.status_code == 200).json()
    # Reuse ended the session: nothing from it works any more.
    _refused_everywhere(api, winner["access_token"])
    _refused_everywhere(api, user.access)
    r = _refresh(api, winner["refresh_token"])
    assert r.status_code == 401, r.text
