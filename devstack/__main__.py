"""``python -m devstack``: the local stack and the throwaway infrastructure behind the tests.

    python -m devstack up [--dir DIR] [--sso-replicas 2] [--loyalty-replicas 1] [--brokers 3|1]
        [--postgres ha|simple]
        [--https-port 8443] [--http2-grpc-port 44044] [--prometheus-port 9090]
        [--no-prometheus] [--no-jaeger] [--no-443] [--no-install] [--fresh]
    python -m devstack status [--dir DIR] [--json]
    python -m devstack restart COMPONENT [--dir DIR]       # e.g. sso-1, kafka-2, patroni-2
    python -m devstack stop COMPONENT... [--dir DIR]       # stays stopped; `kafka`: every broker
    python -m devstack start COMPONENT... [--dir DIR]      # start stopped ones, wait until ready
    python -m devstack logs COMPONENT [--dir DIR] [-n 40]
    python -m devstack down [--dir DIR]
    python -m devstack kafka start|status|stop --dir DIR [--brokers N] [--port P] [--heap 512m]
    python -m devstack kafka classpath                     # resolve the broker jars once
    python -m devstack registry fetch                      # Apicurio Registry, fetched once
    python -m devstack registry start|stop --dir DIR [--port P]
    python -m devstack postgres start|url|stop --dir DIR [--port P] [--durable]
    python -m devstack nginx render-compose [--check]      # deploy/nginx/nginx.compose.conf
    python -m devstack nginx test --conf FILE              # nginx -t
    python -m devstack jaeger build                        # Jaeger v2 from Go modules, once
    python -m devstack jaeger render-compose [--check]     # deploy/jaeger/jaeger.compose.yaml
    python -m devstack prometheus check FILE               # promtool check config
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from devstack import stack
from devstack.common import DevstackError
from devstack.tools_cli import add_tool_commands, run_tool_command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description="The production topology (PostgreSQL primary+replica, Kafka, sso replicas, "
                    "loyalty, nginx TLS gateway, Prometheus) on this machine under supervisord, "
                    "and the throwaway infrastructure of the tests.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--dir", type=Path, default=stack.DEFAULT_DIR,
                       help=f"configs, data, logs, supervisord (default {stack.DEFAULT_DIR})")
        return p

    start = with_dir(sub.add_parser("up", help="start the stack; return when it serves"))
    start.add_argument("--sso-replicas", type=int, default=2, metavar="N")
    start.add_argument("--loyalty-replicas", type=int, default=1, metavar="N")
    start.add_argument("--brokers", type=int, default=3, choices=[1, 3],
                       help="Kafka brokers: a 3-node KRaft cluster (default; topics replicated "
                            "3 times, 2 in sync), or 1")
    start.add_argument("--postgres", default="ha", choices=["ha", "simple"],
                       help="ha (default): etcd, three Patroni members and HAProxy; simple: a "
                            "primary and a streaming replica (quicker to start)")
    start.add_argument("--https-port", type=int, metavar="P",
                       help=f"gateway TLS port (default {stack.DEFAULT_HTTPS_PORT}, plus 443 "
                            "when free and permitted)")
    start.add_argument("--http2-grpc-port", type=int, metavar="P",
                       help="gateway plaintext HTTP/2 port for gRPC from services "
                            f"(default {stack.DEFAULT_GRPC_GATEWAY_PORT})")
    start.add_argument("--prometheus-port", type=int, metavar="P",
                       help=f"default {stack.DEFAULT_PROMETHEUS_PORT}")
    start.add_argument("--no-prometheus", action="store_true", help="do not run Prometheus")
    start.add_argument("--no-jaeger", action="store_true",
                       help="do not run Jaeger (the services then export no spans)")
    start.add_argument("--no-443", action="store_true", help="never listen on 443 as well")
    start.add_argument("--no-install", action="store_true",
                       help="never apt-get install missing Debian packages")
    start.add_argument("--fresh", action="store_true",
                       help="discard the data of a previous (stopped) stack in --dir first")
    show = with_dir(sub.add_parser("status", help="what runs and where"))
    show.add_argument("--json", action="store_true", help="the plan with process states")
    again = with_dir(sub.add_parser("restart", help="restart one component, wait until ready"))
    again.add_argument("component")
    halt = with_dir(sub.add_parser("stop", help="stop components (or a group: kafka) until "
                                                 "`start`"))
    halt.add_argument("components", nargs="+", metavar="COMPONENT")
    resume = with_dir(sub.add_parser("start", help="start stopped components, wait until "
                                                   "ready"))
    resume.add_argument("components", nargs="+", metavar="COMPONENT")
    log = with_dir(sub.add_parser("logs", help="the end of one component's log"))
    log.add_argument("component")
    log.add_argument("-n", "--lines", type=int, default=40)
    with_dir(sub.add_parser("down", help="stop every process of the stack"))
    add_tool_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = _parser().parse_args(argv)
    directory: Path = getattr(args, "dir", None) or stack.DEFAULT_DIR
    directory = directory.absolute()
    try:
        if args.command == "up":
            if args.sso_replicas < 1 or args.loyalty_replicas < 1:
                print("error: at least one sso and one loyalty replica", file=sys.stderr)
                return 2
            return stack.up(stack.Options(
                directory=directory, sso_replicas=args.sso_replicas,
                loyalty_replicas=args.loyalty_replicas, brokers=args.brokers,
                postgres=args.postgres,
                https_port=args.https_port, grpc_gateway_port=args.http2_grpc_port,
                prometheus=not args.no_prometheus, prometheus_port=args.prometheus_port,
                jaeger=not args.no_jaeger,
                also_443=not args.no_443, install=not args.no_install, fresh=args.fresh))
        if args.command == "status":
            return stack.status(directory, args.json)
        if args.command == "restart":
            return stack.restart(directory, args.component)
        if args.command == "stop":
            return stack.stop(directory, args.components)
        if args.command == "start":
            return stack.start(directory, args.components)
        if args.command == "logs":
            return stack.logs(directory, args.component, args.lines)
        if args.command == "down":
            return stack.down(directory)
        return run_tool_command(args)
    except DevstackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
