"""loyalty's configuration section (``loyalty:`` in the YAML file, ``AUTHLOYALTY_LOYALTY__*``)."""

from __future__ import annotations

from pydantic import Field

from authloyalty.platform.settings import DatabaseSettings, RequestHeaderLimits, Section


class LoyaltySettings(Section):
    """Settings of the loyalty service."""

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8001, ge=0, le=65535)
    request_headers: RequestHeaderLimits = RequestHeaderLimits()
    database: DatabaseSettings = DatabaseSettings()
    welcome_bonus: int = Field(default=100, ge=0, le=1_000_000_000)
    idempotency_ttl_hours: int = Field(default=24, ge=24)
    # On PostgreSQL, balance reads and movements (without Idempotency-Key) that arrive
    # together share one statement each: a batched SELECT, a group-committed update.
    coalesce: bool = True
    # Expected `iss` of access tokens; defaults to sso.issuer.
    token_issuer: str | None = None
    # Longest access-token lifetime (exp - iat) accepted; defaults to
    # sso.access_token_ttl_seconds (set it when loyalty's config has no sso section).
    max_access_token_ttl_seconds: int | None = Field(default=None, ge=1)
    # Where a separate loyalty process fetches sso's public keys.
    jwks_url: str | None = None
    # A key id not in the cached JWKS triggers a refetch at most this often.
    jwks_min_refresh_seconds: float = Field(default=5.0, ge=0)
    # sso's gRPC address (owner details for admins) and how long to wait for it.
    sso_grpc_target: str | None = None
    sso_grpc_deadline_seconds: float = Field(default=0.5, gt=0)
