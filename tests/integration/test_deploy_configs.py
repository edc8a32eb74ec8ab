"""deploy/ without a Docker engine: what can be checked with the real tools.

- the compose file validates against the Compose specification's JSON schema;
- `nginx -t` accepts the gateway config, rendered for the local stack and for compose;
- `promtool check config` accepts both Prometheus configs;
- the Grafana dashboard queries only metrics a running `authloyalty up` exports.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from authloyalty.settings import load_settings
from devstack import nginx as gateway
from devstack import prometheus as prom
from devstack.common import DevstackError, find_command
from devstack.postgres import scratch_dir
from devstack.tls import make_tls
from tests.e2e.e2e_helpers import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    PASSWORD,
    Server,
    bearer,
    free_port,
    unique_email,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "authloyalty.json"
EXPORTED_PREFIXES = ("authloyalty_", "process_", "python_")


def _tool(command: str, package: str) -> str:
    """The path of a Debian tool; tests never install one (`make test` does, before pytest)."""
    path = find_command(command)
    if path is None:
        pytest.fail(f"{command} is not installed: run `make system-deps` "
                    f"(scripts/install-system-deps.sh) or `apt-get install {package}`")
    return path


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # resolves the << merge keys
    return doc


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory nginx's unprivileged workers can traverse (pytest's tmp_path is 0700)."""
    path = scratch_dir("deploy-test-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- compose --------------------------------------------------------------------------------------


def _compose_validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a dev dependency")
    schema = json.loads((DEPLOY / "schema" / "compose-spec.json").read_text())
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_compose_file_validates_against_the_compose_specification() -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in _compose_validator().iter_errors(_compose())]
    assert errors == []


def test_the_schema_check_is_not_vacuous() -> None:
    validator = _compose_validator()
    broken = copy.deepcopy(_compose())
    broken["services"]["sso-1"]["replicaz"] = 2
    assert list(validator.iter_errors(broken))
    broken = copy.deepcopy(_compose())
    broken["services"]["nginx"]["depends_on"]["sso-1"]["condition"] = "service_ready"
    assert list(validator.iter_errors(broken))


def test_compose_mirrors_the_demo_scale_topology() -> None:
    services = _compose()["services"]
    expected = {"etcd", "patroni-1", "patroni-2", "patroni-3", "haproxy", "kafka-1", "kafka-2",
                "kafka-3", "schema-registry", "nginx", "sso-1", "sso-2", "loyalty", "prometheus",
                "grafana", "loki", "promtail", "jaeger", "migrate", "keys-init", "tls-init"}
    assert expected <= set(services)
    # One image for every authloyalty process, built from deploy/Dockerfile.
    ours = {name for name, svc in services.items()
            if svc.get("build", {}).get("dockerfile") == "deploy/Dockerfile"}
    assert ours == {"sso-1", "sso-2", "loyalty", "migrate", "keys-init"}
    assert len({services[name]["image"] for name in ours}) == 1
    # Kafka: three KRaft voters.
    voters = {services[f"kafka-{i}"]["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"]
              for i in (1, 2, 3)}
    assert voters == {"1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"}
    # Keys come from a volume, mounted read-only into sso.
    assert "keys:/var/lib/authloyalty/keys:ro" in services["sso-1"]["volumes"]
    # loyalty reads from the replicas (HAProxy :5001), writes to the leader (:5000).
    env = services["loyalty"]["environment"]
    assert "@haproxy:5001/" in env["AUTHLOYALTY_LOYALTY__DATABASE__READ_URL"]
    assert "@haproxy:5000/" in env["AUTHLOYALTY_LOYALTY__DATABASE__URL"]


def test_no_secret_is_committed() -> None:
    text = COMPOSE.read_text()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    # Every password in compose.yaml is a required variable from deploy/.env ...
    for match in re.finditer(r"(?m)^\s*([A-Z0-9_]*PASSWORD[A-Z0-9_]*):\s*(.+)$", text):
        assert match.group(2).startswith("${"), match.group(0)
    for match in re.finditer(r"postgresql://[^@\s]*@", text):
        assert ":${" in match.group(0), match.group(0)
    # ... and deploy/.env.example names each of them (with placeholders only).
    example = (DEPLOY / ".env.example").read_text()
    listed = set(re.findall(r"(?m)^([A-Z0-9_]+)=", example))
    assert required <= listed
    assert "DOCKER" not in listed
    ignored = (DEPLOY / ".gitignore").read_text().splitlines()
    assert ".env" in ignored
    tracked = subprocess.run(["git", "ls-files", "deploy"], cwd=ROOT, capture_output=True,
                             text=True, check=False).stdout.split()
    assert not [f for f in tracked if f.endswith((".env", ".key", ".pem"))]


@pytest.mark.parametrize("name", ["sso.yaml", "loyalty.yaml"])
def test_service_configs_are_accepted_by_the_services(name: str) -> None:
    settings = load_settings(DEPLOY / "config" / name)
    assert settings.mode == "production"
    assert settings.events.backend == "kafka"


# -- nginx ----------------------------------------------------------------------------------------


def test_compose_gateway_config_is_rendered_from_the_template() -> None:
    committed = (DEPLOY / "nginx" / gateway.COMPOSE_CONF_NAME).read_text()
    assert committed == gateway.render_compose(), (
        "run `python -m devstack nginx render-compose`")


def test_nginx_accepts_the_local_stack_gateway_config(scratch: Path) -> None:
    nginx = _tool("nginx", "nginx")
    tls = make_tls(scratch / "tls", openssl=_tool("openssl", "openssl"))
    (scratch / "tmp").mkdir()
    values = gateway.GatewayValues(
        sso_http=["127.0.0.1:18001", "127.0.0.1:18002"],
        sso_grpc=["127.0.0.1:18101", "127.0.0.1:18102"],
        loyalty_http=["127.0.0.1:18201"],
        https_listen=[f"127.0.0.1:{free_port()}"], grpc_listen=[f"127.0.0.1:{free_port()}"],
        tls_cert=str(tls.cert), tls_key=str(tls.key), pid_file=str(scratch / "nginx.pid"),
        error_log=str(scratch / "error.log"), access_log=str(scratch / "access.log"),
        temp_dir=str(scratch / "tmp"))
    conf = scratch / "nginx.conf"
    conf.write_text(gateway.render_gateway(values))
    output = gateway.check_config(conf, prefix=scratch, nginx=nginx)
    assert "test is successful" in output


def test_nginx_accepts_the_compose_gateway_config(scratch: Path) -> None:
    """The committed compose config, with container names and paths mapped onto this machine."""
    nginx = _tool("nginx", "nginx")
    tls = make_tls(scratch / "tls", openssl=_tool("openssl", "openssl"))
    text = (DEPLOY / "nginx" / gateway.COMPOSE_CONF_NAME).read_text()
    # Container names resolve only inside the compose network; nginx resolves them at load.
    for host in ("sso-1", "sso-2", "loyalty", "grafana", "jaeger"):
        text = re.sub(rf"\b{host}:(\d+)", r"127.0.0.1:\1", text)
    https, grpc_port = free_port(), free_port()
    replacements = {
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https} ssl http2;",
        "listen 44044 http2;": f"listen 127.0.0.1:{grpc_port} http2;",
        "/etc/nginx/tls/tls.crt": str(tls.cert),
        "/etc/nginx/tls/tls.key": str(tls.key),
        "/tmp/nginx.pid": str(scratch / "nginx.pid"),
        "/var/cache/nginx/": f"{scratch}/cache/",
    }
    (scratch / "cache").mkdir()
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    conf = scratch / "nginx.conf"
    conf.write_text(text)
    assert "test is successful" in gateway.check_config(conf, prefix=scratch, nginx=nginx)


def test_nginx_refuses_a_broken_config(scratch: Path) -> None:
    nginx = _tool("nginx", "nginx")
    conf = scratch / "nginx.conf"
    conf.write_text("events {}\nhttp { upstream u { } server { listen 127.0.0.1:1; } }\n")
    with pytest.raises(DevstackError, match="nginx -t refused"):
        gateway.check_config(conf, prefix=scratch, nginx=nginx)


def test_gateway_template_keeps_the_retry_and_request_id_rules() -> None:
    text = gateway.template_path().read_text()
    assert "proxy_next_upstream error timeout http_502 http_503;" in text
    assert "non_idempotent" not in re.sub(r"#.*", "", text)  # POSTs are never re-sent
    assert "proxy_set_header X-Request-Id $req_id;" in text
    assert "add_header X-Request-Id $req_id always;" in text
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in text


# -- Prometheus -----------------------------------------------------------------------------------


def test_promtool_accepts_the_compose_prometheus_config() -> None:
    promtool = _tool("promtool", prom.DEBIAN_PACKAGE)
    output = prom.check_config(DEPLOY / "prometheus" / "prometheus.yml", promtool=promtool)
    assert "SUCCESS" in output


def test_promtool_accepts_the_generated_prometheus_config(scratch: Path) -> None:
    promtool = _tool("promtool", prom.DEBIAN_PACKAGE)
    path = prom.write_config(
        scratch, {"sso": [("sso-1", "127.0.0.1:18001"), ("sso-2", "127.0.0.1:18002")],
                  "loyalty": [("loyalty-1", "127.0.0.1:18201")],
                  "patroni": [("patroni-1", "127.0.0.1:18008")],
                  "etcd": [("etcd", "127.0.0.1:12379")]},
        self_address="127.0.0.1:19090")
    output = prom.check_config(path, promtool=promtool)
    assert "SUCCESS: 1 rule files found" in output
    assert "SUCCESS" in prom.check_rules(scratch / prom.RULES_FILE, promtool=promtool)


def test_promtool_refuses_a_broken_config(scratch: Path) -> None:
    promtool = _tool("promtool", prom.DEBIAN_PACKAGE)
    path = scratch / "prometheus.yml"
    path.write_text("scrape_configs:\n  - job_name: x\n    scrape_interval: soon\n")
    with pytest.raises(DevstackError, match="refused"):
        prom.check_config(path, promtool=promtool)


def test_both_prometheus_configs_scrape_the_same_jobs() -> None:
    compose = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    described = {"sso-1": {"urls": {"http": "http://a:1"}},
                 "loyalty-1": {"urls": {"http": "http://b:2"}},
                 "patroni-1": {"urls": {"rest": "http://d:4"}},
                 "etcd": {"urls": {"client": "http://e:5"}}}
    generated = prom.config(prom.scrape_jobs(described), self_address="c:3")
    assert ([j["job_name"] for j in compose["scrape_configs"]]
            == [j["job_name"] for j in generated["scrape_configs"]])
    assert compose["rule_files"] == generated["rule_files"] == ["alerts.yml"]
    targets = {t for job in compose["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    assert {"sso-1:8000", "sso-2:8000", "loyalty:8001", "patroni-1:8008", "patroni-2:8008",
            "patroni-3:8008", "etcd:2379"} <= targets
    # compose mounts the same rules beside the config.
    mounts = _compose()["services"]["prometheus"]["volumes"]
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts


def test_compose_patroni_timing_matches_the_local_stack() -> None:
    from devstack.patroni import DCS  # the local stack's Patroni settings

    dcs = yaml.safe_load((DEPLOY / "patroni" / "patroni.yml").read_text())["bootstrap"]["dcs"]
    for key in ("ttl", "loop_wait", "retry_timeout", "synchronous_mode",
                "synchronous_mode_strict", "maximum_lag_on_failover"):
        assert dcs[key] == DCS[key], key


# -- Grafana --------------------------------------------------------------------------------------

_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                 "unless", "offset", "bool", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[match.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group(0).lower() not in _PROMQL_WORDS:
            names.add(match.group(0))
    return names


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and template variables."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        if text:
            exprs.extend(re.findall(r"label_values\(([^,)]+)", text))
    return exprs


def test_metric_name_extraction() -> None:
    assert metric_names(
        'histogram_quantile(0.95, sum by (le, job) (rate(authloyalty_x_bucket{job=~"$job"}'
        '[$__rate_interval]))) / on (job) group_left up') == {"authloyalty_x_bucket", "up"}
    assert metric_names("time() - process_start_time_seconds") == {"process_start_time_seconds"}


def test_dashboard_is_provisioned_with_its_datasources() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "datasources.yaml").read_text())
    uids = {s["uid"] for s in sources["datasources"]}
    assert {"prometheus", "loki", "jaeger"} <= uids
    dashboard = json.loads(DASHBOARD.read_text())
    used = {panel["datasource"]["uid"] for panel in dashboard["panels"] if "datasource" in panel}
    assert used <= uids
    provider = yaml.safe_load((provisioning / "dashboards" / "dashboards.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    grafana = _compose()["services"]["grafana"]
    assert f"./grafana/dashboards:{path}:ro" in grafana["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    queried = {name for expr in dashboard_queries() for name in metric_names(expr)}
    assert queried, "the dashboard has no queries"
    assert all(name.startswith(EXPORTED_PREFIXES) for name in queried), sorted(queried)


def _exported(text: str) -> set[str]:
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum",
                                                                 "_created"),
                "summary": ("_count", "_sum", "_created"), "gauge": ("",), "info": ("_info",)}
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


@pytest.mark.e2e
def test_dashboard_queries_only_metrics_the_services_export(tmp_path: Path) -> None:
    """Scrape a real `authloyalty up` after one request of each kind."""
    server = Server(tmp_path / "data", admin=(ADMIN_EMAIL, ADMIN_PASSWORD))
    server.start()
    try:
        with httpx.Client(timeout=10.0) as http:
            email = unique_email("dash")
            r = http.post(f"{server.sso}/auth/registration",
                          json={"email": email, "password": PASSWORD})
            assert r.status_code == 201, r.text
            user = r.json()
            r = http.post(f"{server.sso}/auth/login", json={"email": email, "password": PASSWORD})
            assert r.status_code == 200, r.text
            http.post(f"{server.sso}/auth/login", json={"email": email, "password": "wrong pw!"})
            r = http.post(f"{server.sso}/auth/refresh", json={"token": r.json()["refresh_token"]})
            assert r.status_code == 200, r.text
            tokens = r.json()
            auth = bearer(tokens["access_token"])
            assert http.get(f"{server.sso}/auth/info", headers=auth).status_code == 200
            for _ in range(50):
                if http.get(f"{server.loyalty}/loyalty/me", headers=auth).status_code == 200:
                    break
            r = http.post(f"{server.loyalty}/loyalty/me/withdrawals", headers=auth,
                          json={"amount": 10, "comment": "coffee"})
            assert r.status_code == 201, r.text
            r = http.post(f"{server.sso}/auth/login",
                          json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
            admin = bearer(r.json()["access_token"])
            r = http.post(f"{server.loyalty}/loyalty/admin/accounts/{user['user_id']}/deposits",
                          headers=admin, json={"amount": 5, "comment": "gift"})
            assert r.status_code == 201, r.text
            with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
                health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service="auth.Auth"), timeout=5)
            r = http.post(f"{server.sso}/auth/logout", json={"token": tokens["access_token"]})
            assert r.status_code == 200, r.text
            exported = (_exported(http.get(f"{server.sso}/metrics").text)
                        | _exported(http.get(f"{server.loyalty}/metrics").text))
    finally:
        server.stop()
    queried = {name for expr in dashboard_queries() for name in metric_names(expr)}
    missing = sorted(queried - exported)
    assert not missing, f"the dashboard queries metrics nobody exports: {missing}"
