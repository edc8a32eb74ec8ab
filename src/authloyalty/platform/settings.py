"""Configuration: one YAML file (``--config``/``CONFIG_PATH``), overridable by the environment.

Precedence, highest first: command-line overrides, ``AUTHLOYALTY_*`` environment variables
(nested keys joined by ``__``, e.g. ``AUTHLOYALTY_SSO__HTTP_PORT``), the YAML file, defaults.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)


class ConfigError(Exception):
    """The configuration cannot be used; the message says why."""


class _Section(BaseModel):
    """A config section; unknown keys are refused so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DatabaseSettings(_Section):
    """Where one service keeps its data."""

    url: str | None = None
    # Read-only replica for balance/history reads; writes never go there.
    read_url: str | None = None
    # PostgreSQL schema used when several services share one database URL.
    schema_name: str | None = Field(default=None, alias="schema")
    pool_size: int = Field(default=10, ge=1, le=200)
    echo: bool = False


class Argon2Settings(_Section):
    """Argon2id cost parameters (OWASP: m=19 MiB, t=2, p=1)."""

    time_cost: int = Field(default=2, ge=1)
    memory_kib: int = Field(default=19456, ge=8)
    parallelism: int = Field(default=1, ge=1)


class ThrottleSettings(_Section):
    """Failed-login throttling; counts only failures inside the sliding window."""

    enabled: bool = True
    window_seconds: int = Field(default=900, ge=1)
    max_failures_per_email: int = Field(default=5, ge=1)
    max_failures_per_client: int = Field(default=100, ge=1)


# Digests of secrets that appear in examples and templates: a deployment that configured one
# of them (outside the embedded mode) refuses to start.
PLACEHOLDER_SECRETS = ("", "change-me", "changeme", "change_me", "secret", "password",
                       "placeholder", "CHANGE_ME")
PLACEHOLDER_SECRET_SHA256 = frozenset(
    hashlib.sha256(secret.encode()).hexdigest() for secret in PLACEHOLDER_SECRETS)


class GrpcClientSettings(_Section):
    """A service allowed to call sso's ``GetUser`` for any user, with its id and secret.

    sso keeps only the SHA-256 of the secret: the secret is random (32 bytes or more), so a
    fast hash is enough, and the configuration file holds nothing that lets anyone call.
    """

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    secret_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class RequestHeaderLimits(_Section):
    """The most an HTTP request head (request line and header fields) may hold; a larger one
    is answered 431 and its connection closed, before the server buffers it."""

    max_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    max_fields: int = Field(default=100, ge=8, le=10_000)


class SsoSettings(_Section):
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


class LoyaltySettings(_Section):
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


class KafkaSettings(_Section):
    """Kafka and the Schema Registry (production event bus)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    # Confluent-compatible Schema Registry; ``mock://…`` keeps schemas in process (tests).
    schema_registry_url: str = "mock://authloyalty"
    registration_topic: str = "registration"
    sessions_topic: str = "sessions"
    dead_letter_suffix: str = ".dlq"
    consumer_group: str = "loyalty"
    # Distinguishes loyalty replicas: each one reads every session revocation.
    instance_id: str | None = None
    # Attempts before a message that keeps failing (not for lack of a database) is dead-lettered.
    max_attempts: int = Field(default=5, ge=1)
    # Consumed offsets are committed this often, always after the database commit.
    commit_interval_ms: int = Field(default=1000, ge=1)
    delivery_timeout_seconds: float = Field(default=10.0, gt=0)
    create_topics: bool = True
    topic_partitions: int = Field(default=3, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    # Revocations only matter while an access token could still be valid.
    sessions_retention_hours: int = Field(default=24, ge=1)
    # Extra librdkafka settings (security.protocol, sasl.*, …) for every client.
    client: dict[str, str] = {}


class EventsSettings(_Section):
    """The event bus between the services and the outbox relay."""

    backend: Literal["inprocess", "kafka"] = "inprocess"
    kafka: KafkaSettings = KafkaSettings()
    relay_batch_size: int = Field(default=100, ge=1, le=10_000)
    relay_poll_interval_seconds: float = Field(default=0.5, gt=0)
    relay_max_backoff_seconds: float = Field(default=60.0, gt=0)


class TelemetrySettings(_Section):
    """OpenTelemetry tracing (metrics are always on at /metrics)."""

    enabled: bool = False
    # OTLP/HTTP collector, e.g. http://jaeger:4318; spans are dropped when unset.
    otlp_endpoint: str | None = None
    service_name: str | None = None
    sample_ratio: float = Field(default=1.0, ge=0, le=1)


class AdminSettings(_Section):
    """Bootstrap admin created (or promoted) at start when both fields are set."""

    email: str | None = None
    password: str | None = None


class Settings(BaseSettings):
    """Whole-process configuration."""

    mode: Literal["embedded", "production"] = "embedded"
    data_dir: Path = Path("var")
    # One URL for both services; each gets its own schema (PostgreSQL) or file (SQLite).
    database_url: str | None = None
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"
    sso: SsoSettings = SsoSettings()
    loyalty: LoyaltySettings = LoyaltySettings()
    events: EventsSettings = EventsSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    admin: AdminSettings = AdminSettings()

    model_config = SettingsConfigDict(
        env_prefix="AUTHLOYALTY_", env_nested_delimiter="__", extra="forbid"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Command line over environment over YAML."""
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls))

    @property
    def token_issuer(self) -> str:
        """The `iss` loyalty expects."""
        return self.loyalty.token_issuer or self.sso.issuer

    @property
    def loyalty_token_lifetimes(self) -> dict[str, int]:
        """The longest lifetime (exp - iat) loyalty accepts per token type."""
        return {"access": (self.loyalty.max_access_token_ttl_seconds
                           or self.sso.access_token_ttl_seconds),
                "refresh": self.sso.refresh_token_ttl_seconds}

    @model_validator(mode="after")
    def _refuse_placeholder_grpc_client_secrets(self) -> Settings:
        if self.mode == "embedded":
            return self
        for client in self.sso.grpc_clients:
            if client.secret_sha256 in PLACEHOLDER_SECRET_SHA256:
                raise ValueError(f"sso.grpc_clients: the secret of {client.id!r} is a "
                                 "placeholder; generate a random one")
        return self


def _bootstrap_admin_from_env(overrides: dict[str, Any]) -> None:
    # The documented short names (AUTHLOYALTY_ADMIN_EMAIL/_PASSWORD) and the nested ones both work.
    email = os.environ.get("AUTHLOYALTY_ADMIN_EMAIL")
    password = os.environ.get("AUTHLOYALTY_ADMIN_PASSWORD")
    admin = overrides.setdefault("admin", {})
    if email and "email" not in admin:
        admin["email"] = email
    if password and "password" not in admin:
        admin["password"] = password


def load_settings(config_path: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from a YAML file (``config_path`` or ``CONFIG_PATH``), env and overrides."""
    path = config_path or os.environ.get("CONFIG_PATH") or None
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"config file does not exist: {path}")
    _bootstrap_admin_from_env(overrides)
    if not overrides["admin"]:
        del overrides["admin"]

    class _FromFile(Settings):
        model_config = SettingsConfigDict(yaml_file=str(path) if path else None)

    try:
        return _FromFile(**overrides)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
