"""The ``authloyalty`` command: run the services, migrate their databases, manage admins and
signing keys."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Coroutine, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.contextvars import bind_contextvars, bound_contextvars

from authloyalty import __version__
from authloyalty.bootstrap import (
    EmbeddedSystem,
    build_embedded,
    build_loyalty_process,
    build_sso,
    build_sso_process,
    load_keys,
    loyalty_app,
    loyalty_database,
    sso_app,
    sso_database,
)
from authloyalty.loyalty.settings import LoyaltySettings
from authloyalty.platform import telemetry
from authloyalty.platform.bus import InProcessBus
from authloyalty.platform.engines import create_engine
from authloyalty.platform.grpc import stop_server
from authloyalty.platform.httpserver import HeadLimits, limited_protocol
from authloyalty.platform.logging import configure_logging
from authloyalty.platform.migrations import SchemaOutOfDate, ensure_current, upgrade
from authloyalty.platform.settings import ConfigError, RequestHeaderLimits
from authloyalty.platform.tokens import write_new_key
from authloyalty.settings import Settings, load_settings
from authloyalty.sso.email_twins import find_twins
from authloyalty.sso.grpc import build_grpc_server
from authloyalty.sso.service import AuthService
from authloyalty.sso.settings import SsoSettings
from authloyalty.startup import (
    Listener,
    StartupError,
    check_data_dir,
    check_data_dir_path,
    check_database_urls,
    check_ports,
    connection_problem,
    has_data,
    uses_data_dir,
)

log = logging.getLogger("authloyalty")
# Commands that run one service: their log lines name it (the others' name the CLI).
SERVICES = frozenset({"sso", "loyalty", "relay"})


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (default: $CONFIG_PATH)")
    parser.add_argument("--data-dir", type=Path, help="where embedded data and keys live")
    parser.add_argument("--database-url",
                        help="PostgreSQL URL shared by both services (one schema each)")


def _parser() -> argparse.ArgumentParser:
    sso, loyalty = SsoSettings(), LoyaltySettings()
    parser = argparse.ArgumentParser(
        prog="authloyalty",
        description="authloyalty: a loyalty-points platform with its own authorization "
                    "service (sso).",
        epilog="Run authloyalty COMMAND --help for a command's options. The production "
               "topology on one machine runs with make stack-up (python -m devstack).")
    parser.add_argument("--version", action="version", version=f"authloyalty {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run sso and loyalty in one process")
    _common(up)
    up.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    up.add_argument("--sso-port", type=int, metavar="N",
                    help=f"sso's HTTP port (default {sso.http_port}; 0 picks a free one)")
    up.add_argument("--loyalty-port", type=int, metavar="N",
                    help=f"loyalty's HTTP port (default {loyalty.http_port}; 0 picks a free one)")
    up.add_argument("--grpc-port", type=int, metavar="N",
                    help=f"sso's gRPC port (default {sso.grpc_port}; 0 picks a free one)")
    up.add_argument("--admin-email", metavar="EMAIL",
                    help="create or promote this admin at start (with --admin-password)")
    up.add_argument("--admin-password", metavar="PASSWORD",
                    help="the start-up admin's password when it is created")

    migrate = sub.add_parser("migrate", help="apply the services' migrations")
    _common(migrate)
    migrate.add_argument("--service", choices=["sso", "loyalty", "all"], default="all",
                         help="whose migrations (default all)")

    for name, text in (("sso", "run the sso service alone (Kafka relay included)"),
                       ("loyalty", "run the loyalty service alone (Kafka consumer included)"),
                       ("relay", "run only sso's outbox relay")):
        service = sub.add_parser(name, help=text)
        _common(service)
        if name == "sso":
            service.add_argument("--no-relay", action="store_true",
                                 help="leave the outbox to authloyalty relay processes")

    admin = sub.add_parser("admin", help="manage admins")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    create = admin_sub.add_parser("create", help="create an admin or promote a user")
    _common(create)
    create.add_argument("--email", required=True, help="the admin's email (their login)")
    create.add_argument("--password", required=True,
                        help=f"the new admin's password (at least {sso.password_min_length} "
                             "characters); an existing user's stays unless --reset-password")
    create.add_argument("--reset-password", action="store_true",
                        help="set an existing user's password to --password")
    create.add_argument("--init", action="store_true",
                        help="initialise a data dir that holds no authloyalty data yet")

    revoke = admin_sub.add_parser("revoke-sessions",
                                  help="end every session of a user (all services refuse them)")
    _common(revoke)
    revoke.add_argument("--email", required=True, help="the user's email")

    keys = sub.add_parser("keys", help="manage token signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    generate = keys_sub.add_parser("generate", help="add a signing key (the newest signs)")
    generate.add_argument("--dir", type=Path, required=True,
                          help="directory of the signing keys, created if missing "
                               "(sso.signing_keys_dir)")
    generate.add_argument("--algorithm", choices=["EdDSA", "ES256", "RS256"], default="EdDSA",
                          help="signature algorithm (default EdDSA)")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    if args.database_url:
        overrides["database_url"] = args.database_url
    sso: dict[str, Any] = {}
    loyalty: dict[str, Any] = {}
    for name, target, key in (("sso_port", sso, "http_port"), ("grpc_port", sso, "grpc_port"),
                              ("loyalty_port", loyalty, "http_port"),
                              ("host", sso, "http_host"), ("host", loyalty, "http_host")):
        value = getattr(args, name, None)
        if value is not None:
            target[key] = value
    if sso:
        overrides["sso"] = sso
    if loyalty:
        overrides["loyalty"] = loyalty
    admin = {k: v for k, v in (("email", getattr(args, "admin_email", None)),
                               ("password", getattr(args, "admin_password", None))) if v}
    if admin:
        overrides["admin"] = admin
    return load_settings(args.config, **overrides)


class _Server(uvicorn.Server):
    """A uvicorn server of one service that leaves signal handling to us (two run in one
    loop); every line logged while it serves names its service."""

    def __init__(self, config: uvicorn.Config, service: str) -> None:
        super().__init__(config)
        self.service = service

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield

    async def serve_as_service(self) -> None:
        """Serve, with ``service`` bound for this task and the tasks it starts."""
        bind_contextvars(service=self.service)  # the task's own copy of the context
        await self.serve()


def _server(app: FastAPI, service: str, host: str, port: int,
            headers: RequestHeaderLimits) -> _Server:
    # The protocol refuses request heads over the limits before buffering them (httpserver).
    protocol = limited_protocol(HeadLimits(headers.max_bytes, headers.max_fields))
    # proxy_headers off: uvicorn would otherwise take the client address from X-Forwarded-For
    # of any connection from 127.0.0.1, whatever sso.trusted_proxies says (sso/http.py decides
    # that, for the login throttle and the sessions list).
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            lifespan="off", server_header=False, http=protocol,
                            h11_max_incomplete_event_size=headers.max_bytes,
                            proxy_headers=False)
    return _Server(config, service)


def _banner(settings: Settings, system: EmbeddedSystem) -> str:
    sso = f"http://{settings.sso.http_host}:{settings.sso.http_port}"
    loyalty = f"http://{settings.loyalty.http_host}:{settings.loyalty.http_port}"
    return "\n".join([
        "authloyalty is running (embedded mode)",
        f"  sso      {sso}      Swagger UI: {sso}/swagger",
        f"  loyalty  {loyalty}      Swagger UI: {loyalty}/swagger",
        f"  sso gRPC {settings.sso.http_host}:{settings.sso.grpc_port}   (service auth.Auth)",
        f"  sso database:     {system.sso.target.describe()}",
        f"  loyalty database: {system.loyalty.target.describe()}",
        f"Create an admin:  {_self_command()} admin create --email E --password P"
        f" --data-dir {settings.data_dir}",
        "Stop with Ctrl+C.",
    ])


def _self_command() -> str:
    """How to run this command again from the same directory: ``authloyalty`` when that name
    on PATH is this program, else the path it was started by (``.venv/bin/authloyalty``)."""
    started = sys.argv[0]
    on_path = shutil.which("authloyalty")
    if Path(started).name != "authloyalty":
        return f"{sys.executable} -m authloyalty.cli"
    if on_path and Path(on_path).resolve() == Path(started).resolve():
        return "authloyalty"
    if not os.path.isabs(started):
        return started  # as typed, relative to the directory it was typed in
    relative = os.path.relpath(started)
    return started if relative.startswith("..") else relative


# Young-generation collections every 50,000 net allocations instead of 700, and older
# generations correspondingly rarer. With the defaults, a balance read's p99 latency was 79 ms
# against a p50 of 6 ms (collections of a heap holding thousands of cached token claims);
# with these it was 10 ms, and throughput rose by about a tenth (`make bench`, bench/README.md).
# (Tried and dropped: gc.freeze() after start-up with a full-collection threshold of 100 gave
# a p99 of 505 ms in the same benchmark.)
GC_THRESHOLDS = (50_000, 50, 1000)


def _tune_gc() -> None:
    """Collect cyclic garbage less often (the services allocate many short-lived objects)."""
    gc.set_threshold(*GC_THRESHOLDS)


async def _serve(servers: list[_Server], banner: str) -> bool:
    """Serve until SIGINT/SIGTERM; False if a server could not start."""
    loop = asyncio.get_running_loop()
    _tune_gc()

    def _exit() -> None:
        for server in servers:
            # A second Ctrl+C stops waiting for open connections (uvicorn's own rule).
            server.force_exit = server.should_exit
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _exit)
    serving = [asyncio.create_task(s.serve_as_service()) for s in servers]
    while not all(s.started for s in servers):
        if any(t.done() for t in serving):
            break
        await asyncio.sleep(0.05)
    started = all(s.started for s in servers)
    if started:
        print(banner, flush=True)
    else:
        _exit()
    await asyncio.gather(*serving, return_exceptions=True)
    # After a forced stop, requests still running are cancelled now, while their databases
    # are open, rather than when the event loop closes.
    unanswered = [task for server in servers for task in server.server_state.tasks]
    for task in unanswered:
        task.cancel()
    await asyncio.gather(*unanswered, return_exceptions=True)
    return started


@contextlib.asynccontextmanager
async def _grpc(service: AuthService, settings: Settings) -> AsyncIterator[int]:
    """sso's gRPC server for the duration of the block; yields its port."""
    server, port = build_grpc_server(service, settings.sso.http_host, settings.sso.grpc_port,
                                     settings.sso.grpc_clients)
    await server.start()
    try:
        yield port
    finally:
        await stop_server(server)


async def _up(settings: Settings) -> int:
    check_ports([Listener("sso HTTP", settings.sso.http_host, settings.sso.http_port,
                          "--sso-port"),
                 Listener("loyalty HTTP", settings.loyalty.http_host,
                          settings.loyalty.http_port, "--loyalty-port"),
                 Listener("gRPC", settings.sso.http_host, settings.sso.grpc_port,
                          "--grpc-port")])
    telemetry.configure(settings.telemetry, "authloyalty")
    system = build_embedded(settings)
    with bound_contextvars(service="sso"):  # the bootstrap admin, sso's background jobs
        await system.start()
    servers = [
        _server(sso_app(system.sso), "sso", settings.sso.http_host, settings.sso.http_port,
                settings.sso.request_headers),
        _server(loyalty_app(system.loyalty), "loyalty", settings.loyalty.http_host,
                settings.loyalty.http_port, settings.loyalty.request_headers),
    ]
    try:
        async with _grpc(system.sso.service, settings):
            started = await _serve(servers, _banner(settings, system))
    finally:
        await system.stop()
    return 0 if started else 1


async def _run_sso(settings: Settings, relay: bool) -> int:
    check_ports([Listener("sso HTTP", settings.sso.http_host, settings.sso.http_port,
                          "sso.http_port in the config"),
                 Listener("gRPC", settings.sso.http_host, settings.sso.grpc_port,
                          "sso.grpc_port in the config")])
    telemetry.configure(settings.telemetry, "authloyalty-sso")
    process = build_sso_process(settings, run_relay=relay)
    try:
        await process.start()
        cfg = settings.sso
        async with _grpc(process.sso.service, settings) as grpc_port:
            started = await _serve(
                [_server(sso_app(process.sso), "sso", cfg.http_host, cfg.http_port,
                         cfg.request_headers)],
                f"sso listening on http://{cfg.http_host}:{cfg.http_port}, "
                f"gRPC on {cfg.http_host}:{grpc_port}")
    finally:
        await process.stop()
    return 0 if started else 1


async def _run_loyalty(settings: Settings) -> int:
    check_ports([Listener("loyalty HTTP", settings.loyalty.http_host,
                          settings.loyalty.http_port, "loyalty.http_port in the config")])
    telemetry.configure(settings.telemetry, "authloyalty-loyalty")
    process = build_loyalty_process(settings)
    try:
        await process.start()
        cfg = settings.loyalty
        started = await _serve(
            [_server(loyalty_app(process.loyalty), "loyalty", cfg.http_host, cfg.http_port,
                     cfg.request_headers)],
            f"loyalty listening on http://{cfg.http_host}:{cfg.http_port}")
    finally:
        await process.stop()
    return 0 if started else 1


async def _run_relay(settings: Settings) -> int:
    telemetry.configure(settings.telemetry, "authloyalty-relay")
    process = build_sso_process(settings, run_relay=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await process.start()
        print("outbox relay running", flush=True)
        await stop.wait()
    finally:
        await process.stop()
    return 0


async def _migrate(settings: Settings, service: str) -> int:
    targets = [("sso", sso_database(settings)), ("loyalty", loyalty_database(settings))]
    for name, target in targets:
        if service not in (name, "all"):
            continue
        engine = create_engine(target)
        try:
            await upgrade(name, engine, target)
            twins = await _email_twins(engine) if name == "sso" else []
        finally:
            await engine.dispose()
        print(f"migrations applied: {name} ({target.describe()})")
        for group in twins:
            print(f"warning: users {', '.join(str(u) for u in group)} have emails that are one "
                  "address under Unicode NFC; they were left unchanged and only the one stored "
                  "in NFC can log in: merge or delete by hand", file=sys.stderr)
    return 0


async def _email_twins(engine: AsyncEngine) -> list[list[UUID]]:
    async with engine.connect() as conn:
        return await conn.run_sync(find_twins)


async def _admin_create(settings: Settings, args: argparse.Namespace) -> int:
    email, password, reset = args.email, args.password, args.reset_password
    if settings.events.backend == "kafka":
        # Production: write to sso only; the running relay delivers the registration event.
        sso = build_sso(settings, InProcessBus(), load_keys(settings))
        try:
            await ensure_current("sso", sso.engine)
            change = await sso.service.make_admin(email, password, reset_password=reset)
        finally:
            await sso.dispose()
    else:
        system = build_embedded(settings)
        try:
            await system.migrate()
            change = await system.sso.service.make_admin(email, password, reset_password=reset)
            # Deliver the registration event now, so the new admin's account opens at once.
            await system.sso.relay.run_once()
        finally:
            await system.stop()
    print(_admin_report(email, change.user_id, change.outcome, change.password_reset))
    return 0


def _admin_report(email: str, user_id: UUID, outcome: str, password_reset: bool) -> str:
    """What ``admin create`` did, in one line."""
    who = f"{email} (user_id {user_id})"
    if outcome == "created":
        return f"created admin {who}"
    done = f"{who} is already an admin" if outcome == "already an admin" else \
        f"promoted {who} to admin"
    if password_reset:
        return f"{done}; password reset"
    return f"{done}; password unchanged (use --reset-password to set it)"


def _preflight(args: argparse.Namespace, settings: Settings) -> None:
    """The checks made before a command touches anything (each failure is one line)."""
    check_database_urls(settings)
    data_dir = Path(settings.data_dir)
    if args.command == "admin" and uses_data_dir(settings, keys=False) \
            and not has_data(settings) and not getattr(args, "init", False):
        check_data_dir_path(data_dir)
        init = " (or pass --init to create one there)" if args.admin_command == "create" else ""
        raise StartupError(
            f"no authloyalty data in {data_dir.resolve()}: pass the data dir of your server "
            f"with --data-dir{init}")
    if args.command in ("up", "migrate", "admin") \
            and uses_data_dir(settings, keys=args.command != "migrate"):
        check_data_dir(data_dir)


async def _admin_revoke(settings: Settings, email: str) -> int:
    # Only sso's tables are written; the running relay (of `up` or `sso`) announces the
    # revocations, so every loyalty process, including an embedded one, learns of them.
    sso = build_sso(settings, InProcessBus(), load_keys(settings))
    try:
        if settings.events.backend == "inprocess":
            await upgrade("sso", sso.engine, sso.target)
        else:
            await ensure_current("sso", sso.engine)
        ended = await sso.service.revoke_user_sessions(email)
    finally:
        await sso.dispose()
    print(f"ended {ended} session(s) of {email}")
    return 0


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run a server's main coroutine on uvloop where it exists (Linux, macOS): its event loop
    costs a fraction of asyncio's own per socket event, and every request is several of them
    (HTTP read and write, database round trips)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(main)
    return uvloop.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``authloyalty`` command."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "keys":
        path = write_new_key(args.dir, args.algorithm)
        print(f"new signing key: {path}")
        return 0
    try:
        settings = _settings(args)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"configuration error: {line}", file=sys.stderr)
        return 2
    # Before the checks: their warnings (a data dir others may read) are log lines too.
    configure_logging(settings.log_level, settings.log_format, access_log=settings.access_log,
                      service=args.command if args.command in SERVICES else "cli")
    try:
        _preflight(args, settings)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from authloyalty.platform.errors import DomainError

    try:
        if args.command == "up":
            return _run_loop(_up(settings))
        if args.command == "migrate":
            return asyncio.run(_migrate(settings, args.service))
        if args.command == "sso":
            return _run_loop(_run_sso(settings, relay=not args.no_relay))
        if args.command == "loyalty":
            return _run_loop(_run_loyalty(settings))
        if args.command == "relay":
            return _run_loop(_run_relay(settings))
        if args.admin_command == "revoke-sessions":
            return asyncio.run(_admin_revoke(settings, args.email))
        return asyncio.run(_admin_create(settings, args))
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except DomainError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except (ConfigError, SchemaOutOfDate) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        problem = connection_problem(exc, settings)
        if problem is None:
            raise
        print(f"error: {problem}", file=sys.stderr)
        return 1
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    sys.exit(main())
