"""Every start-up mistake prints one line with a hint and exits non-zero, never a traceback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.common import free_port
from tests.e2e.e2e_helpers import AUTHLOYALTY, PASSWORD, Server, run_cli, server_env

pytestmark = pytest.mark.e2e

# Each data-dir command, with the options it needs besides --data-dir.
DATA_DIR_COMMANDS = {
    "up": ["up", "--sso-port", "0", "--loyalty-port", "0", "--grpc-port", "0"],
    "migrate": ["migrate"],
    "admin create": ["admin", "create", "--email", "boss@example.com", "--password", PASSWORD],
}
SCHEMES = "use postgresql://USER:PASSWORD@HOST:PORT/DB or sqlite:///PATH"


def assert_one_line(result: subprocess.CompletedProcess[str], line: str) -> None:
    """The command failed, printing exactly ``line`` and nothing else."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output
    assert "Task was destroyed" not in output
    assert output.splitlines() == [line], output


@pytest.fixture
def listening() -> Iterator[int]:
    """A free loopback port this test listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _up(data_dir: Path, sso: int, loyalty: int, grpc: int) -> subprocess.CompletedProcess[str]:
    return run_cli("up", "--data-dir", str(data_dir), "--sso-port", str(sso),
                   "--loyalty-port", str(loyalty), "--grpc-port", str(grpc))


def test_grpc_port_in_use(tmp_path: Path, listening: int) -> None:
    result = _up(tmp_path / "data", free_port(), free_port(), listening)
    assert_one_line(result, f"error: port {listening} (gRPC) is in use — is authloyalty "
                            "already running? Choose another with --grpc-port")


def test_loyalty_port_in_use(tmp_path: Path, listening: int) -> None:
    result = _up(tmp_path / "data", free_port(), listening, free_port())
    assert_one_line(result, f"error: port {listening} (loyalty HTTP) is in use — is "
                            "authloyalty already running? Choose another with --loyalty-port")


def test_a_second_up_on_the_ports_of_a_running_one(server: Server) -> None:
    """`make run` twice: the second names the port and the option."""
    result = _up(server.data_dir, server.sso_port, server.loyalty_port, server.grpc_port)
    assert_one_line(result, f"error: port {server.sso_port} (sso HTTP) is in use — is "
                            "authloyalty already running? Choose another with --sso-port")
    result = _up(server.data_dir, free_port(), free_port(), server.grpc_port)
    assert_one_line(result, f"error: port {server.grpc_port} (gRPC) is in use — is "
                            "authloyalty already running? Choose another with --grpc-port")


def test_one_port_for_two_services(tmp_path: Path) -> None:
    port = free_port()
    assert_one_line(_up(tmp_path / "data", port, port, free_port()),
                    f"error: --sso-port and --loyalty-port are both {port}: "
                    "give each its own port")


@pytest.mark.parametrize("command", DATA_DIR_COMMANDS)
def test_data_dir_is_a_file(tmp_path: Path, command: str) -> None:
    path = tmp_path / "var"
    path.write_text("")
    result = run_cli(*DATA_DIR_COMMANDS[command], "--data-dir", str(path))
    assert_one_line(result, f"error: data dir {path} is a file, not a directory: "
                            "choose another with --data-dir")


@pytest.mark.parametrize("command", DATA_DIR_COMMANDS)
def test_data_dir_cannot_be_created(tmp_path: Path, command: str) -> None:
    blocking = tmp_path / "file"
    blocking.write_text("")
    result = run_cli(*DATA_DIR_COMMANDS[command], "--data-dir", str(blocking / "var"))
    assert_one_line(result, f"error: cannot create data dir {blocking / 'var'}: {blocking} is "
                            "a file, not a directory: choose another with --data-dir")


@pytest.fixture
def read_only_dir() -> Iterator[Path]:
    """A data dir holding sso's file, that the user running the command cannot write to."""
    parent = Path(tempfile.mkdtemp(prefix="authloyalty-ro-"))
    parent.chmod(0o755)  # another user (below) must reach it
    path = parent / "var"
    path.mkdir()
    (path / "sso.db").write_text("")
    path.chmod(0o555)
    try:
        yield path
    finally:
        path.chmod(0o700)
        shutil.rmtree(parent)


def _as_unprivileged(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the command without root's power to ignore file permissions when we are root (the
    same user, so a checkout only root may read, e.g. under /root, still runs)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to drop root's file capabilities"
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]
    return subprocess.run([*prefix, AUTHLOYALTY, *args], capture_output=True, text=True,
                          timeout=60, env=server_env(), check=False)


@pytest.mark.parametrize("command", DATA_DIR_COMMANDS)
def test_data_dir_read_only(read_only_dir: Path, command: str) -> None:
    result = _as_unprivileged(*DATA_DIR_COMMANDS[command], "--data-dir", str(read_only_dir))
    assert_one_line(result, f"error: data dir {read_only_dir} is not writable (permission "
                            "denied): choose another with --data-dir or fix its permissions")


@pytest.mark.parametrize("command", DATA_DIR_COMMANDS)
def test_postgresql_refuses_the_connection(tmp_path: Path, command: str) -> None:
    port = free_port()  # nothing listens there
    result = run_cli(*DATA_DIR_COMMANDS[command], "--data-dir", str(tmp_path / "var"),
                     "--database-url", f"postgresql://nobody@127.0.0.1:{port}/x")
    assert_one_line(result, f"error: cannot connect to PostgreSQL at 127.0.0.1:{port}: "
                            "connection refused")


@pytest.mark.parametrize("command", DATA_DIR_COMMANDS)
@pytest.mark.parametrize(("url", "problem"), [
    ("mysql://root@127.0.0.1/loyalty", "unsupported scheme 'mysql'"),
    ("not a url", "not a database URL"),
])
def test_unsupported_database_url(tmp_path: Path, command: str, url: str, problem: str) -> None:
    result = run_cli(*DATA_DIR_COMMANDS[command], "--data-dir", str(tmp_path / "var"),
                     "--database-url", url)
    assert_one_line(result, f"error: --database-url: {problem}: {SCHEMES}")
    assert not (tmp_path / "var").exists()


def test_config_file_errors_one_line_per_key(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("log_level: 3\nsso:\n  http_port: eighty\n  bogus: 1\n")
    result = run_cli("up", "--config", str(config), "--data-dir", str(tmp_path / "var"))
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert "pydantic" not in output
    assert output.splitlines() == [
        "configuration error: log_level: Input should be a valid string",
        "configuration error: sso.http_port: Input should be a valid integer, unable to parse "
        "string as an integer",
        "configuration error: sso.bogus: unknown key",
    ]


def test_config_file_not_yaml(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("sso: [\n")
    result = run_cli("migrate", "--config", str(config), "--data-dir", str(tmp_path / "var"))
    assert result.returncode == 2
    assert_one_line(result, f"configuration error: {config}: not valid YAML at line 2: "
                            "expected the node content, but found '<stream end>'")
