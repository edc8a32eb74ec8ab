"""Throwaway PostgreSQL clusters for tests, benchmarks and the local multi-process stack.

Clusters use loopback-only ``trust`` authentication and no password: they are never meant to
hold real data or be reachable from another machine.

CLI::

    python -m authloyalty.devinfra.postgres start --dir DIR [--port N] [--durable]
    python -m authloyalty.devinfra.postgres url --dir DIR [--database D]
    python -m authloyalty.devinfra.postgres stop --dir DIR
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from authloyalty.devinfra.common import HOST, free_port, tail

__all__ = [
    "PostgresCluster",
    "find_bindir",
    "free_port",
    "main",
    "scratch_dir",
]

SUPERUSER = "postgres"
_OS_USER = "postgres"
_STATE_FILE = "devinfra-postgres.json"
_CONF_FILE = "devinfra.conf"
_PG_ROOT = Path("/usr/lib/postgresql")
# Unix socket paths are limited to 108 bytes (sun_path) including the ".s.PGSQL.NNNNN" name.
_MAX_SOCKET_DIR_LEN = 107 - len("/.s.PGSQL.65535")
# Env vars that would silently redirect psql/pg_basebackup to another server or database.
_LIBPQ_ENV = re.compile(r"^PG(HOST|HOSTADDR|PORT|DATABASE|USER|PASSWORD|PASSFILE|SERVICE\w*|"
                        r"OPTIONS|SSL\w*|TARGETSESSIONATTRS|APPNAME|DATA)$")


def _version_key(path: Path) -> tuple[int, ...]:
    # Directory names are "15", "16", "9.6": compare numerically, not lexically ("9" > "15").
    try:
        return tuple(int(part) for part in path.parent.name.split("."))
    except ValueError:
        return (-1,)


def _scan_bindirs() -> list[Path]:
    found = [
        bindir
        for bindir in _PG_ROOT.glob("*/bin")
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file()
    ]
    return sorted(found, key=_version_key, reverse=True)


def find_bindir() -> Path:
    """Return the newest PostgreSQL bin directory, installing Debian's server package as root."""
    found = _scan_bindirs()
    if found:
        return found[0]
    if os.geteuid() != 0:
        raise RuntimeError(
            f"no PostgreSQL server binaries (initdb, pg_ctl) under {_PG_ROOT}/*/bin; install them "
            "with `apt-get install postgresql` (needs root) and try again"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Note: Debian's postinst may also create and start a default "main" cluster on port 5432;
    # that is harmless here because our clusters pick their own ports.
    for cmd in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"],
    ):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{tail(proc.stderr)}"
            )
    found = _scan_bindirs()
    if not found:
        raise RuntimeError(f"installed postgresql but found no initdb/pg_ctl in {_PG_ROOT}/*/bin")
    return found[0]


def scratch_dir(prefix: str = "pg-") -> Path:
    """Create a fresh base directory under /tmp that the postgres OS user can reach."""
    # /tmp keeps the unix socket path short and, unlike pytest's /tmp/pytest-of-root (0700),
    # every parent is traversable by the postgres user we drop to when running as root.
    parent = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(0o755)
    return path


def _is_root() -> bool:
    return os.geteuid() == 0


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not _LIBPQ_ENV.match(k)}
    # Server messages in English so our error matching (e.g. "could not bind") works.
    env["LC_MESSAGES"] = "C"
    return env


class PostgresCluster:
    """A throwaway PostgreSQL cluster living entirely in ``base_dir`` (data, log, socket)."""

    def __init__(
        self,
        base_dir: Path,
        port: int | None = None,
        *,
        durable: bool = False,
        bindir: Path | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "log"
        self.durable = durable
        self._bindir = bindir
        # An auto-picked port may be grabbed by someone else before the server binds it;
        # start() then retries with a new one. An explicit port is never changed.
        self._auto_port = port is None
        self._port = free_port() if port is None else port

    # -- basic properties -------------------------------------------------------------------

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
        """Return a connection URL, e.g. ``postgresql+asyncpg://postgres@127.0.0.1:PORT/DB``."""
        scheme = "postgresql" if driver is None else f"postgresql+{driver}"
        return f"{scheme}://{SUPERUSER}@{HOST}:{self._port}/{quote(database, safe='')}"

    # -- lifecycle --------------------------------------------------------------------------

    @classmethod
    def existing(cls, base_dir: Path) -> PostgresCluster:
        """Attach to a cluster previously started in ``base_dir`` (reads its state file)."""
        base = Path(base_dir).absolute()
        state_path = base / _STATE_FILE
        try:
            state = json.loads(state_path.read_text())
        except FileNotFoundError:
            raise RuntimeError(
                f"no cluster state in {base} ({_STATE_FILE} missing); was it started here?"
            ) from None
        return cls(
            base,
            int(state["port"]),
            durable=bool(state["durable"]),
            bindir=Path(state["bindir"]),
        )

    def is_running(self) -> bool:
        """Return whether a postmaster is running on this cluster's data directory."""
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        # pg_ctl status exits 0 when running, 3 when not, 4 when the data dir is unusable.
        proc = self._run([self._bin("pg_ctl"), "status", "-D", str(self.data_dir)], check=False)
        return proc.returncode == 0

    def start(self) -> Self:
        """Initialise the cluster if needed, write its settings and start it."""
        if self.is_running():
            raise RuntimeError(f"a PostgreSQL server is already running in {self.data_dir}")
        self._prepare_base_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._write_hba()
        self._start_server()
        return self

    def stop(self) -> None:
        """Stop the server with ``pg_ctl stop -m fast``; a no-op if it is not running."""
        if not self.is_running():
            return
        proc = self._run(
            [self._bin("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60"],
            check=False,
        )
        # It may have exited between the status check and stop; only complain if still alive.
        if proc.returncode != 0 and self.is_running():
            raise RuntimeError(f"pg_ctl stop failed:\n{proc.stdout}{proc.stderr}")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PostgresCluster(base_dir={str(self.base_dir)!r}, port={self._port})"

    # -- SQL helpers ------------------------------------------------------------------------

    def psql(
        self,
        sql: str,
        database: str = "postgres",
        *,
        variables: Mapping[str, str] | None = None,
    ) -> str:
        """Run SQL through ``psql`` and return its unaligned, tuples-only stdout."""
        # Connecting over TCP with trust auth works both as root and as any other user, so no
        # need to switch to the postgres OS user. SQL goes through stdin (not -c) so each
        # statement runs on its own, which CREATE/DROP DATABASE require.
        cmd = [
            str(self._bin("psql")),
            "-X", "-A", "-t", "-q",
            "-v", "ON_ERROR_STOP=1",
            "-d", self._conninfo(database),
        ]
        for name, value in (variables or {}).items():
            cmd += ["-v", f"{name}={value}"]
        proc = subprocess.run(
            cmd, input=sql, capture_output=True, text=True, env=_clean_env(), check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"psql on {self.url(database, driver=None)} failed (exit {proc.returncode}):\n"
                f"{proc.stderr.strip()}"
            )
        return proc.stdout

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its plain ``postgresql://`` URL."""
        # psql's :'var' / :"var" interpolation does literal / identifier quoting for us.
        exists = self.psql(
            "SELECT 1 FROM pg_database WHERE datname = :'name';", variables={"name": name}
        )
        if exists.strip():
            raise RuntimeError(f"database {name!r} already exists on {self!r}")
        self.psql('CREATE DATABASE :"name";', variables={"name": name})
        return self.url(name, driver=None)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting any sessions still using it."""
        self.psql('DROP DATABASE IF EXISTS :"name" WITH (FORCE);', variables={"name": name})

    # -- replication ------------------------------------------------------------------------

    def start_replica(self, base_dir: Path, port: int | None = None) -> PostgresCluster:
        """Create, start and return a streaming hot-standby replica of this cluster."""
        if not self.is_running():
            raise RuntimeError(f"primary {self!r} is not running")
        replica = PostgresCluster(base_dir, port, durable=self.durable, bindir=self.bindir)
        if (replica.data_dir / "PG_VERSION").exists():
            raise RuntimeError(f"{replica.data_dir} already holds a cluster")
        replica._prepare_base_dir()
        self._run(
            [
                self._bin("pg_basebackup"),
                "-R", "-X", "stream", "-c", "fast",
                "-h", HOST, "-p", str(self._port), "-U", SUPERUSER,
                "-D", str(replica.data_dir),
            ],
        )
        # The backup copied the primary's devinfra.conf (port, socket dir); start() rewrites it.
        replica._start_server()
        deadline = time.monotonic() + 30
        while replica.psql("SELECT pg_is_in_recovery();").strip() != "t":
            if time.monotonic() > deadline:
                replica.stop()
                raise RuntimeError(f"replica {replica!r} did not enter recovery mode")
            time.sleep(0.1)
        return replica

    # -- internals --------------------------------------------------------------------------

    def _bin(self, name: str) -> Path:
        return self.bindir / name

    def _conninfo(self, database: str) -> str:
        def lit(value: str) -> str:
            escaped = value.replace("\\", "\\\\").replace("'", "\\'")
            return f"'{escaped}'"

        return (
            f"host={HOST} port={self._port} user={SUPERUSER} dbname={lit(database)} "
            "connect_timeout=10"
        )

    def _run(
        self,
        cmd: Sequence[str | Path],
        *,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        args = [str(c) for c in cmd]
        cwd: Path | None = None
        if _is_root():
            # initdb, pg_ctl and postgres all refuse to run as root, and the files they create
            # must belong to the same user, so every server-side tool runs as postgres.
            args = ["runuser", "-u", _OS_USER, "--", *args]
            # Avoid "could not change directory to /root" noise from the postgres tools.
            cwd = self.base_dir if self.base_dir.is_dir() else Path("/")
        proc = subprocess.run(
            args, capture_output=True, text=True, env=_clean_env(), cwd=cwd, check=False
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed (exit {proc.returncode}):\n"
                f"{tail(proc.stdout + proc.stderr)}"
            )
        return proc

    def _prepare_base_dir(self) -> None:
        if len(str(self.base_dir)) > _MAX_SOCKET_DIR_LEN:
            raise RuntimeError(
                f"base_dir {self.base_dir} is too long for a unix socket path "
                f"(max {_MAX_SOCKET_DIR_LEN} chars); use a shorter directory, e.g. scratch_dir()"
            )
        self.base_dir.mkdir(parents=True, exist_ok=True)
        # initdb insists on 0700/0750 for the data directory.
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if not _is_root():
            return
        for path in (self.base_dir, self.data_dir):
            shutil.chown(path, user=_OS_USER, group=_OS_USER)
        # Check as the postgres user itself: that honours mode bits, ACLs and mount options,
        # and gives a clear error instead of an obscure initdb/pg_ctl failure.
        probe = subprocess.run(
            ["runuser", "-u", _OS_USER, "--", "test", "-w", str(self.data_dir)],
            cwd="/",
            check=False,
        )
        if probe.returncode != 0:
            raise RuntimeError(
                f"the {_OS_USER!r} OS user cannot reach {self.base_dir}: every parent directory "
                "must be traversable (o+x). Use a directory such as "
                "authloyalty.devinfra.postgres.scratch_dir() (mkdtemp under /tmp, chmod 0o755)."
            )

    def _initdb(self) -> None:
        cmd: list[str | Path] = [
            self._bin("initdb"),
            "-D", self.data_dir,
            "-A", "trust",
            "-U", SUPERUSER,
            "--encoding", "UTF8",
            "--locale", "C",
            "--no-instructions",
        ]
        if not self.durable:
            # Skipping the final fsync of the new cluster saves a noticeable chunk of startup.
            cmd.append("--no-sync")
        self._run(cmd)
        # Keep our settings in a separate include file so they can be rewritten (e.g. a new
        # port, or the replica's own port/socket dir after pg_basebackup copied the primary's).
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"\ninclude_if_exists = '{_CONF_FILE}'\n")

    def _write_hba(self) -> None:
        hba = (
            "# Written by authloyalty.devinfra.postgres: throwaway cluster, loopback-only trust.\n"
            "local   all          all                 trust\n"
            "local   replication  all                 trust\n"
            f"host    all          all  {HOST}/32  trust\n"
            f"host    replication  all  {HOST}/32  trust\n"
        )
        self._write_owned(self.data_dir / "pg_hba.conf", hba)

    def _write_conf(self) -> None:
        settings: dict[str, str | int] = {
            "listen_addresses": HOST,
            "port": self._port,
            "unix_socket_directories": str(self.base_dir),
            "max_connections": 300,
            "wal_level": "replica",
            "max_wal_senders": 10,
            "max_replication_slots": 10,
            # Lets a replica that briefly falls behind catch up without a replication slot.
            "wal_keep_size": "256MB",
            "hot_standby": "on",
        }
        if not self.durable:
            # Crash safety is worthless for throwaway clusters; these make writes much faster.
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        lines = ["# Written by authloyalty.devinfra.postgres; rewritten on every start."]
        for key, value in settings.items():
            if isinstance(value, str):
                value = "'" + value.replace("'", "''") + "'"
            lines.append(f"{key} = {value}")
        self._write_owned(self.data_dir / _CONF_FILE, "\n".join(lines) + "\n")

    def _write_owned(self, path: Path, text: str) -> None:
        path.write_text(text)
        if _is_root():
            shutil.chown(path, user=_OS_USER, group=_OS_USER)

    def _write_state(self) -> None:
        state = {"port": self._port, "durable": self.durable, "bindir": str(self.bindir)}
        tmp = self.base_dir / f".{_STATE_FILE}.tmp"
        tmp.write_text(json.dumps(state) + "\n")
        tmp.replace(self.base_dir / _STATE_FILE)

    def _start_server(self) -> None:
        attempts = 3 if self._auto_port else 1
        for attempt in range(attempts):
            self._write_conf()
            # Remember where the log ends so the error shows only this attempt's output.
            log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
            proc = self._run(
                [
                    self._bin("pg_ctl"), "start",
                    "-D", self.data_dir, "-w", "-t", "60", "-l", self.log_file,
                ],
                check=False,
            )
            if proc.returncode == 0:
                self._write_state()
                return
            log = self._read_log(log_offset)
            port_taken = "could not bind" in log or "Address already in use" in log
            if port_taken and attempt + 1 < attempts:
                self._port = free_port()
                continue
            raise RuntimeError(
                f"pg_ctl start failed for {self.data_dir} (exit {proc.returncode}):\n"
                f"{(proc.stdout + proc.stderr).strip()}\n--- tail of {self.log_file} ---\n"
                f"{tail(log)}"
            )

    def _read_log(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: start, stop or print the URL of a cluster in a directory."""
    parser = argparse.ArgumentParser(
        prog="python -m authloyalty.devinfra.postgres",
        description="Manage throwaway local PostgreSQL clusters.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p_start = sub.add_parser("start", help="initialise (if needed) and start; prints the URL")
    p_start.add_argument("--dir", type=Path, required=True, help="cluster base directory")
    p_start.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    p_start.add_argument("--durable", action="store_true", help="keep fsync & co. enabled")

    p_stop = sub.add_parser("stop", help="stop the cluster started in --dir")
    p_stop.add_argument("--dir", type=Path, required=True, help="cluster base directory")

    p_url = sub.add_parser("url", help="print the plain URL of the cluster in --dir")
    p_url.add_argument("--dir", type=Path, required=True, help="cluster base directory")
    p_url.add_argument("--database", default="postgres", help="database name in the URL")

    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            port = args.port
            if port is None and (args.dir / _STATE_FILE).exists():
                # Restarting a stopped cluster: keep its URL stable for the processes using it.
                port = PostgresCluster.existing(args.dir).port
            cluster = PostgresCluster(args.dir, port, durable=args.durable).start()
            print(cluster.url(driver=None))
        elif args.command == "stop":
            PostgresCluster.existing(args.dir).stop()
        else:
            print(PostgresCluster.existing(args.dir).url(args.database, driver=None))
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
