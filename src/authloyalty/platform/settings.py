"""The configuration both services share: sections, databases, the event bus, telemetry.

Each service declares its own section (``sso/settings.py``, ``loyalty/settings.py``); the
whole-process configuration that composes them, with its sources (YAML file, environment,
command line), is ``authloyalty/settings.py``.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ConfigError(Exception):
    """The configuration cannot be used; the message says why."""


class Section(BaseModel):
    """A config section; unknown keys are refused so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DatabaseSettings(Section):
    """Where one service keeps its data."""

    url: str | None = None
    # Read-only replica for the reads a replication lag cannot make wrong (loyalty: balance
    # and history; sso: user profiles); writes never go there.
    read_url: str | None = None
    # PostgreSQL schema used when several services share one database URL.
    schema_name: str | None = Field(default=None, alias="schema")
    pool_size: int = Field(default=10, ge=1, le=200)
    echo: bool = False


# Digests of secrets that appear in examples and templates: a deployment that configured one
# of them (outside the embedded mode) refuses to start.
PLACEHOLDER_SECRETS = ("", "change-me", "changeme", "change_me", "secret", "password",
                       "placeholder", "CHANGE_ME")
PLACEHOLDER_SECRET_SHA256 = frozenset(
    hashlib.sha256(secret.encode()).hexdigest() for secret in PLACEHOLDER_SECRETS)


class RequestHeaderLimits(Section):
    """The most an HTTP request head (request line and header fields) may hold; a larger one
    is answered 431 and its connection closed, before the server buffers it."""

    max_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    max_fields: int = Field(default=100, ge=8, le=10_000)


# librdkafka settings the services set themselves, whatever ``events.kafka.client`` says:
# where the brokers are (``bootstrap_servers``), exactly-once production (idempotence, acks=all,
# ``delivery_timeout_seconds``), and how consumers keep their offsets (``commit_interval_ms``).
FIXED_KAFKA_CLIENT_SETTINGS = frozenset({
    "bootstrap.servers", "logger", "enable.idempotence", "acks", "message.timeout.ms",
    "group.id", "enable.auto.commit", "enable.auto.offset.store", "auto.offset.reset",
    "auto.commit.interval.ms"})


class KafkaSettings(Section):
    """Kafka and the Schema Registry (production event bus)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    # Confluent-compatible Schema Registry; ``mock://…`` keeps schemas in process (tests).
    schema_registry_url: str = "mock://authloyalty"
    registration_topic: str = "registration"
    sessions_topic: str = "sessions"
    # Account lifecycle (deletion, restore), keyed by user; arrival order is not the order of
    # the changes (the relay retries), their version is (events.UNVERSIONED).
    accounts_topic: str = "accounts"
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
    # Replicas that must have a record before the broker acknowledges it (producers use
    # acks=all); each topic gets min(this, its replication factor).
    min_insync_replicas: int = Field(default=2, ge=1)
    # Revocations only matter while an access token could still be valid.
    sessions_retention_hours: int = Field(default=24, ge=1)
    # Extra librdkafka settings (security.protocol, sasl.*, …) for every client; they override
    # the services' tuning (linger.ms, fetch.wait.max.ms, backoffs, timeouts, …), not the
    # settings of FIXED_KAFKA_CLIENT_SETTINGS.
    client: dict[str, str] = {}

    @field_validator("client")
    @classmethod
    def _not_fixed(cls, client: dict[str, str]) -> dict[str, str]:
        fixed = sorted(FIXED_KAFKA_CLIENT_SETTINGS.intersection(client))
        if fixed:
            raise ValueError(
                f"{', '.join(fixed)}: set by the services themselves (exactly-once delivery "
                "and offsets depend on them); use bootstrap_servers, delivery_timeout_seconds "
                "or commit_interval_ms where one of those is meant")
        return client


class EventsSettings(Section):
    """The event bus between the services and the outbox relay."""

    backend: Literal["inprocess", "kafka"] = "inprocess"
    kafka: KafkaSettings = KafkaSettings()
    relay_batch_size: int = Field(default=100, ge=1, le=10_000)
    relay_poll_interval_seconds: float = Field(default=0.5, gt=0)
    relay_max_backoff_seconds: float = Field(default=60.0, gt=0)


class TelemetrySettings(Section):
    """OpenTelemetry tracing (metrics are always on at /metrics)."""

    enabled: bool = False
    # OTLP/HTTP collector, e.g. http://jaeger:4318; spans are dropped when unset.
    otlp_endpoint: str | None = None
    service_name: str | None = None
    # This process among the service's replicas (``service.instance.id`` on its spans).
    instance_id: str | None = None
    sample_ratio: float = Field(default=1.0, ge=0, le=1)


