"""The embedded system on each real backend, migrated and started without HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import pytest

from authloyalty.bootstrap import EmbeddedSystem, build_embedded
from authloyalty.platform.kafka import ensure_topics
from authloyalty.platform.settings import KafkaSettings
from authloyalty.settings import Settings
from authloyalty.sso.service import IssuedTokens, Registration
from devstack.kafka import KafkaBroker
from devstack.registry import Registry
from tests.conftest import FAST_ARGON2, settings_for


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
def kafka_settings(kafka_broker: KafkaBroker, schema_registry: Registry) -> KafkaSettings:
    """Topics (and so registry subjects) of our own, so tests never see each other's records."""
    suffix = uuid4().hex[:8]
    settings = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers,
                             schema_registry_url=schema_registry.ccompat_url,
                             registration_topic=f"registration-{suffix}",
                             sessions_topic=f"sessions-{suffix}", consumer_group=f"g-{suffix}",
                             accounts_topic=f"accounts-{suffix}",
                             max_attempts=3, commit_interval_ms=100, topic_partitions=1)
    ensure_topics(settings)
    return settings


@dataclass
class WithUsers:
    """An embedded system on SQLite with an admin and a user whose account is open."""

    system: EmbeddedSystem
    admin: IssuedTokens
    user: IssuedTokens

    def auth(self, who: IssuedTokens) -> dict[str, str]:
        """``who``'s Authorization header."""
        return {"Authorization": f"Bearer {who.tokens.access_token}"}


@pytest.fixture
async def with_users(tmp_path: Path) -> AsyncIterator[WithUsers]:
    """SQLite, migrated, an admin and a user registered, the user's account opened."""
    system = build_embedded(settings_for(tmp_path, sso={"argon2": FAST_ARGON2.model_dump()}))
    await system.migrate()
    try:
        admin = await system.sso.service.register(
            Registration("admin@example.com", "long enough"), is_admin=True)
        user = await system.sso.service.register(Registration("user@example.com",
                                                              "long enough"))
        await system.sso.relay.run_once()
        yield WithUsers(system, admin, user)
    finally:
        await system.stop()
