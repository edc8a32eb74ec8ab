"""Shared fixtures: a throwaway PostgreSQL per test session, a fresh database per test."""

from __future__ import annotations

import contextlib
import errno
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from authloyalty.settings import Settings, load_settings
from authloyalty.sso.settings import Argon2Settings
from devstack.kafka import KafkaBroker, KafkaCluster
from devstack.postgres import PostgresCluster, scratch_dir
from devstack.registry import Registry

FAST_ARGON2 = Argon2Settings(time_cost=1, memory_kib=64, parallelism=1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL server from Debian's packages, started for this test session."""
    base = scratch_dir("authloyalty-test-pg-")
    cluster = PostgresCluster(base)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> Iterator[str]:
    """A new, empty database for one test (plain ``postgresql://`` URL)."""
    name = f"t_{uuid4().hex[:16]}"
    url = pg_cluster.create_database(name)
    try:
        yield url
    finally:
        pg_cluster.drop_database(name)


def settings_for(data_dir: Path, database_url: str | None = None, **overrides: object) -> Settings:
    """Embedded-mode settings in ``data_dir`` (SQLite) or on ``database_url``."""
    values: dict[str, object] = {"data_dir": data_dir, **overrides}
    if database_url:
        values["database_url"] = database_url
    return load_settings(None, **values)


@pytest.fixture(params=["sqlite", "postgres"])
def backend_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for each real backend in turn."""
    sso = {"argon2": FAST_ARGON2.model_dump()}
    if request.param == "sqlite":
        return settings_for(tmp_path, sso=sso)
    url = request.getfixturevalue("pg_url")
    return settings_for(tmp_path, url, sso=sso)


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """An Apache Kafka broker (jars from Maven Central) shared by tests that never stop it."""
    base = scratch_dir("authloyalty-test-kafka-")
    broker = KafkaBroker(base)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[KafkaCluster]:
    """Three Kafka brokers, one cluster for every test that needs several (fault tests kill and
    restart single nodes, and leave all three running)."""
    base = scratch_dir("authloyalty-test-kafka3-")
    cluster = KafkaCluster(base, 3, heap="256m")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def schema_registry() -> Iterator[Registry]:
    """One Apicurio Registry (in memory) for the whole run, wherever Kafka is real; each test's
    topics, hence subjects (``<topic>-value``), are its own."""
    base = scratch_dir("authloyalty-test-registry-")
    registry = Registry(base)
    try:
        registry.start()
        yield registry
    finally:
        registry.close()
        shutil.rmtree(base, ignore_errors=True)


# The ports `make run` listens on. A user's own server may hold them while the suite runs, so no
# test may need them: the suite holds them itself for its whole run (where they are free), and a
# test that binds one fails here as it would on that user's machine.
DEFAULT_PORTS = (8000, 8001, 44044)


@pytest.fixture(scope="session", autouse=True)
def default_ports_held() -> Iterator[list[int]]:
    """Listen on the default ports (those still free) until the suite ends."""
    held: list[socket.socket] = []
    for port in DEFAULT_PORTS:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            continue  # someone else holds it: just as good
        held.append(sock)
    try:
        yield [s.getsockname()[1] for s in held]
    finally:
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()


# Markers per infrastructure, from the fixtures a test uses (directly or through others), so
# `pytest -m "not kafka and not stack"` is the fast loop without anyone marking tests by hand.
_INFRASTRUCTURE = {
    "postgres": {"pg_cluster", "own_cluster"},
    "kafka": {"kafka_broker", "kafka_cluster", "broker", "schema_registry"},
    "stack": {"full_stack"},
}
_STACK_MODULES = {"test_production_stack"}  # the whole local topology (`stack up`)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the infrastructure it starts."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in _INFRASTRUCTURE.items():
            if used & fixtures:
                item.add_marker(marker)
        callspec = getattr(item, "callspec", None)  # backends chosen by parameter
        if callspec is not None and "postgres" in [
                v for v in callspec.params.values() if isinstance(v, str)]:
            item.add_marker("postgres")
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in _STACK_MODULES:
            item.add_marker("stack")
