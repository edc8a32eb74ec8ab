"""Configuration precedence and refusals."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from authloyalty.bootstrap import load_keys
from authloyalty.platform.settings import ConfigError
from authloyalty.settings import load_settings


def test_yaml_then_environment_then_overrides(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("sso:\n  http_port: 9000\n  issuer: from-yaml\nloyalty:\n"
                      "  welcome_bonus: 5\n")
    monkeypatch.setenv("AUTHLOYALTY_SSO__ISSUER", "from-env")
    monkeypatch.setenv("AUTHLOYALTY_LOYALTY__WELCOME_BONUS", "7")
    settings = load_settings(config, loyalty={"welcome_bonus": 9})
    assert settings.sso.http_port == 9000
    assert settings.sso.issuer == "from-env"
    assert settings.loyalty.welcome_bonus == 9


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("loyalty:\n  http_port: 9100\n")
    monkeypatch.setenv("CONFIG_PATH", str(config))
    assert load_settings().loyalty.http_port == 9100


def test_missing_file_unknown_key_and_keyless_production_are_refused(tmp_path: Path) -> None:
    tmp_path = tmp_path / "data"
    tmp_path.mkdir()
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sso:\n  htp_port: 1\n")
    with pytest.raises(ConfigError):
        load_settings(bad)
    with pytest.raises(ConfigError, match="signing_keys_dir"):
        load_keys(load_settings(None, mode="production", data_dir=tmp_path))
    assert not (tmp_path / "keys").exists()  # nothing generated behind the operator's back


def test_admin_from_short_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHLOYALTY_ADMIN_EMAIL", "root@example.com")
    monkeypatch.setenv("AUTHLOYALTY_ADMIN_PASSWORD", "long enough")
    admin = load_settings().admin
    assert (admin.email, admin.password) == ("root@example.com", "long enough")


def _client(secret: str) -> dict[str, str]:
    return {"id": "reports", "secret_sha256": hashlib.sha256(secret.encode()).hexdigest()}


def test_grpc_client_secrets_are_digests_and_placeholders_are_refused_in_production() -> None:
    strong = _client("q2V0N1b9yHc7rX4LwS8pZt6mK3aE5dJfU0iGoBnCvRs")
    settings = load_settings(None, mode="production", sso={"grpc_clients": [strong]})
    assert settings.sso.grpc_clients[0].id == "reports"
    for placeholder in ("change-me", ""):
        with pytest.raises(ConfigError, match="placeholder"):
            load_settings(None, mode="production", sso={"grpc_clients": [_client(placeholder)]})
        # The embedded mode is for trying things out on one machine.
        load_settings(None, sso={"grpc_clients": [_client(placeholder)]})
    for bad in ({"id": "reports", "secret_sha256": "the secret itself"},
                {"id": "no:colons", "secret_sha256": strong["secret_sha256"]}):
        with pytest.raises(ConfigError):
            load_settings(None, sso={"grpc_clients": [bad]})
