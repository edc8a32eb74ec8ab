"""Token signing, verification and the JWKS."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import jwt
import pytest

from authloyalty.loyalty.revocations import (
    Authenticator,
    RevocationsCatchingUp,
    RevokedSessions,
)
from authloyalty.platform.errors import InvalidToken
from authloyalty.platform.tokens import (
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


async def test_authenticator_remembers_successes_only_and_honours_expiry_type_and_revocation(
        ) -> None:
    keys = KeyStore([SigningKey.from_private(generate_private_key("EdDSA"))])
    session = uuid4()
    pair = TokenIssuer(keys, "iss", 1, 3600).issue_pair(uuid4(), session, False,
                                                       datetime.now(UTC))
    revoked = RevokedSessions()
    auth = Authenticator(TokenVerifier(keys, "iss"), revoked)
    assert auth.known_principal(pair.access_token) is None  # never verified yet
    first = await auth.principal(pair.access_token)
    assert auth.known_principal(pair.access_token) is first
    assert await auth.principal(pair.access_token) is first
    with pytest.raises(InvalidToken, match="access token required"):
        await auth.principal(pair.refresh_token)
    assert auth.known_principal(pair.refresh_token) is None  # failures are not remembered
    forged = pair.access_token[:-3] + "AAA"
    with pytest.raises(InvalidToken):
        await auth.principal(forged)
    assert auth.known_principal(forged) is None
    revoked.add(session, datetime.now(UTC))
    with pytest.raises(InvalidToken, match="session has ended"):
        auth.known_principal(pair.access_token)  # remembered, yet refused once revoked
    with pytest.raises(InvalidToken, match="session has ended"):
        await auth.principal(pair.access_token)
    revoked.prune(datetime.now(UTC) + timedelta(days=1))
    await asyncio.sleep(2.1)
    assert auth.known_principal(pair.access_token) is None  # expired: not a hit
    with pytest.raises(InvalidToken, match="expired"):
        await auth.principal(pair.access_token)


async def test_nobody_is_authenticated_while_revocations_may_be_missing() -> None:
    keys = KeyStore([SigningKey.from_private(generate_private_key("EdDSA"))])
    pair = TokenIssuer(keys, "iss", 60, 3600).issue_pair(uuid4(), uuid4(), False,
                                                        datetime.now(UTC))
    revoked = RevokedSessions(complete=False)
    auth = Authenticator(TokenVerifier(keys, "iss"), revoked)
    with pytest.raises(RevocationsCatchingUp):
        await auth.principal(pair.access_token)
    revoked.set_complete(True)
    principal = await auth.principal(pair.access_token)
    revoked.set_complete(False)  # a failed revocation reader is being replaced
    with pytest.raises(RevocationsCatchingUp) as caught:
        auth.known_principal(pair.access_token)  # remembered, yet not served
    assert (caught.value.code, caught.value.retry_after) == ("revocations_catching_up", 1)
    revoked.set_complete(True)
    assert auth.known_principal(pair.access_token) is principal


@pytest.mark.parametrize("token", ["", "no-dots", "!!!.e30.sig", "W10.e30.sig", "bnVsbA.e30.sig",
                                   "eyJraWQiOg.e30.sig"])
def test_a_token_whose_header_is_not_a_json_object_is_malformed(token: str) -> None:
    keys = KeyStore([SigningKey.from_private(generate_private_key("EdDSA"))])
    with pytest.raises(InvalidToken, match="malformed token"):
        TokenVerifier(keys, "iss").verify(token)


def test_a_header_without_a_key_id_is_refused_before_any_key_is_looked_up() -> None:
    keys = KeyStore([SigningKey.from_private(generate_private_key("EdDSA"))])
    with pytest.raises(InvalidToken, match="no key id"):
        TokenVerifier(keys, "iss").verify("e30.e30.sig")  # header {}
