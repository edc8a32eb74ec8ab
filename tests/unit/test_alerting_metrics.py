"""Metrics the alerting rules (deploy/prometheus/alerts.yml) rely on, as /metrics shows them."""

from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from authloyalty.loyalty.revocations import RevokedSessions


def _samples() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(REGISTRY).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_login_outcome_is_exported_before_the_first_login() -> None:
    # rate() over a series that appears at 1 misses that first failure: all start at 0.
    samples = _samples()
    for outcome in ("success", "invalid_credentials", "throttled"):
        assert ("authloyalty_logins_total", frozenset({("outcome", outcome)})) in samples


def test_revocations_complete_follows_the_replicas_gate() -> None:
    # Labelled: a process that holds no revocations (sso) exports no such series at all.
    key = ("authloyalty_revocations_complete", frozenset({("service", "loyalty")}))
    revoked = RevokedSessions(complete=False)
    assert _samples()[key] == 0
    revoked.set_complete(True)
    assert _samples()[key] == 1
    revoked.set_complete(False)
    assert _samples()[key] == 0
