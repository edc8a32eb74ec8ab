"""Where a service's database is (:class:`DatabaseTarget`) and the SQLAlchemy engine for it:
PostgreSQL (asyncpg) or SQLite (aiosqlite), each with the settings it needs.

:mod:`authloyalty.platform.database` runs the statements; engines serve migrations and SQLite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy import event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from authloyalty.platform.files import private_dir, private_file, warn_if_exposed

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class DatabaseTarget:
    """A resolved database: driver URL plus the PostgreSQL schema to use, if any."""

    url: str
    schema: str | None = None
    pool_size: int = 10
    echo: bool = False
    # A read replica: any node may answer. Otherwise only the leader may (see asyncpg_dsn).
    replica: bool = False

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite backend."""
        return self.url.startswith("sqlite")

    def describe(self) -> str:
        """The URL without its password, for logs and the start-up banner."""
        shown = make_url(self.url).render_as_string(hide_password=True)
        return f"{shown} (schema {self.schema})" if self.schema else shown


def _multi_host(raw: str) -> str:
    """A libpq multi-host URL (``postgresql://user@h1:5432,h2:5433/db?...``) in SQLAlchemy's
    spelling (``postgresql://user@/db?host=h1:5432&host=h2:5433&...``); other URLs as given.
    Every host gets a port (5432 unless given), as SQLAlchemy's asyncpg dialect requires."""
    scheme, sep, rest = raw.partition("://")
    authority, _, tail = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    if not sep or "," not in hosts:
        return raw
    path, _, query = tail.partition("?")
    pairs = [h if ":" in h else f"{h}:5432" for h in hosts.split(",") if h]
    params = "&".join(f"host={quote(pair, safe=':')}" for pair in pairs)
    return f"{scheme}://{userinfo}{at}/{path}?{params}{'&' + query if query else ''}"


def asyncpg_dsn(url: str, *, leader: bool = True) -> str:
    """The DSN asyncpg connects with for a normalised PostgreSQL ``url``: several hosts (a
    multi-host URL) go back into the authority, where asyncpg, like libpq, reads them and tries
    each in turn (honouring ``target_session_attrs``).

    A ``leader`` DSN asks for ``target_session_attrs=read-write`` unless the URL chose
    otherwise: a connection that lands on a standby or a read-only former leader (a proxy that
    has not noticed a failover yet) is refused when it opens, before it can serve a read that
    must come from the leader (a session just ended, a refresh token just spent). The check
    reads what the server reports at start-up (PostgreSQL 14+): no extra round trip."""
    parsed = make_url(url)
    if leader and "target_session_attrs" not in parsed.query:
        parsed = parsed.update_query_dict({"target_session_attrs": "read-write"})
    hosts = parsed.query.get("host")
    if not hosts:
        return parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    listed = (hosts,) if isinstance(hosts, str) else tuple(hosts)
    user = quote(parsed.username or "", safe="")
    if parsed.password is not None:
        user += ":" + quote(str(parsed.password), safe="")
    query = urlencode({k: v for k, v in parsed.query.items() if k != "host"}, doseq=True)
    return (f"postgresql://{user}{'@' if user else ''}{','.join(listed)}"
            f"/{quote(parsed.database or '', safe='')}{'?' + query if query else ''}")


def normalise_url(raw: str) -> str:
    """Accept plain ``postgresql://`` / ``sqlite:///`` URLs and pick our async drivers.

    A PostgreSQL URL may name several hosts, as libpq's do
    (``postgresql://user@h1:5432,h2:5432/db?target_session_attrs=read-write``): connections
    go to the first host that answers and matches ``target_session_attrs``."""
    url: URL = make_url(_multi_host(raw))
    backend = url.get_backend_name()
    if backend in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    else:
        raise ValueError(f"unsupported database URL scheme {url.drivername!r}")
    return url.render_as_string(hide_password=False)


def resolve_target(
    service: str,
    own_url: str | None,
    shared_url: str | None,
    data_dir: Path,
    *,
    schema: str | None = None,
    pool_size: int = 10,
    echo: bool = False,
    replica: bool = False,
) -> DatabaseTarget:
    """Pick a service's database: its own URL, a schema in the shared one, or a SQLite file."""
    if own_url:
        url = normalise_url(own_url)
    elif shared_url:
        url = normalise_url(shared_url)
        schema = schema or service
    else:
        private_dir(data_dir)
        url = f"sqlite+aiosqlite:///{(data_dir / f'{service}.db').resolve()}"
    if url.startswith("sqlite"):
        schema = None
    if schema is not None and not _SCHEMA_RE.match(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    return DatabaseTarget(url=url, schema=schema, pool_size=pool_size, echo=echo,
                          replica=replica)


def create_engine(target: DatabaseTarget) -> AsyncEngine:
    """Create the engine; SQLite gets WAL, a busy timeout and write-locking transactions."""
    if target.is_sqlite:
        return _sqlite_engine(target)
    connect_args: dict[str, Any] = {}
    if target.schema:
        connect_args["server_settings"] = {"search_path": target.schema}
    # Migrations and schema checks only: the services' queries go through asyncpg's pool
    # (platform.database.PgDatabase), so this engine keeps no pool of its own.
    return create_async_engine(
        target.url,
        poolclass=NullPool,
        echo=target.echo,
        connect_args=connect_args,
    )


def _private_sqlite_file(url: str) -> None:
    """Create the database file (0600) before SQLite does, so that it and its -wal/-shm
    files are private; warn about existing ones others may read."""
    database = make_url(url).database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if path.parent.is_dir():
        private_file(path)
        warn_if_exposed([path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")])


def _sqlite_engine(target: DatabaseTarget) -> AsyncEngine:
    _private_sqlite_file(target.url)
    engine = create_async_engine(
        target.url, echo=target.echo, poolclass=NullPool if ":memory:" in target.url else None
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when a transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: concurrent read-then-write transactions
        # (balance checks, refresh rotation) queue on busy_timeout instead of failing.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine

