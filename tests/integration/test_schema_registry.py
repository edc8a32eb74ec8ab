"""The event schemas in a real Schema Registry (Apicurio Registry 2.6.13, Confluent API).

The relay registers each subject on first use with the BACKWARD rule; the registry then refuses
an incompatible change of our ``.proto`` files and accepts a compatible one.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from authloyalty.events import SessionRevoked, UserRegistered
from authloyalty.platform.bus import Envelope
from authloyalty.platform.kafka import KafkaPublisher, schema_registry
from authloyalty.platform.kafka_codec import EventEncoder
from authloyalty.platform.settings import KafkaSettings
from authloyalty.sso.events import SSO_EVENTS
from devstack.common import REPO_ROOT
from devstack.registry import Registry
from tests.integration.test_kafka_bus import read_all

REGISTRATION_PROTO = REPO_ROOT / "proto" / "registration.v1" / "registration.proto"


async def publish_one_of_each(settings: KafkaSettings) -> None:
    publisher = KafkaPublisher(settings, EventEncoder(settings, SSO_EVENTS,
                                                      schema_registry(settings)))
    try:
        user = uuid4()
        assert await publisher.publish([
            Envelope(UserRegistered(user)),
            Envelope(SessionRevoked(uuid4(), user, datetime(2030, 1, 1, tzinfo=UTC), "logout")),
        ]) == [None, None]
    finally:
        publisher.close()


@pytest.fixture
def registry(kafka_settings: KafkaSettings) -> Iterator[SchemaRegistryClient]:
    """A client of the run's registry."""
    with SchemaRegistryClient({"url": kafka_settings.schema_registry_url}) as client:
        yield client


async def test_the_relay_registers_both_subjects_with_the_backward_rule(
        kafka_settings: KafkaSettings, schema_registry: Registry,
        registry: SchemaRegistryClient) -> None:
    await publish_one_of_each(kafka_settings)
    subjects = [f"{kafka_settings.registration_topic}-value",
                f"{kafka_settings.sessions_topic}-value"]
    assert set(subjects) <= set(registry.get_subjects())
    for subject in subjects:
        assert registry.get_compatibility(subject) == "BACKWARD"
        # Apicurio holds it as a rule of the artifact itself: the rule it enforces.
        async with httpx.AsyncClient(timeout=5) as http:
            rules = await http.get(f"{schema_registry.url}/apis/registry/v2/groups/default/"
                                   f"artifacts/{subject}/rules/COMPATIBILITY")
        assert rules.status_code == 200
        assert rules.json()["config"] == "BACKWARD"
        assert len(registry.get_versions(subject)) == 1
    # Publishing again (a restarted relay) registers nothing new.
    await publish_one_of_each(kafka_settings)
    for subject in subjects:
        assert len(registry.get_versions(subject)) == 1


@pytest.mark.parametrize(("change", "old", "new"), [
    ("a field's type", "string type = 2;", "int64 type = 2;"),
    ("a field renumbered", "string type = 2;", "string type = 7;"),
    ("a field removed", "string type = 2;", ""),
])
async def test_an_incompatible_change_of_the_proto_is_refused(
        kafka_settings: KafkaSettings, registry: SchemaRegistryClient, change: str, old: str,
        new: str) -> None:
    await publish_one_of_each(kafka_settings)
    subject = f"{kafka_settings.registration_topic}-value"
    source = REGISTRATION_PROTO.read_text()
    assert old in source
    with pytest.raises(SchemaRegistryError) as refused:
        registry.register_schema(subject, Schema(source.replace(old, new), "PROTOBUF"))
    assert refused.value.http_status_code == 409, change
    assert len(registry.get_versions(subject)) == 1


async def test_a_new_field_is_accepted_and_events_still_flow(
        kafka_settings: KafkaSettings, registry: SchemaRegistryClient) -> None:
    await publish_one_of_each(kafka_settings)
    subject = f"{kafka_settings.registration_topic}-value"
    source = REGISTRATION_PROTO.read_text()
    extended = source.replace("string type = 2;", "string type = 2;\n  string channel = 3;")
    first = registry.get_latest_version(subject).schema_id
    second = registry.register_schema(subject, Schema(extended, "PROTOBUF"))
    assert second != first
    assert len(registry.get_versions(subject)) == 2
    # A relay still on the previous schema keeps publishing under the previous id.
    await publish_one_of_each(kafka_settings)
    assert len(registry.get_versions(subject)) == 2


async def test_a_subject_registered_before_without_a_rule_gets_it(
        kafka_settings: KafkaSettings, registry: SchemaRegistryClient) -> None:
    subject = f"{kafka_settings.registration_topic}-value"
    registry.register_schema(subject, Schema(REGISTRATION_PROTO.read_text(), "PROTOBUF"))
    await publish_one_of_each(kafka_settings)
    assert registry.get_compatibility(subject) == "BACKWARD"


async def test_a_rule_set_by_an_operator_is_kept(kafka_settings: KafkaSettings,
                                                 registry: SchemaRegistryClient) -> None:
    subject = f"{kafka_settings.registration_topic}-value"
    registry.set_compatibility(subject_name=subject, level="FULL")
    await publish_one_of_each(kafka_settings)
    assert registry.get_compatibility(subject) == "FULL"


async def test_while_the_registry_is_down_nothing_is_published_and_then_everything_is(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    own = Registry(tmp_path / "registry")
    settings = kafka_settings.model_copy(update={"schema_registry_url": own.ccompat_url})
    publisher = KafkaPublisher(settings, EventEncoder(settings, SSO_EVENTS,
                                                      schema_registry(settings)))
    events = [Envelope(UserRegistered(uuid4())) for _ in range(20)]
    try:
        results = await publisher.publish(events)  # nobody listens on the registry's port
        assert all(r is not None and r.startswith("encode:") for r in results), results
        with own:
            assert await publisher.publish(events) == [None] * len(events)
    finally:
        publisher.close()
    records = read_all(settings, settings.registration_topic, len(events) + 1, timeout=10)
    assert sorted(r.key().decode() for r in records) == sorted(
        str(e.event.user_id) for e in events)  # each once, none while the registry was down
