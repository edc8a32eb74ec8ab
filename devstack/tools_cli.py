"""Sub-commands of ``python -m devstack`` for single tools: kafka, postgres, nginx, jaeger,
prometheus."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from devstack import jaeger, nginx, prometheus
from devstack.kafka import KafkaBroker, KafkaCluster, open_kafka
from devstack.kafka_jars import ensure_classpath
from devstack.postgres import STATE_FILE, PostgresCluster
from devstack.registry import Registry, ensure_registry


def add_tool_commands(sub: Any) -> None:
    """Add ``kafka``, ``postgres``, ``nginx`` and ``prometheus`` to ``sub``."""
    kafka = sub.add_parser("kafka", help="throwaway Kafka broker(s) under supervisord")
    kafka.add_argument("action", choices=["start", "status", "stop", "classpath"])
    kafka.add_argument("--dir", type=Path)
    kafka.add_argument("--port", type=int, help="client port (node i gets PORT+i-1)")
    kafka.add_argument("--brokers", type=int, default=1)
    kafka.add_argument("--heap", default="512m")
    kafka.add_argument("--timeout", type=float, default=120.0)
    pg = sub.add_parser("postgres", help="a throwaway PostgreSQL cluster (pg_ctl)")
    pg.add_argument("action", choices=["start", "url", "stop"])
    pg.add_argument("--dir", type=Path, required=True)
    pg.add_argument("--port", type=int)
    pg.add_argument("--durable", action="store_true", help="keep fsync & co. enabled")
    pg.add_argument("--database", default="postgres", help="database name in the URL")
    gw = sub.add_parser("nginx", help="the gateway config")
    gw.add_argument("action", choices=["render-compose", "test"])
    gw.add_argument("--check", action="store_true",
                    help="render-compose: only compare; exit 1 if the file is out of date")
    gw.add_argument("--conf", type=Path, help="test: the config file")
    trace = sub.add_parser("jaeger", help="Jaeger v2 built from the Go module proxy")
    trace.add_argument("action", choices=["build", "render-compose"],
                       help="build: the cached binary (built once), its path printed; "
                            "render-compose: deploy/jaeger/jaeger.compose.yaml")
    trace.add_argument("--check", action="store_true",
                       help="render-compose: only compare; exit 1 if the file is out of date")
    reg = sub.add_parser("registry", help="Apicurio Registry (Maven Central), in memory")
    reg.add_argument("action", choices=["fetch", "start", "stop"],
                     help="fetch: download and unpack once, print the directory; start|stop: "
                          "a registry under a supervisord in --dir")
    reg.add_argument("--dir", type=Path)
    reg.add_argument("--port", type=int)
    prom = sub.add_parser("prometheus", help="promtool check config FILE")
    prom.add_argument("action", choices=["check"])
    prom.add_argument("file", type=Path)


def run_tool_command(args: argparse.Namespace) -> int:
    """Run a tool sub-command."""
    if args.command == "kafka":
        return _kafka(args)
    if args.command == "postgres":
        return _postgres(args)
    if args.command == "nginx":
        return _nginx(args)
    if args.command == "jaeger":
        return _jaeger(args)
    if args.command == "registry":
        return _registry(args)
    print(prometheus.check_config(args.file))
    return 0


def _kafka(args: argparse.Namespace) -> int:
    if args.action == "classpath":
        print(ensure_classpath())
        return 0
    if args.dir is None:
        raise SystemExit("--dir is required")
    base = args.dir.absolute()
    target = open_kafka(base, args.brokers, args.heap, args.port)
    nodes = target.nodes if isinstance(target, KafkaCluster) else [target]
    running = all(n.is_running() for n in nodes)
    if args.action == "start":
        if not running:
            target.start(args.timeout)  # supervisord keeps the JVMs running after we exit
        print(target.bootstrap_servers)
        return 0
    if args.action == "stop":
        target.stop()
        return 0
    if not running:
        print("stopped")
        return 3
    print(json.dumps({"bootstrap_servers": target.bootstrap_servers,
                      "supervisor": str(nodes[0].supervisor.conf),
                      "nodes": [_node(n) for n in nodes]}, indent=2))
    return 0


def _node(node: KafkaBroker) -> dict[str, Any]:
    return {"node_id": node.node_id, "pid": node.pid, "port": node.port,
            "controller_port": node.controller_port, "log": str(node.log_file)}


def _postgres(args: argparse.Namespace) -> int:
    base = args.dir.absolute()
    if args.action == "start":
        port = args.port
        if port is None and (base / STATE_FILE).exists():
            port = PostgresCluster.existing(base).port  # keep a restarted cluster's URL
        print(PostgresCluster(base, port, durable=args.durable).start().url(driver=None))
    elif args.action == "stop":
        PostgresCluster.existing(base).stop()
    else:
        print(PostgresCluster.existing(base).url(args.database, driver=None))
    return 0


def _nginx(args: argparse.Namespace) -> int:
    if args.action == "test":
        if args.conf is None:
            raise SystemExit("--conf is required")
        print(nginx.check_config(args.conf))
        return 0
    target = nginx.deploy_dir() / "nginx" / nginx.COMPOSE_CONF_NAME
    text = nginx.render_compose()
    if args.check:
        if (target.read_text() if target.exists() else "") != text:
            print(f"{target} is out of date; run without --check")
            return 1
        print(f"{target} is up to date")
        return 0
    target.write_text(text)
    print(f"wrote {target}")
    return 0


def _jaeger(args: argparse.Namespace) -> int:
    if args.action == "build":
        print(jaeger.ensure_binary(report=True))
        return 0
    target = jaeger.compose_config_path()
    if args.check:
        if not jaeger.compose_config_current():
            print(f"{target} is out of date; run without --check")
            return 1
        print(f"{target} is up to date")
        return 0
    target.write_text(jaeger.render_compose())
    print(f"wrote {target}")
    return 0


def _registry(args: argparse.Namespace) -> int:
    if args.action == "fetch":
        print(ensure_registry())
        return 0
    if args.dir is None:
        raise SystemExit("--dir is required")
    port_file = args.dir.absolute() / "registry-port"
    saved = int(port_file.read_text()) if port_file.is_file() else None
    if args.action == "stop":  # its supervisord, whether or not it ever became ready
        Registry(args.dir, saved).close()
        return 0
    registry = Registry(args.dir, args.port or saved)
    args.dir.mkdir(parents=True, exist_ok=True)
    port_file.write_text(f"{registry.port}\n")  # before starting: `stop` must find it
    try:
        registry.start()  # supervisord keeps it running after we exit
    except BaseException:
        registry.close()
        raise
    print(registry.ccompat_url)
    return 0
