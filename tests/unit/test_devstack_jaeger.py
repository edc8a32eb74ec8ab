"""Jaeger in the local stack: its rendered config, the compose copy, what status shows, and the
tracing settings each replica is given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from devstack import jaeger
from devstack.topology import Topology

PORTS = {"otlp_grpc": 41001, "otlp_http": 41002, "query_http": 41003, "query_grpc": 41004,
         "health": 41005}


def test_the_config_listens_on_the_stack_ports_on_loopback_only() -> None:
    config: dict[str, Any] = yaml.safe_load(jaeger.render_config(jaeger.local_addresses(PORTS)))
    otlp = config["receivers"]["otlp"]["protocols"]
    extensions = config["extensions"]
    assert otlp["grpc"]["endpoint"] == "127.0.0.1:41001"
    assert otlp["http"]["endpoint"] == "127.0.0.1:41002"
    assert extensions["jaeger_query"]["http"]["endpoint"] == "127.0.0.1:41003"
    assert extensions["jaeger_query"]["grpc"]["endpoint"] == "127.0.0.1:41004"
    assert extensions["healthcheckv2"]["http"]["endpoint"] == "127.0.0.1:41005"
    # In-memory storage, and the traces pipeline writes to it.
    assert extensions["jaeger_storage"]["backends"]["mem"]["memory"]["max_traces"] > 0
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["jaeger_storage_exporter"]
    # Jaeger does not trace itself (it would dial an OTLP collector on localhost:4317).
    assert config["service"]["telemetry"]["traces"]["level"] == "none"


def test_the_compose_config_is_rendered_from_the_same_template() -> None:
    assert jaeger.compose_config_current(), \
        "run `python -m devstack jaeger render-compose`"
    config = yaml.safe_load(jaeger.compose_config_path().read_text())
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"


def test_status_shows_the_query_api_and_the_otlp_receivers() -> None:
    assert jaeger.urls(PORTS) == {"query": "http://127.0.0.1:41003",
                                  "otlp_http": "http://127.0.0.1:41002",
                                  "otlp_grpc": "http://127.0.0.1:41001",
                                  "health": "http://127.0.0.1:41005/status"}


def test_the_build_is_cached_under_the_cache_root(monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.setenv("AUTHLOYALTY_CACHE_DIR", str(tmp_path))
    assert jaeger.binary_path() == tmp_path / "jaeger-1.76.0" / "jaeger"
    env = jaeger.go_env()
    assert env["GOMODCACHE"] == str(tmp_path / "go" / "mod")
    assert env["GOCACHE"] == str(tmp_path / "go" / "build")


def _topology(tmp_path: Path, with_jaeger: bool) -> Topology:
    plan = {"options": {"sso_replicas": 1, "loyalty_replicas": 1, "brokers": 1,
                        "postgres": "simple"},
            "tools": {"jaeger": "/opt/jaeger"},
            "ports": {"jaeger": PORTS if with_jaeger else None}}
    return Topology(tmp_path, plan)


def test_each_replica_traces_to_the_stack_jaeger_under_its_service_name(tmp_path: Path) -> None:
    topology = _topology(tmp_path, with_jaeger=True)
    assert topology.telemetry("loyalty", "loyalty-2") == {"telemetry": {
        "enabled": True, "otlp_endpoint": "http://127.0.0.1:41002", "service_name": "loyalty",
        "instance_id": "loyalty-2", "sample_ratio": 1.0}}
    [component] = topology.tracing_components()
    assert component.command[:2] == ["/opt/jaeger", "--config"]


def test_without_jaeger_nothing_is_traced(tmp_path: Path) -> None:
    topology = _topology(tmp_path, with_jaeger=False)
    assert topology.telemetry("sso", "sso-1") == {}
    assert topology.tracing_components() == []
