"""Checks a command makes before it starts, each mistake reported as one line with a hint.

The CLI prints a :class:`StartupError` as it is and exits non-zero; nothing here prints a
traceback.
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.exc import ArgumentError

from authloyalty.platform.engines import normalise_url
from authloyalty.platform.files import private_dir
from authloyalty.settings import Settings

SUPPORTED_URLS = "postgresql://USER:PASSWORD@HOST:PORT/DB or sqlite:///PATH"
DATA_DIR_HINT = "choose another with --data-dir"


class StartupError(Exception):
    """A mistake that stops a command before it starts; the message is one line."""


@dataclass(frozen=True)
class Listener:
    """A port a command will listen on, and the option that moves it."""

    what: str  # e.g. "gRPC", "sso HTTP"
    host: str
    port: int
    option: str  # e.g. "--grpc-port"


def database_urls(settings: Settings) -> list[tuple[str, str]]:
    """Every database URL configured, with the option or key that set it."""
    found = [("--database-url", settings.database_url)]
    for service in ("sso", "loyalty"):
        db = getattr(settings, service).database
        found += [(f"{service}.database.url", db.url), (f"{service}.database.read_url",
                                                         db.read_url)]
    return [(key, url) for key, url in found if url]


def check_database_urls(settings: Settings) -> None:
    """Refuse a URL that is neither PostgreSQL nor SQLite before anything connects."""
    for key, url in database_urls(settings):
        try:
            normalise_url(url)
        except (ValueError, ArgumentError):
            scheme = url.split("://", 1)[0] if "://" in url else None
            what = f"unsupported scheme {scheme!r}" if scheme else "not a database URL"
            raise StartupError(f"{key}: {what}: use {SUPPORTED_URLS}") from None


def uses_data_dir(settings: Settings, *, keys: bool) -> bool:
    """Whether the command keeps a SQLite file (or, with ``keys``, the signing keys) there."""
    for service in ("sso", "loyalty"):
        if not (getattr(settings, service).database.url or settings.database_url):
            return True
    return keys and settings.sso.signing_keys_dir is None and settings.mode != "production"


def check_data_dir_path(path: Path) -> None:
    """Refuse a data dir that is a file, or that a file in its path stops from existing."""
    if path.exists() and not path.is_dir():
        raise StartupError(f"data dir {path} is a file, not a directory: {DATA_DIR_HINT}")
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise StartupError(f"cannot create data dir {path}: {blocking} is a file, not a "
                           f"directory: {DATA_DIR_HINT}")


def check_data_dir(path: Path) -> None:
    """Create the data dir (0700) if missing, and make sure files can be written in it."""
    check_data_dir_path(path)
    if path.is_dir():
        _check_writable(path)  # before private_dir's warning about its mode
    try:
        private_dir(path)
    except OSError as exc:
        raise StartupError(
            f"cannot create data dir {path}: {_reason(exc)}: {DATA_DIR_HINT}") from None
    _check_writable(path)


def _check_writable(path: Path) -> None:
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise StartupError(
            f"data dir {path} is not writable ({_reason(exc)}): {DATA_DIR_HINT} "
            "or fix its permissions") from None


def has_data(settings: Settings) -> bool:
    """Whether sso's data exists: its SQLite file in the data dir (a server URL always has)."""
    if settings.sso.database.url or settings.database_url:
        return True
    return (Path(settings.data_dir) / "sso.db").is_file()


def check_ports(listeners: list[Listener]) -> None:
    """Refuse ports another process listens on (0 picks a free one: nothing to check)."""
    seen: dict[int, Listener] = {}
    for listener in listeners:
        if listener.port == 0:
            continue
        other = seen.setdefault(listener.port, listener)
        if other is not listener:
            raise StartupError(f"{other.option} and {listener.option} are both {listener.port}: "
                               "give each its own port")
        _check_port(listener)


def _check_port(listener: Listener) -> None:
    host, port = listener.host, listener.port
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {host}: {exc.strerror} (--host)") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"port {port} ({listener.what}) is in use — is authloyalty already running? "
                    f"Choose another with {listener.option}") from None
            raise StartupError(f"cannot listen on {host}:{port} ({listener.what}): "
                               f"{_reason(exc)}: choose another with {listener.option}") from None


def connection_problem(exc: BaseException, settings: Settings) -> str | None:
    """The line for a failure to reach PostgreSQL, or None if ``exc`` is something else."""
    chain = list(_chain(exc))
    reason = next(filter(None, map(_connect_reason, chain)), None)
    if reason is None or not any(map(_raised_in_asyncpg, chain)):
        return None  # e.g. a Kafka broker refusing: not PostgreSQL's line
    hosts = []
    for _, url in database_urls(settings):
        if url.startswith(("postgres://", "postgresql")):
            where = urlsplit(url).netloc.rpartition("@")[2]
            where = where if ":" in where or "," in where else f"{where}:5432"
            if where not in hosts:
                hosts.append(where)
    return f"cannot connect to PostgreSQL at {' or '.join(hosts) or 'its URL'}: {reason}"


def _connect_reason(exc: BaseException) -> str | None:
    import asyncpg

    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return _reason(exc)
    if isinstance(exc, (asyncpg.InvalidAuthorizationSpecificationError,
                        asyncpg.InvalidCatalogNameError, asyncpg.InvalidPasswordError)):
        return str(exc)
    return None


def _raised_in_asyncpg(exc: BaseException) -> bool:
    """Whether ``exc`` passed through the PostgreSQL driver (connecting, or a query)."""
    return any(f"{os.sep}asyncpg{os.sep}" in frame.f_code.co_filename
               for frame, _ in traceback.walk_tb(exc.__traceback__))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it (SQLAlchemy keeps the driver's error in ``orig``)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        todo += [current.__cause__, current.__context__,
                 orig if isinstance(orig, BaseException) else None]


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()
