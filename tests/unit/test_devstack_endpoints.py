"""``status --json``'s ``endpoints`` summary and the Prometheus targets, from synthetic plans."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devstack import prometheus
from devstack.common import DevstackError
from devstack.components import Component
from devstack.endpoints import endpoints
from devstack.stack import select

PG = "postgresql://{db}@127.0.0.1:{port}/{db}"


def _ha_stack() -> list[dict[str, Any]]:
    """status --json's components of a stack with HA PostgreSQL, 3 brokers, registry, Jaeger."""
    def dsns(port: int) -> dict[str, str]:
        return {db: PG.format(db=db, port=port) for db in ("sso", "loyalty")}

    entries: list[dict[str, Any]] = [
        {"name": "etcd", "urls": {"client": "http://127.0.0.1:2379"}},
        *({"name": f"patroni-{i}", "urls": {"rest": f"http://127.0.0.1:80{i:02d}"}}
          for i in (1, 2, 3)),
        {"name": "haproxy", "urls": {"write": dsns(5000), "read": dsns(5001)}},
        *({"name": f"kafka-{i}", "urls": {"bootstrap": "127.0.0.1:9092,127.0.0.1:9093"}}
          for i in (1, 2, 3)),
        {"name": "registry", "urls": {"http": "http://127.0.0.1:8081",
                                      "ccompat": "http://127.0.0.1:8081/apis/ccompat/v7"}},
        {"name": "jaeger", "urls": {"query": "http://127.0.0.1:16686",
                                    "otlp_http": "http://127.0.0.1:4318"}},
        {"name": "sso-1", "urls": {"http": "http://127.0.0.1:7001", "grpc": "127.0.0.1:7002"}},
        {"name": "sso-2", "urls": {"http": "http://127.0.0.1:7003", "grpc": "127.0.0.1:7004"}},
        {"name": "nginx", "ca": "/stack/tls/ca.pem",
         "urls": {"https": ["https://localhost:8443"], "grpc_tls": ["localhost:8443"],
                  "grpc_h2c": "127.0.0.1:44044"}},
        {"name": "loyalty-1", "urls": {"http": "http://127.0.0.1:7101"}},
        {"name": "prometheus", "urls": {"http": "http://127.0.0.1:9090"}},
    ]
    for pid, entry in enumerate(entries, start=100):
        entry["pid"] = pid
    entries[-1]["pid"] = None  # a stopped component
    return entries


def test_endpoints_of_a_full_stack_name_every_part() -> None:
    found = endpoints(_ha_stack())
    assert found["gateway"] == "https://localhost:8443"
    assert found["ca"] == "/stack/tls/ca.pem"
    assert found["sso"] == ["http://127.0.0.1:7001", "http://127.0.0.1:7003"]
    assert found["loyalty"] == ["http://127.0.0.1:7101"]
    assert found["grpc"] == {"gateway_tls": "localhost:8443", "gateway_h2c": "127.0.0.1:44044",
                             "sso": ["127.0.0.1:7002", "127.0.0.1:7004"]}
    assert found["postgres"]["write"]["sso"].endswith(":5000/sso")
    assert found["postgres"]["read"]["loyalty"].endswith(":5001/loyalty")
    assert found["patroni"] == {f"patroni-{i}": f"http://127.0.0.1:80{i:02d}" for i in (1, 2, 3)}
    assert found["etcd"] == "http://127.0.0.1:2379"
    assert found["kafka_bootstrap"] == "127.0.0.1:9092,127.0.0.1:9093"
    assert found["registry"] == "http://127.0.0.1:8081"
    assert found["schema_registry"] == "http://127.0.0.1:8081/apis/ccompat/v7"
    assert found["jaeger"] == "http://127.0.0.1:16686"
    assert found["prometheus"] == "http://127.0.0.1:9090"
    assert found["pids"]["etcd"] == 100
    assert found["pids"]["prometheus"] is None
    assert set(found["pids"]) == {c["name"] for c in _ha_stack()}


def test_endpoints_of_a_smaller_stack_leave_the_missing_parts_empty() -> None:
    components = [
        {"name": "postgres-primary", "pid": 1, "urls": {"sso": PG.format(db="sso", port=1)}},
        {"name": "postgres-replica", "pid": 2, "urls": {"sso": PG.format(db="sso", port=2)}},
        {"name": "kafka", "pid": 3, "urls": {"bootstrap": "127.0.0.1:9092"}},
        {"name": "sso-1", "pid": 4},  # no urls at all
    ]
    found = endpoints(components)
    assert found["postgres"] == {"write": {"sso": PG.format(db="sso", port=1)},
                                 "read": {"sso": PG.format(db="sso", port=2)}}
    for key in ("gateway", "ca", "etcd", "registry", "jaeger", "prometheus"):
        assert found[key] is None, key
    assert found["patroni"] == {}
    assert found["sso"] == [None]
    assert found["pids"] == {"postgres-primary": 1, "postgres-replica": 2, "kafka": 3,
                             "sso-1": 4}
    assert endpoints([])["pids"] == {}


def test_prometheus_scrapes_services_patroni_members_and_etcd_when_present() -> None:
    jobs = prometheus.scrape_jobs({c["name"]: c for c in _ha_stack()})
    assert jobs == {
        "sso": [("sso-1", "127.0.0.1:7001"), ("sso-2", "127.0.0.1:7003")],
        "loyalty": [("loyalty-1", "127.0.0.1:7101")],
        "patroni": [(f"patroni-{i}", f"127.0.0.1:80{i:02d}") for i in (1, 2, 3)],
        "etcd": [("etcd", "127.0.0.1:2379")],
    }
    simple = {"sso-1": {"urls": {"http": "http://127.0.0.1:1"}},
              "loyalty-1": {"urls": {"http": "http://127.0.0.1:2"}},
              "postgres-primary": {"urls": {"sso": "postgresql://x@127.0.0.1:3/sso"}}}
    assert set(prometheus.scrape_jobs(simple)) == {"sso", "loyalty"}


def test_the_generated_prometheus_config_loads_the_repository_rules(tmp_path: Path) -> None:
    path = prometheus.write_config(tmp_path, {"sso": [("sso-1", "127.0.0.1:1")]},
                                   self_address="127.0.0.1:2")
    assert (tmp_path / "alerts.yml").read_text() == prometheus.RULES_SOURCE.read_text()
    assert "- alerts.yml" in path.read_text()


def _component(name: str, group: str | None = None, after: tuple[str, ...] = ()) -> Component:
    return Component(name, ["true"], ready=lambda: True, log=Path("/dev/null"),
                     depends_on=after, group=group)


def test_stop_and_start_take_components_or_a_whole_group() -> None:
    table = [_component("loyalty-1", after=("kafka-1",)), _component("kafka-1", "kafka"),
             _component("kafka-2", "kafka"), _component("sso-1")]
    assert [c.name for c in select(table, ["kafka"])] == ["kafka-1", "kafka-2"]
    assert [c.name for c in select(table, ["loyalty-1", "kafka-1"])] == ["kafka-1", "loyalty-1"]
    with pytest.raises(DevstackError, match="no component or group 'kafak'"):
        select(table, ["kafak"])
