"""A token signed with our own key but living longer than we issue is refused (item 10 of the
hardening issue), by sso and by loyalty: ``exp - iat`` may exceed the configured TTL of the
token's type by a minute at most. The tokens are made with the server's key, read from its
data dir, as someone holding a leaked key (or a bug in an issuer) would make them."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from authloyalty.platform.tokens import PrivateKey, SigningKey
from tests.e2e.e2e_helpers import Account, Api, Server, bearer

pytestmark = pytest.mark.e2e

ACCESS_TTL = 900  # the defaults of sso.access_token_ttl_seconds / refresh_token_ttl_seconds
REFRESH_TTL = 864000
TEN_YEARS = 10 * 365 * 86400


def server_key(target: Server) -> SigningKey:
    """The key the server signs with (the newest file of its keys dir)."""
    newest = sorted((target.data_dir / "keys").glob("*.pem"))[-1]
    key = serialization.load_pem_private_key(newest.read_bytes(), password=None)
    assert not isinstance(key, bytes)
    private: PrivateKey = key  # type: ignore[assignment]
    return SigningKey.from_private(private)


def resigned(target: Server, token: str, lifetime: int) -> str:
    """``token``'s claims, signed again by the server's key with ``exp = iat + lifetime``."""
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    claims["exp"] = claims["iat"] + lifetime
    key = server_key(target)
    return jwt.encode(claims, key.key, algorithm=key.algorithm, headers={"kid": key.kid})


@pytest.fixture
def user(api: Api) -> Account:
    return api.user()


def test_tokens_made_as_we_make_them_are_accepted(api: Api, target: Server,
                                                  user: Account) -> None:
    # The forgery below differs from this only in its lifetime.
    token = resigned(target, user.access, ACCESS_TTL)
    assert api.sso("GET", "/auth/info", headers=bearer(token)).status_code == 200
    assert api.loy("GET", "/loyalty/me", headers=bearer(token)).status_code == 200


@pytest.mark.parametrize("lifetime", [TEN_YEARS, ACCESS_TTL + 3600])
def test_an_access_token_living_too_long_is_refused_by_both_services(
        api: Api, target: Server, user: Account, lifetime: int) -> None:
    token = resigned(target, user.access, lifetime)
    for response in (api.sso("GET", "/auth/info", headers=bearer(token)),
                     api.loy("GET", "/loyalty/me", headers=bearer(token)),
                     api.loy("GET", f"/loyalty/{user.user_id}", headers=bearer(token))):
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "invalid_token", response.text


def test_a_refresh_token_living_too_long_is_refused(api: Api, target: Server,
                                                    user: Account) -> None:
    token = resigned(target, user.refresh, REFRESH_TTL + TEN_YEARS)
    response = api.sso("POST", "/auth/refresh", json={"token": token})
    assert response.status_code == 401, response.text
    # The genuine refresh token still works: nothing was spent by the refusal.
    assert api.sso("POST", "/auth/refresh", json={"token": user.refresh}).status_code == 200
