"""Tokens as a client sees them: JWKS, claims, uniqueness, forgeries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.e2e.e2e_helpers import Api, bearer, error_code

pytestmark = pytest.mark.e2e

CLAIMS = {"iss", "sub", "uid", "iat", "exp", "jti", "sid", "token_type", "admin"}


def _segments(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    def part(segment: str) -> dict[str, Any]:
        padded = segment + "=" * (-len(segment) % 4)
        value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
        return value

    header, payload, signature = token.split(".")
    return part(header), part(payload), signature


def _jwks(api: Api) -> list[dict[str, Any]]:
    r = api.sso("GET", "/.well-known/jwks.json")
    assert r.status_code == 200, r.text
    keys: list[dict[str, Any]] = r.json()["keys"]
    assert keys
    return keys


def _verify(api: Api, token: str) -> dict[str, Any]:
    """Verify ``token`` with the published key named by its ``kid``."""
    kid = jwt.get_unverified_header(token)["kid"]
    matching = [k for k in _jwks(api) if k.get("kid") == kid]
    assert len(matching) == 1, f"kid {kid} not in the JWKS"
    jwk = jwt.PyJWK(matching[0])
    claims: dict[str, Any] = jwt.decode(token, jwk.key, algorithms=[matching[0]["alg"]],
                                        options={"verify_aud": False})
    return claims


def test_jwks_publishes_public_keys_only(api: Api) -> None:
    keys = _jwks(api)
    for key in keys:
        assert {"kid", "kty", "alg", "use"} <= set(key)
        assert key["use"] == "sig"
        # A private JWK member would leak the signing key.
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key), key
    assert len({k["kid"] for k in keys}) == len(keys)


def test_claims_of_a_registered_pair(api: Api) -> None:
    user = api.register(name="Claire Claims", birthday="1985-01-02")
    access = _verify(api, user.access)
    refresh = _verify(api, user.refresh)
    for claims, kind in ((access, "access"), (refresh, "refresh")):
        assert set(claims) >= CLAIMS, claims
        assert claims["sub"] == user.user_id
        assert claims["uid"] == user.user_id
        assert claims["token_type"] == kind
        assert claims["admin"] is False
        assert isinstance(claims["iss"], str)
        assert claims["iss"]
        assert claims["exp"] > claims["iat"]
    assert access["exp"] - access["iat"] == 15 * 60
    assert refresh["exp"] - refresh["iat"] == 10 * 24 * 3600
    assert access["sid"] == refresh["sid"]
    assert access["jti"] != refresh["jti"]
    assert access["iss"] == refresh["iss"]


def test_no_personal_data_in_tokens(api: Api) -> None:
    user = api.register(name="Pat Private", birthday="1970-07-07")
    local_part = user.email.split("@")[0]
    for token in (user.access, user.refresh):
        header, payload, _ = _segments(token)
        text = json.dumps([header, payload])
        assert "email" not in payload
        assert local_part not in text
        assert "example.com" not in text
        assert "Pat Private" not in text
        assert "1970-07-07" not in text


def test_every_token_is_unique(api: Api) -> None:
    user = api.register()
    first = api.login(user.email, user.password)
    second = api.login(user.email, user.password)
    tokens = [user.access, user.refresh, first.access, first.refresh, second.access,
              second.refresh]
    assert len(set(tokens)) == len(tokens)
    claims = [_segments(t)[1] for t in tokens]
    assert len({c["jti"] for c in claims}) == len(tokens)
    # Each login is a new session; the pair shares it.
    sids = [c["sid"] for c in claims]
    assert sids[0] == sids[1]
    assert sids[2] == sids[3]
    assert sids[4] == sids[5]
    assert len({sids[0], sids[2], sids[4]}) == 3


def test_admin_claim(api: Api, admin_token: str) -> None:
    claims = _verify(api, admin_token)
    assert claims["admin"] is True
    assert claims["token_type"] == "access"


def _forge(token: str, **changes: Any) -> str:
    header, payload, signature = _segments(token)
    payload.update(changes)

    def enc(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{enc(header)}.{enc(payload)}.{signature}"


def _hs256(payload: dict[str, Any], kid: str, secret: bytes) -> str:
    """An HMAC token keyed with public material (PyJWT refuses to build one)."""

    def enc(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (enc(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
                     + "." + enc(json.dumps(payload).encode()))
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{enc(mac)}"


def test_forged_tokens_are_refused(api: Api) -> None:
    user = api.user()
    header, payload, _ = _segments(user.access)
    stranger = ed25519.Ed25519PrivateKey.generate()
    forgeries = {
        "tampered admin claim": _forge(user.access, admin=True),
        "tampered subject": _forge(user.access, sub="00000000-0000-0000-0000-000000000000"),
        "alg none": jwt.encode(payload, "", algorithm="none", headers={"kid": header["kid"]}),
        "foreign key, our kid": jwt.encode(payload, stranger, algorithm="EdDSA",
                                           headers={"kid": header["kid"]}),
        "foreign key, no kid": jwt.encode(payload, stranger, algorithm="EdDSA"),
        "unknown kid": jwt.encode(payload, stranger, algorithm="EdDSA",
                                  headers={"kid": "not-ours"}),
        "hs256 with the public key as secret": _hs256(
            payload, header["kid"], _jwks(api)[0]["x"].encode()),
        "truncated signature": user.access[:-8],
    }
    for name, token in forgeries.items():
        r = api.loy("GET", "/loyalty/me", headers=bearer(token))
        assert r.status_code == 401, (name, r.text)
        assert error_code(r) == "invalid_token", name
        r = api.sso("GET", "/auth/info", headers=bearer(token))
        assert r.status_code == 401, (name, r.text)
        assert error_code(r) == "invalid_token", name
    # The genuine token still works.
    r = api.loy("GET", "/loyalty/me", headers=user.auth)
    assert r.status_code == 200, r.text
