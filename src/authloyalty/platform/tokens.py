"""JWT signing keys, the JWKS, and token issue/verification shared by both services."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol
from uuid import UUID, uuid4

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from authloyalty.platform.errors import InvalidToken
from authloyalty.platform.files import private_dir, warn_if_exposed

TokenType = Literal["access", "refresh"]
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey

_REQUIRED_CLAIMS = ["iss", "sub", "iat", "exp", "jti", "sid", "token_type"]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _algorithm_of(key: PrivateKey | PublicKey) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if key.curve.name != "secp256r1":
            raise ValueError(f"unsupported EC curve {key.curve.name}; use P-256")
        return "ES256"
    return "RS256"


def public_jwk(key: PublicKey) -> dict[str, Any]:
    """The public key as a JWK with ``kid`` (RFC 7638 thumbprint), ``alg`` and ``use``."""
    alg = _algorithm_of(key)
    members: tuple[str, ...]
    if isinstance(key, ed25519.Ed25519PublicKey):
        jwk = OKPAlgorithm.to_jwk(key, as_dict=True)
        members = ("crv", "kty", "x")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(key, as_dict=True)
        members = ("crv", "kty", "x", "y")
    else:
        jwk = RSAAlgorithm.to_jwk(key, as_dict=True)
        members = ("e", "kty", "n")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    jwk.update(kid=_b64url(hashlib.sha256(canonical.encode()).digest()), alg=alg, use="sig")
    return dict(jwk)


class UnknownSigningKey(InvalidToken):
    """The token names a ``kid`` we do not (yet) know."""

    def __init__(self, kid: str) -> None:
        super().__init__("token signed by an unknown key")
        self.kid = kid


@dataclass(frozen=True)
class VerificationKey:
    """A public key a token may be signed with."""

    kid: str
    algorithm: str
    key: PublicKey


@dataclass(frozen=True)
class SigningKey:
    """A private key with its public half's JWK identity."""

    kid: str
    algorithm: str
    key: PrivateKey

    @classmethod
    def from_private(cls, key: PrivateKey) -> SigningKey:
        """Wrap a private key, deriving its ``kid`` and algorithm."""
        jwk = public_jwk(key.public_key())
        return cls(kid=jwk["kid"], algorithm=jwk["alg"], key=key)


def generate_private_key(algorithm: str) -> PrivateKey:
    """A fresh private key for ``algorithm`` (EdDSA → Ed25519, ES256 → P-256, RS256 → RSA 3072)."""
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise ValueError(f"unsupported signing algorithm {algorithm!r}")


class KeyProvider(Protocol):
    """Finds the public key for a ``kid``."""

    def verification_key(self, kid: str) -> VerificationKey | None: ...


class KeyStore:
    """The signing keys of sso: the newest signs, every key verifies and is published."""

    def __init__(self, keys: Iterable[SigningKey], directory: Path | None = None) -> None:
        self._directory = directory
        self._set(list(keys))

    def _set(self, keys: list[SigningKey]) -> None:
        if not keys:
            raise ValueError("no signing keys")
        # Both maps are replaced at once, so readers never see half a rotation.
        self._keys = keys
        self._by_kid = {
            k.kid: VerificationKey(k.kid, k.algorithm, k.key.public_key()) for k in keys
        }

    def reload(self) -> bool:
        """Reread the key directory (rotation without restart); True if the set changed."""
        if self._directory is None:
            return False
        fresh = _read_dir(self._directory)
        if [k.kid for k in fresh] == [k.kid for k in self._keys]:
            return False
        self._set(fresh)
        return True

    @property
    def active(self) -> SigningKey:
        """The key new tokens are signed with."""
        return self._keys[-1]

    def verification_key(self, kid: str) -> VerificationKey | None:
        """Public key for ``kid``, if it is one of ours."""
        return self._by_kid.get(kid)

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set document."""
        return {"keys": [public_jwk(k.key.public_key()) for k in self._keys]}

    @classmethod
    def load_dir(cls, directory: Path) -> KeyStore:
        """Load every ``*.pem`` in ``directory``; file names sort oldest first."""
        return cls(_read_dir(directory), directory)

    @classmethod
    def load_or_create(cls, directory: Path, algorithm: str) -> KeyStore:
        """Load keys from ``directory``, generating the first one if there is none."""
        private_dir(directory)
        if not any(directory.glob("*.pem")):
            write_new_key(directory, algorithm)
        return cls.load_dir(directory)


def _read_dir(directory: Path) -> list[SigningKey]:
    files = sorted(directory.glob("*.pem"))
    if not files:
        raise FileNotFoundError(f"no *.pem signing keys in {directory}")
    warn_if_exposed([directory, *files])
    keys = []
    for path in files:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
                          | rsa.RSAPrivateKey):
            raise ValueError(f"{path}: unsupported key type")
        keys.append(SigningKey.from_private(loaded))
    return keys


def write_new_key(directory: Path, algorithm: str) -> Path:
    """Generate a key into ``directory`` (mode 0600); being newest, it becomes the signer."""
    private_dir(directory)
    key = generate_private_key(algorithm)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    path = directory / f"{stamp}-{algorithm.lower()}.pem"
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return path


@dataclass(frozen=True)
class TokenClaims:
    """The verified content of a token."""

    user_id: UUID
    session_id: UUID
    token_id: UUID
    token_type: TokenType
    admin: bool
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class TokenPair:
    """An access and a refresh token of one session."""

    access_token: str
    refresh_token: str
    refresh_token_id: UUID
    access_expires_at: datetime
    refresh_expires_at: datetime


class TokenIssuer:
    """Signs access/refresh tokens with the active key."""

    def __init__(self, keys: KeyStore, issuer: str, access_ttl: int, refresh_ttl: int) -> None:
        self._keys = keys
        self._issuer = issuer
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl

    def _sign(self, claims: Mapping[str, Any]) -> str:
        key = self._keys.active
        return jwt.encode(dict(claims), key.key, algorithm=key.algorithm,
                          headers={"kid": key.kid})

    def issue_pair(
        self, user_id: UUID, session_id: UUID, admin: bool, now: datetime,
        refresh_token_id: UUID | None = None,
    ) -> TokenPair:
        """Sign a new pair for ``session_id``; the refresh token's ``jti`` may be given."""
        refresh_id = refresh_token_id or uuid4()
        iat = int(now.timestamp())
        base = {"iss": self._issuer, "sub": str(user_id), "uid": str(user_id), "iat": iat,
                "sid": str(session_id), "admin": admin}
        access_exp = iat + self.access_ttl
        refresh_exp = iat + self.refresh_ttl
        access = self._sign(base | {"exp": access_exp, "jti": str(uuid4()),
                                    "token_type": "access"})
        refresh = self._sign(base | {"exp": refresh_exp, "jti": str(refresh_id),
                                     "token_type": "refresh"})
        return TokenPair(
            access_token=access,
            refresh_token=refresh,
            refresh_token_id=refresh_id,
            access_expires_at=datetime.fromtimestamp(access_exp, UTC),
            refresh_expires_at=datetime.fromtimestamp(refresh_exp, UTC),
        )


# A token may live this much longer than its type's configured TTL (exp - iat is exact when
# we sign, so this only tolerates a TTL lowered by less than a minute since the token was made).
LIFETIME_LEEWAY_SECONDS = 60


class TokenVerifier:
    """Checks signature (algorithm pinned by the key), issuer, expiry, claims, type and, given
    ``max_lifetimes`` (seconds per token type), that ``exp - iat`` is not longer than we issue:
    a token made with our key but an ``exp`` years ahead is refused."""

    def __init__(self, keys: KeyProvider, issuer: str, leeway_seconds: int = 0,
                 max_lifetimes: Mapping[str, int] | None = None) -> None:
        self._keys = keys
        self._issuer = issuer
        self._leeway = leeway_seconds
        self._max_lifetimes = None if max_lifetimes is None else {
            kind: seconds + leeway_seconds + LIFETIME_LEEWAY_SECONDS
            for kind, seconds in max_lifetimes.items()}

    def verify(self, token: str, expected_type: TokenType | None = None) -> TokenClaims:
        """Return the claims of a valid token or raise :class:`InvalidToken`."""
        header = _unverified_header(token)
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidToken("token has no key id")
        key = self._keys.verification_key(kid)
        if key is None:
            raise UnknownSigningKey(kid)
        try:
            payload = jwt.decode(
                token, key.key, algorithms=[key.algorithm], issuer=self._issuer,
                leeway=self._leeway, options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("invalid token") from exc
        claims = _claims(payload)
        if expected_type is not None and claims.token_type != expected_type:
            raise InvalidToken(f"{expected_type} token required, got {claims.token_type}")
        if self._max_lifetimes is not None:
            longest = self._max_lifetimes.get(claims.token_type, 0)
            if (claims.expires_at - claims.issued_at).total_seconds() > longest:
                raise InvalidToken("token lifetime exceeds the maximum")
        return claims


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, to find the key: just the first segment decoded (``jwt.decode`` checks
    the whole token afterwards). ``jwt.get_unverified_header`` decoded all three segments, a
    sixth of a verification."""
    first, dot, _ = token.partition(".")
    try:
        if not dot:
            raise ValueError("not a JWS")
        header = json.loads(base64.urlsafe_b64decode(first + "=" * (-len(first) % 4)))
    except (ValueError, TypeError) as exc:  # binascii.Error and JSONDecodeError among them
        raise InvalidToken("malformed token") from exc
    if not isinstance(header, dict):
        raise InvalidToken("malformed token")
    return header


def _claims(payload: Mapping[str, Any]) -> TokenClaims:
    token_type = payload["token_type"]
    if token_type not in ("access", "refresh"):
        raise InvalidToken("unknown token_type")
    try:
        return TokenClaims(
            user_id=UUID(str(payload["sub"])),
            session_id=UUID(str(payload["sid"])),
            token_id=UUID(str(payload["jti"])),
            token_type=token_type,
            admin=payload.get("admin") is True,
            issued_at=datetime.fromtimestamp(int(payload["iat"]), UTC),
            expires_at=datetime.fromtimestamp(int(payload["exp"]), UTC),
        )
    except (ValueError, TypeError) as exc:
        raise InvalidToken("malformed claims") from exc

