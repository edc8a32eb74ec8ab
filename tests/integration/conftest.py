"""The embedded system on each real backend, migrated and started without HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import uuid4

import pytest

from authloyalty.bootstrap import EmbeddedSystem, build_embedded
from authloyalty.platform.kafka import ensure_topics
from authloyalty.platform.settings import KafkaSettings
from authloyalty.settings import Settings
from devstack.kafka import KafkaBroker


@pytest.fixture
async def system(backend_settings: Settings) -> AsyncIterator[EmbeddedSystem]:
    """sso + loyalty with migrations applied; the relay is driven by the test."""
    built = build_embedded(backend_settings)
    await built.migrate()
    try:
        yield built
    finally:
        await built.stop()


@pytest.fixture
def kafka_settings(kafka_broker: KafkaBroker) -> KafkaSettings:
    """Topics of our own, so tests never see each other's records."""
    suffix = uuid4().hex[:8]
    settings = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers,
                             registration_topic=f"registration-{suffix}",
                             sessions_topic=f"sessions-{suffix}", consumer_group=f"g-{suffix}",
                             max_attempts=3, commit_interval_ms=100, topic_partitions=1)
    ensure_topics(settings)
    return settings
