"""Configuration: one YAML file (``--config``/``CONFIG_PATH``), overridable by the environment.

Precedence, highest first: command-line overrides, ``AUTHLOYALTY_*`` environment variables
(nested keys joined by ``__``, e.g. ``AUTHLOYALTY_SSO__HTTP_PORT``), the YAML file, defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from authloyalty.loyalty.settings import LoyaltySettings
from authloyalty.platform.settings import (
    PLACEHOLDER_SECRET_SHA256,
    ConfigError,
    EventsSettings,
    Section,
    TelemetrySettings,
)
from authloyalty.sso.settings import SsoSettings


class AdminSettings(Section):
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
    # auto: readable console lines on a terminal, JSON lines otherwise (platform/logging.py).
    log_format: Literal["auto", "json", "console"] = "auto"
    # One line per HTTP request (platform/http/middleware.py); off saves its cost per request.
    access_log: bool = True
    # How often each process runs its maintenance jobs (purges of expired rows, of deleted
    # users' personal data).
    maintenance_interval_seconds: float = Field(default=300.0, gt=0)
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
    except ValidationError as exc:
        raise ConfigError("\n".join(_problems(exc))) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot be read"
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _problems(exc: ValidationError) -> list[str]:
    """One line per bad key: ``sso.http_port: Input should be a valid integer``."""
    lines = []
    for error in exc.errors(include_url=False):
        key = ".".join(str(part) for part in error["loc"]) or "config"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        lines.append(f"{key}: {message}")
    return lines
