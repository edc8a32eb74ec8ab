"""sso's configuration section (``sso:`` in the YAML file, ``AUTHLOYALTY_SSO__*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from authloyalty.platform.settings import DatabaseSettings, RequestHeaderLimits, Section


class Argon2Settings(Section):
    """Argon2id cost parameters (OWASP: m=19 MiB, t=2, p=1)."""

    time_cost: int = Field(default=2, ge=1)
    memory_kib: int = Field(default=19456, ge=8)
    parallelism: int = Field(default=1, ge=1)
    # How many hashes this process computes at once; the rest wait their turn. More than the
    # cores can run at once makes each hash slower (Argon2 is memory-hard: concurrent hashes
    # evict each other's memory from the caches) without making more of them per second.
    threads: int | None = Field(default=None, ge=1, le=256)
    # How many nice levels below the process's other threads the hashing threads run (Linux,
    # where niceness is per thread). Hashing is the one long CPU-bound job of an sso process:
    # under a burst of logins the event loop (every other request) and the event relay's
    # threads go first, and the hashes use the rest of the CPU. 0: the same priority.
    nice: int = Field(default=5, ge=0, le=19)


class ThrottleSettings(Section):
    """Failed-login throttling; counts only failures inside the sliding window."""

    enabled: bool = True
    window_seconds: int = Field(default=900, ge=1)
    max_failures_per_email: int = Field(default=5, ge=1)
    max_failures_per_client: int = Field(default=100, ge=1)


class GrpcClientSettings(Section):
    """A service allowed to call sso's ``GetUser`` for any user, with its id and secret.

    sso keeps only the SHA-256 of the secret: the secret is random (32 bytes or more), so a
    fast hash is enough, and the configuration file holds nothing that lets anyone call.
    """

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    secret_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class SsoSettings(Section):
    """Settings of the sso service."""

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    grpc_port: int = Field(default=44044, ge=0, le=65535)
    database: DatabaseSettings = DatabaseSettings()
    issuer: str = "authloyalty-sso"
    access_token_ttl_seconds: int = Field(default=900, ge=1)
    refresh_token_ttl_seconds: int = Field(default=864000, ge=1)
    # A spent refresh token presented again within this many seconds is refused without
    # ending the session (covers clients that retry a lost response). 0 = off.
    refresh_reuse_grace_seconds: int = Field(default=0, ge=0, le=60)
    signing_algorithm: Literal["EdDSA", "ES256", "RS256"] = "EdDSA"
    # Directory of PEM private keys; the newest file signs, all are published in the JWKS.
    signing_keys_dir: Path | None = None
    # How often sso rereads signing_keys_dir (rotation without restart).
    keys_reload_seconds: float = Field(default=30.0, gt=0)
    password_min_length: int = Field(default=8, ge=1, le=128)
    argon2: Argon2Settings = Argon2Settings()
    login_throttle: ThrottleSettings = ThrottleSettings()
    # Client addresses allowed to set X-Forwarded-For (the gateway).
    trusted_proxies: list[str] = []
    request_headers: RequestHeaderLimits = RequestHeaderLimits()
    # Services that may read any user over gRPC (GetUser) with HTTP Basic client credentials.
    grpc_clients: list[GrpcClientSettings] = []
    # A deleted user can be restored for this long; then the maintenance jobs erase the
    # personal data (fractional: a test may keep them for seconds; at most a century).
    deletion_retention_days: float = Field(default=365.0, gt=0, le=36500)
