"""Tokens living longer than their type's TTL (plus a minute) are refused, by the verifier
and by loyalty wired on its own (keys from a JWKS, TTLs from its own config)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import jwt
import pytest

from authloyalty.bootstrap import build_loyalty
from authloyalty.platform.errors import InvalidToken
from authloyalty.platform.tokens import (
    LIFETIME_LEEWAY_SECONDS,
    KeyStore,
    SigningKey,
    TokenVerifier,
    generate_private_key,
)
from authloyalty.settings import load_settings

KEYS = KeyStore([SigningKey.from_private(generate_private_key("EdDSA"))])


def token(lifetime: int, token_type: str = "access") -> str:
    """A token of ours (issuer ``iss``) whose ``exp - iat`` is ``lifetime``."""
    iat = int(datetime.now(UTC).timestamp())
    claims: dict[str, Any] = {"iss": "iss", "sub": str(uuid4()), "iat": iat,
                              "exp": iat + lifetime, "jti": str(uuid4()),
                              "sid": str(uuid4()), "token_type": token_type}
    return jwt.encode(claims, KEYS.active.key, algorithm=KEYS.active.algorithm,
                      headers={"kid": KEYS.active.kid})


def test_the_verifier_refuses_lifetimes_over_the_maximum_of_the_type() -> None:
    verifier = TokenVerifier(KEYS, "iss", max_lifetimes={"access": 900, "refresh": 3600})
    verifier.verify(token(900 + LIFETIME_LEEWAY_SECONDS))
    verifier.verify(token(3600, "refresh"))
    for too_long, token_type in ((900 + LIFETIME_LEEWAY_SECONDS + 1, "access"),
                                 (10 * 365 * 86400, "access"), (3601 + 60, "refresh")):
        with pytest.raises(InvalidToken, match="lifetime"):
            verifier.verify(token(too_long, token_type))


def test_a_type_without_a_maximum_is_refused() -> None:
    verifier = TokenVerifier(KEYS, "iss", max_lifetimes={"access": 900})
    with pytest.raises(InvalidToken, match="lifetime"):
        verifier.verify(token(60, "refresh"))


def test_loyaltys_maximum_comes_from_its_own_setting_or_from_sso() -> None:
    assert load_settings(None).loyalty_token_lifetimes["access"] == 900
    assert load_settings(None, sso={"access_token_ttl_seconds": 300}
                         ).loyalty_token_lifetimes["access"] == 300
    assert load_settings(None, sso={"access_token_ttl_seconds": 300},
                         loyalty={"max_access_token_ttl_seconds": 1200}
                         ).loyalty_token_lifetimes["access"] == 1200


async def test_loyalty_refuses_an_access_token_living_too_long(tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path, sso={"issuer": "iss"})
    loyalty = build_loyalty(settings, KEYS)
    try:
        principal = await loyalty.authenticator.principal(token(900))
        assert principal.is_admin is False
        with pytest.raises(InvalidToken, match="lifetime"):
            await loyalty.authenticator.principal(token(10 * 365 * 86400))
    finally:
        await loyalty.dispose()
