"""Token signing, verification and the JWKS."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import jwt
import pytest

from authloyalty.platform.errors import InvalidToken
from authloyalty.platform.tokens import (
    CachingVerifier,
    KeyStore,
    SigningKey,
    TokenIssuer,
    TokenVerifier,
    generate_private_key,
    write_new_key,
)


def _payload(token: str) -> dict[str, object]:
    part = token.split(".")[1]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256", "RS256"])
def test_pair_verifies_and_carries_the_specified_claims(algorithm: str) -> None:
    keys = KeyStore([SigningKey.from_private(generate_private_key(algorithm))])
    pair = TokenIssuer(keys, "iss-x", 900, 3600).issue_pair(uuid4(), uuid4(), True,
                                                            datetime.now(UTC))
    verifier = TokenVerifier(keys, "iss-x")
    access = verifier.verify(pair.access_token, "access")
    refresh = verifier.verify(pair.refresh_token, "refresh")
    assert access.session_id == refresh.session_id
    assert access.token_id != refresh.token_id
    assert access.admin is True
    claims = _payload(pair.access_token)
    assert set(claims) == {"iss", "sub", "uid", "iat", "exp", "jti", "sid", "token_type", "admin"}
    assert jwt.get_unverified_header(pair.access_token)["kid"] == keys.active.kid
    assert keys.jwks()["keys"][0]["alg"] == algorithm


def test_wrong_type_expired_foreign_and_tampered_tokens_are_refused() -> None:
    keys = KeyStore([SigningKey.from_private(generate_private_key("EdDSA"))])
    issuer = TokenIssuer(keys, "iss", 1, 3600)
    pair = issuer.issue_pair(uuid4(), uuid4(), False, datetime.now(UTC))
    verifier = TokenVerifier(keys, "iss")
    with pytest.raises(InvalidToken, match="access token required"):
        verifier.verify(pair.refresh_token, "access")
    with pytest.raises(InvalidToken):
        TokenVerifier(keys, "other-issuer").verify(pair.access_token)
    other = KeyStore([SigningKey.from_private(generate_private_key("EdDSA"))])
    with pytest.raises(InvalidToken, match="unknown key"):
        TokenVerifier(other, "iss").verify(pair.access_token)
    head, _body, sig = pair.access_token.split(".")
    forged = base64.urlsafe_b64encode(json.dumps(
        {**_payload(pair.access_token), "admin": True}).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidToken):
        verifier.verify(f"{head}.{forged}.{sig}")
    with pytest.raises(InvalidToken):
        verifier.verify("not.a.token")
    time.sleep(2.1)
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(pair.access_token)


def test_hs256_token_with_our_kid_is_refused() -> None:
    keys = KeyStore([SigningKey.from_private(generate_private_key("EdDSA"))])
    now = int(time.time())
    token = jwt.encode({"iss": "iss", "sub": str(uuid4()), "iat": now, "exp": now + 60,
                        "jti": str(uuid4()), "sid": str(uuid4()), "token_type": "access"},
                       "a-shared-secret-of-at-least-32-bytes!", algorithm="HS256",
                       headers={"kid": keys.active.kid})
    with pytest.raises(InvalidToken):
        TokenVerifier(keys, "iss").verify(token)


def test_rotation_newest_key_signs_old_tokens_still_verify(tmp_path: Path) -> None:
    write_new_key(tmp_path, "EdDSA")
    old_keys = KeyStore.load_dir(tmp_path)
    old_token = TokenIssuer(old_keys, "iss", 60, 60).issue_pair(
        uuid4(), uuid4(), False, datetime.now(UTC)).access_token
    write_new_key(tmp_path, "ES256")
    keys = KeyStore.load_dir(tmp_path)
    assert keys.active.algorithm == "ES256"
    assert len(keys.jwks()["keys"]) == 2
    TokenVerifier(keys, "iss").verify(old_token, "access")
    assert oct(next(tmp_path.glob("*.pem")).stat().st_mode & 0o777) == "0o600"


def test_reload_picks_up_a_new_key_and_drops_a_retired_one(tmp_path: Path) -> None:
    old = write_new_key(tmp_path, "EdDSA")
    keys = KeyStore.load_dir(tmp_path)
    old_kid = keys.active.kid
    assert not keys.reload()
    write_new_key(tmp_path, "EdDSA")
    assert keys.reload()
    assert keys.active.kid != old_kid
    assert keys.verification_key(old_kid) is not None
    old.unlink()
    assert keys.reload()
    assert keys.verification_key(old_kid) is None
    assert [k["kid"] for k in keys.jwks()["keys"]] == [keys.active.kid]


def test_caching_verifier_remembers_successes_only_and_honours_expiry_and_type() -> None:
    keys = KeyStore([SigningKey.from_private(generate_private_key("EdDSA"))])
    pair = TokenIssuer(keys, "iss", 1, 3600).issue_pair(uuid4(), uuid4(), False,
                                                       datetime.now(UTC))
    cached = CachingVerifier(TokenVerifier(keys, "iss"))
    first = cached.verify(pair.access_token, "access")
    assert cached.verify(pair.access_token, "access") is first
    with pytest.raises(InvalidToken, match="refresh token required"):
        cached.verify(pair.access_token, "refresh")
    with pytest.raises(InvalidToken):
        cached.verify(pair.access_token[:-3] + "AAA", "access")
    time.sleep(2.1)
    with pytest.raises(InvalidToken, match="expired"):
        cached.verify(pair.access_token, "access")
