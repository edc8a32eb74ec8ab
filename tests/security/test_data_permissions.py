"""Embedded data is private to the user running the services (item 7 of the hardening issue):
the data dir and keys dir are 0700, the SQLite files (-wal and -shm included) and keys 0600,
whatever the umask; an existing path others may read is named in a warning at start."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.e2e_helpers import Api, Server

pytestmark = pytest.mark.e2e


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes_under(data_dir: Path) -> dict[str, int]:
    """Every path under ``data_dir`` (itself included) with its permission bits."""
    found = {".": mode(data_dir)}
    for path in data_dir.rglob("*"):
        found[str(path.relative_to(data_dir))] = mode(path)
    return found


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of our own (it is restarted), started under the common umask 022."""
    srv = Server(tmp_path_factory.mktemp("permissions") / "data")
    previous = os.umask(0o022)
    try:
        srv.start()
    finally:
        os.umask(previous)
    try:
        yield srv
    finally:
        if srv.process is not None:
            srv.stop()


def test_what_the_services_create_is_private(sqlite_server: Server, api_for: Api) -> None:
    api_for.user()  # writes: the -wal and -shm files exist now
    found = modes_under(sqlite_server.data_dir)
    for name in ("sso.db", "sso.db-wal", "sso.db-shm", "loyalty.db", "loyalty.db-wal",
                 "loyalty.db-shm", "keys"):
        assert name in found, found
    wrong = {name: oct(bits) for name, bits in found.items()
             if bits != (0o700 if (sqlite_server.data_dir / name).is_dir() else 0o600)}
    assert not wrong, f"not private: {wrong}"


def test_existing_paths_others_may_read_are_named_at_start(sqlite_server: Server) -> None:
    sqlite_server.stop()
    data = sqlite_server.data_dir
    key = next((data / "keys").glob("*.pem"))
    for path, bits in ((data, 0o755), (data / "keys", 0o750), (data / "sso.db", 0o644),
                       (key, 0o640)):
        path.chmod(bits)
    sqlite_server.start()
    lines = sqlite_server.output().split("===== start #2", 1)[1].splitlines()
    warnings = [line for line in lines if '"level": "warning"' in line]
    for path, shown in ((data, "0755"), (data / "keys", "0750"), (data / "sso.db", "0644"),
                        (key, "0640")):
        assert any(f"{path} is accessible to other users (mode {shown})" in line
                   for line in warnings), (path, warnings)
    assert "Traceback" not in "\n".join(lines)
    assert mode(data / "sso.db") == 0o644  # reported, not changed behind the operator's back


def test_the_shared_servers_data_dir_is_private(target: Server) -> None:
    # On PostgreSQL too the data dir holds the signing keys.
    found = modes_under(target.data_dir)
    assert "keys" in found, found
    wrong = {name: oct(bits) for name, bits in found.items()
             if bits != (0o700 if (target.data_dir / name).is_dir() else 0o600)}
    assert not wrong, f"not private: {wrong}"


@pytest.fixture
def api_for(sqlite_server: Server) -> Iterator[Api]:
    """HTTP helpers bound to the module's own server."""
    with httpx.Client(timeout=30.0) as client:
        yield Api(sqlite_server, client)
