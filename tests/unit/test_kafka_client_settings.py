"""`events.kafka.client`: an operator's librdkafka settings reach every client and override the
services' tuning, but not what exactly-once delivery and offset keeping rely on (refused at
load, with the setting to use instead)."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from authloyalty.platform import kafka
from authloyalty.platform.settings import FIXED_KAFKA_CLIENT_SETTINGS, ConfigError, KafkaSettings
from authloyalty.settings import load_settings


class RecordingProducer:
    """Stands in for librdkafka's producer: keeps its configuration, connects nowhere."""

    made: list[dict[str, Any]] = []

    def __init__(self, conf: dict[str, Any]) -> None:
        self.made.append(conf)
        self._idle = threading.Event()

    def poll(self, timeout: float) -> int:
        self._idle.wait(timeout)
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def producer_conf(monkeypatch: pytest.MonkeyPatch, client: dict[str, str]) -> dict[str, Any]:
    RecordingProducer.made = []
    monkeypatch.setattr(kafka, "Producer", RecordingProducer)
    codec = SimpleNamespace(fan_out_topics=set, close=lambda: None)
    publisher = kafka.KafkaPublisher(
        KafkaSettings(client=client, delivery_timeout_seconds=7), codec)  # type: ignore[arg-type]
    try:
        publisher._producer("accounts")
    finally:
        publisher.close()
    (conf,) = RecordingProducer.made
    return conf


def test_the_producers_tuning_gives_way_to_the_operators(monkeypatch: pytest.MonkeyPatch) -> None:
    tuned = producer_conf(monkeypatch, {})
    assert tuned["linger.ms"] == 0
    assert tuned["request.timeout.ms"] == 5_000
    overridden = producer_conf(monkeypatch, {"linger.ms": "5", "request.timeout.ms": "30000",
                                             "security.protocol": "SSL"})
    assert overridden["linger.ms"] == "5"
    assert overridden["request.timeout.ms"] == "30000"
    assert overridden["security.protocol"] == "SSL"
    # Exactly-once production stays as it must be.
    assert (overridden["enable.idempotence"], overridden["acks"]) == (True, "all")
    assert overridden["message.timeout.ms"] == 7_000


@pytest.mark.parametrize("setting", sorted(FIXED_KAFKA_CLIENT_SETTINGS))
def test_settings_the_services_fix_are_refused(setting: str) -> None:
    with pytest.raises(ConfigError, match=setting.replace(".", r"\.")):
        load_settings(None, events={"kafka": {"client": {setting: "1"}}})

