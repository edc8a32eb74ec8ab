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
    # Days until the welcome bonus expires; None: it never does.
    bonus_lifetime_days: int | None = Field(default=None, ge=1, le=36_500)
    # How often the maintenance loop expires due lots (reads never show expired points
    # whatever this is; the expiry entries are written within this of expires_at).
    expiry_sweep_interval_seconds: float = Field(default=30.0, gt=0, le=60)
    idempotency_ttl_hours: int = Field(default=24, ge=24)
    # The longest a hold may reserve points (POST .../holds ttl_seconds); 7 days by default.
    max_hold_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=1, le=366 * 24 * 3600)
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
