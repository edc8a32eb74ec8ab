"""Throwaway PostgreSQL clusters (Debian's binaries) for tests, benchmarks and the local stack.

Clusters use loopback-only ``trust`` authentication and no password: they are never meant to
hold real data or be reachable from another machine. A cluster lives entirely in its base
directory (data, log, socket, ``devstack-postgres.json``). Tests and benchmarks run it with
PostgreSQL's own ``pg_ctl`` (:meth:`PostgresCluster.start`/``stop``); the stack runs the
foreground ``postgres`` of :meth:`PostgresCluster.component` under supervisord. As root, every
server-side tool runs as the ``postgres`` OS user.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from devstack.common import HOST, DevstackError, clean_env, free_port, tail
from devstack.components import Component
from devstack.packages import PG_ROOT

SUPERUSER = "postgres"
OS_USER = "postgres"
STATE_FILE = "devstack-postgres.json"
CONF_FILE = "devstack.conf"
# Unix socket paths are limited to 108 bytes (sun_path) including the ".s.PGSQL.NNNNN" name.
_MAX_SOCKET_DIR_LEN = 107 - len("/.s.PGSQL.65535")


def _version_key(path: Path) -> tuple[int, ...]:
    # Directory names are "15", "16", "9.6": compare numerically, not lexically ("9" > "15").
    try:
        return tuple(int(part) for part in path.parent.name.split("."))
    except ValueError:
        return (-1,)


def find_bindir() -> Path:
    """The newest PostgreSQL bin directory (Debian's ``postgresql`` package)."""
    found = sorted((d for d in PG_ROOT.glob("*/bin")
                    if (d / "initdb").is_file() and (d / "pg_ctl").is_file()),
                   key=_version_key, reverse=True)
    if not found:
        raise DevstackError(f"no PostgreSQL server binaries (initdb, pg_ctl) under {PG_ROOT}/*/bin:"
                            " run `make system-deps` or `apt-get install postgresql`")
    return found[0]


def scratch_dir(prefix: str = "pg-") -> Path:
    """A fresh base directory under /tmp that the postgres OS user can reach."""
    # /tmp keeps the unix socket path short and, unlike pytest's /tmp/pytest-of-root (0700),
    # every parent is traversable by the postgres user we drop to when running as root.
    parent = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(0o755)
    return path


def _is_root() -> bool:
    return os.geteuid() == 0


def _env() -> dict[str, str]:
    # Server messages in English so our error matching (e.g. "could not bind") works.
    return clean_env(LC_MESSAGES="C")


class PostgresCluster:
    """A throwaway PostgreSQL cluster living entirely in ``base_dir``."""

    def __init__(self, base_dir: Path, port: int | None = None, *, durable: bool = False,
                 bindir: Path | None = None) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "log"
        self.durable = durable
        self._bindir = bindir
        # An auto-picked port may be grabbed by someone else before the server binds it;
        # start() then retries with a new one. An explicit port is never changed.
        self._auto_port = port is None
        self._port = free_port() if port is None else port

    @property
    def port(self) -> int:
        """TCP port the server listens on (127.0.0.1 only)."""
        return self._port

    @property
    def host(self) -> str:
        """Host address the server listens on."""
        return HOST

    @property
    def bindir(self) -> Path:
        """Directory holding the PostgreSQL binaries used for this cluster."""
        if self._bindir is None:
            self._bindir = find_bindir()
        return self._bindir

    def url(self, database: str = "postgres", *, driver: str | None = "asyncpg") -> str:
        """A connection URL, e.g. ``postgresql+asyncpg://postgres@127.0.0.1:PORT/DB``."""
        scheme = "postgresql" if driver is None else f"postgresql+{driver}"
        return f"{scheme}://{SUPERUSER}@{HOST}:{self._port}/{quote(database, safe='')}"

    @classmethod
    def existing(cls, base_dir: Path) -> PostgresCluster:
        """Attach to a cluster previously set up in ``base_dir`` (reads its state file)."""
        base = Path(base_dir).absolute()
        try:
            state = json.loads((base / STATE_FILE).read_text())
        except FileNotFoundError:
            raise DevstackError(f"no cluster state in {base} ({STATE_FILE} missing); "
                                "was it started here?") from None
        return cls(base, int(state["port"]), durable=bool(state["durable"]),
                   bindir=Path(state["bindir"]))

    # -- lifecycle with pg_ctl ----------------------------------------------------------------

    def is_running(self) -> bool:
        """Whether a postmaster is running on this cluster's data directory."""
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        # pg_ctl status exits 0 when running, 3 when not, 4 when the data dir is unusable.
        return self._run([self.bin("pg_ctl"), "status", "-D", self.data_dir],
                         check=False).returncode == 0

    def start(self) -> Self:
        """Initialise the cluster if needed, write its settings and start it (``pg_ctl``)."""
        if self.is_running():
            raise DevstackError(f"a PostgreSQL server is already running in {self.data_dir}")
        self.prepare()
        attempts = 3 if self._auto_port else 1
        for attempt in range(attempts):
            offset = self.log_file.stat().st_size if self.log_file.exists() else 0
            proc = self._run([self.bin("pg_ctl"), "start", "-D", self.data_dir, "-w", "-t", "60",
                              "-l", self.log_file], check=False)
            if proc.returncode == 0:
                return self
            log = self._read_log(offset)
            if ("could not bind" in log or "Address already in use" in log) \
                    and attempt + 1 < attempts:
                self._port = free_port()
                self._write_conf()
                continue
            raise DevstackError(
                f"pg_ctl start failed for {self.data_dir} (exit {proc.returncode}):\n"
                f"{(proc.stdout + proc.stderr).strip()}\n--- tail of {self.log_file} ---\n"
                f"{tail(log)}")
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the server with ``pg_ctl stop -m fast``; a no-op if it is not running."""
        if not self.is_running():
            return
        proc = self._run([self.bin("pg_ctl"), "stop", "-D", self.data_dir, "-m", "fast", "-w",
                          "-t", "60"], check=False)
        # It may have exited between the status check and stop; only complain if still alive.
        if proc.returncode != 0 and self.is_running():
            raise DevstackError(f"pg_ctl stop failed:\n{proc.stdout}{proc.stderr}")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PostgresCluster(base_dir={str(self.base_dir)!r}, port={self._port})"

    # -- under supervisord --------------------------------------------------------------------

    def component(self, name: str, *, log: Path, depends_on: Sequence[str] = (),
                  setup: Callable[[], None] | None = None,
                  ready: Callable[[], bool] | None = None) -> Component:
        """The server in the foreground as a stack component; ``setup`` defaults to
        :meth:`prepare` (initdb, settings), ``ready`` to :meth:`accepts_connections`."""
        return Component(
            name=name, command=[str(self.bin("postgres")), "-D", str(self.data_dir)],
            ready=ready or self.accepts_connections, log=log, cwd=self.base_dir,
            depends_on=depends_on, setup=setup or self.prepare,
            user=OS_USER if _is_root() else None, env={"LC_MESSAGES": "C"},
            # SIGINT is PostgreSQL's "fast" shutdown; the postmaster stops its own children.
            stop_signal="INT", stop_wait=60, stop_as_group=False)

    def accepts_connections(self) -> bool:
        """Whether the server accepts connections (``pg_isready``)."""
        return subprocess.run([str(self.bin("pg_isready")), "-q", "-h", HOST, "-p",
                               str(self._port), "-t", "1"], env=_env(),
                              check=False).returncode == 0

    # -- SQL ----------------------------------------------------------------------------------

    def psql(self, sql: str, database: str = "postgres", *,
             variables: Mapping[str, str] | None = None) -> str:
        """Run SQL through ``psql`` and return its unaligned, tuples-only stdout."""
        # TCP with trust auth works as root and as any other user. SQL goes through stdin (not
        # -c) so each statement runs on its own, which CREATE/DROP DATABASE require.
        cmd = [str(self.bin("psql")), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
               "-d", self._conninfo(database)]
        for name, value in (variables or {}).items():
            cmd += ["-v", f"{name}={value}"]
        proc = subprocess.run(cmd, input=sql, capture_output=True, text=True, env=_env(),
                              check=False)
        if proc.returncode != 0:
            raise DevstackError(f"psql on {self.url(database, driver=None)} failed "
                                f"(exit {proc.returncode}):\n{proc.stderr.strip()}")
        return proc.stdout

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its plain ``postgresql://`` URL."""
        # psql's :'var' / :"var" interpolation does literal / identifier quoting for us.
        if self.psql("SELECT 1 FROM pg_database WHERE datname = :'name';",
                     variables={"name": name}).strip():
            raise DevstackError(f"database {name!r} already exists on {self!r}")
        self.psql('CREATE DATABASE :"name";', variables={"name": name})
        return self.url(name, driver=None)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting any sessions still using it."""
        self.psql('DROP DATABASE IF EXISTS :"name" WITH (FORCE);', variables={"name": name})

    # -- replication --------------------------------------------------------------------------

    def make_replica(self, base_dir: Path, port: int | None = None) -> PostgresCluster:
        """A streaming hot-standby copy of this (running) cluster, prepared but not started."""
        if not self.is_running():
            raise DevstackError(f"primary {self!r} is not running")
        replica = PostgresCluster(base_dir, port, durable=self.durable, bindir=self.bindir)
        if (replica.data_dir / "PG_VERSION").exists():
            raise DevstackError(f"{replica.data_dir} already holds a cluster")
        replica._prepare_base_dir()
        self._run([self.bin("pg_basebackup"), "-R", "-X", "stream", "-c", "fast", "-h", HOST,
                   "-p", str(self._port), "-U", SUPERUSER, "-D", replica.data_dir])
        # The backup copied the primary's devstack.conf (port, socket dir): rewrite it.
        replica.prepare()
        return replica

    def start_replica(self, base_dir: Path, port: int | None = None) -> PostgresCluster:
        """Create, start and return a streaming hot-standby replica of this cluster."""
        replica = self.make_replica(base_dir, port).start()
        deadline = time.monotonic() + 30
        while not replica.in_recovery():
            if time.monotonic() > deadline:
                replica.stop()
                raise DevstackError(f"replica {replica!r} did not enter recovery mode")
            time.sleep(0.1)
        return replica

    def in_recovery(self) -> bool:
        """Whether the server is a standby (``pg_is_in_recovery()``)."""
        return self.psql("SELECT pg_is_in_recovery();").strip() == "t"

    # -- files --------------------------------------------------------------------------------

    def bin(self, name: str) -> Path:
        """The path of PostgreSQL program ``name``."""
        return self.bindir / name

    def prepare(self) -> None:
        """Create the base directory, ``initdb`` on first use, write the settings files."""
        self._prepare_base_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._write_owned(self.data_dir / "pg_hba.conf", (
            "# Written by devstack: throwaway cluster, loopback-only trust.\n"
            "local   all          all                 trust\n"
            "local   replication  all                 trust\n"
            f"host    all          all  {HOST}/32  trust\n"
            f"host    replication  all  {HOST}/32  trust\n"))
        self._write_conf()

    def _conninfo(self, database: str) -> str:
        escaped = database.replace("\\", "\\\\").replace("'", "\\'")
        return (f"host={HOST} port={self._port} user={SUPERUSER} dbname='{escaped}' "
                "connect_timeout=10")

    def _run(self, cmd: Sequence[str | Path], *,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        args = [str(c) for c in cmd]
        cwd: Path | None = None
        if _is_root():
            # initdb, pg_ctl and postgres refuse to run as root, and the files they create
            # must belong to one user, so every server-side tool runs as postgres.
            args = ["runuser", "-u", OS_USER, "--", *args]
            cwd = self.base_dir if self.base_dir.is_dir() else Path("/")
        proc = subprocess.run(args, capture_output=True, text=True, env=_env(), cwd=cwd,
                              check=False)
        if check and proc.returncode != 0:
            raise DevstackError(f"{' '.join(args)} failed (exit {proc.returncode}):\n"
                                f"{tail(proc.stdout + proc.stderr)}")
        return proc

    def _prepare_base_dir(self) -> None:
        if len(str(self.base_dir)) > _MAX_SOCKET_DIR_LEN:
            raise DevstackError(f"base_dir {self.base_dir} is too long for a unix socket path "
                                f"(max {_MAX_SOCKET_DIR_LEN} chars); use scratch_dir()")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)  # initdb insists on 0700/0750
        if not _is_root():
            return
        for path in (self.base_dir, self.data_dir):
            shutil.chown(path, user=OS_USER, group=OS_USER)
        # Check as the postgres user itself: that honours mode bits, ACLs and mount options.
        if subprocess.run(["runuser", "-u", OS_USER, "--", "test", "-w", str(self.data_dir)],
                          cwd="/", check=False).returncode != 0:
            raise DevstackError(
                f"the {OS_USER!r} OS user cannot reach {self.base_dir}: every parent directory "
                "must be traversable (o+x); use devstack.postgres.scratch_dir()")

    def _initdb(self) -> None:
        cmd: list[str | Path] = [self.bin("initdb"), "-D", self.data_dir, "-A", "trust",
                                 "-U", SUPERUSER, "--encoding", "UTF8", "--locale", "C",
                                 "--no-instructions"]
        if not self.durable:
            cmd.append("--no-sync")  # skipping the final fsync saves a chunk of startup
        self._run(cmd)
        # Our settings live in an include file rewritten on every start (a new port, or the
        # replica's own port/socket dir after pg_basebackup copied the primary's).
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"\ninclude_if_exists = '{CONF_FILE}'\n")

    def _write_conf(self) -> None:
        settings: dict[str, str | int] = {
            "listen_addresses": HOST, "port": self._port,
            "unix_socket_directories": str(self.base_dir), "max_connections": 300,
            "wal_level": "replica", "max_wal_senders": 10, "max_replication_slots": 10,
            # Lets a replica that briefly falls behind catch up without a replication slot.
            "wal_keep_size": "256MB", "hot_standby": "on",
        }
        if not self.durable:
            # Crash safety is worthless for throwaway clusters; these make writes much faster.
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        lines = ["# Written by devstack; rewritten on every start."]
        for key, value in settings.items():
            if isinstance(value, str):
                value = "'" + value.replace("'", "''") + "'"
            lines.append(f"{key} = {value}")
        self._write_owned(self.data_dir / CONF_FILE, "\n".join(lines) + "\n")
        state = {"port": self._port, "durable": self.durable, "bindir": str(self.bindir)}
        (self.base_dir / STATE_FILE).write_text(json.dumps(state) + "\n")

    def _write_owned(self, path: Path, text: str) -> None:
        path.write_text(text)
        if _is_root():
            shutil.chown(path, user=OS_USER, group=OS_USER)

    def _read_log(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
