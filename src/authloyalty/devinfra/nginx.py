"""The nginx TLS gateway: its config template, ``nginx -t``, TLS material and Debian tools.

One template, ``deploy/nginx/gateway.conf.template``, serves both deployments: the local stack
(:mod:`authloyalty.devinfra.stack`) renders it with its loopback ports, and the compose file mounts
``deploy/nginx/nginx.compose.conf``, rendered from it with :func:`compose_values`.

CLI::

    python -m authloyalty.devinfra.nginx render-compose [--check]   # (re)write nginx.compose.conf
    python -m authloyalty.devinfra.nginx test --conf FILE            # nginx -t on a full config

Environment: ``AUTHLOYALTY_DEPLOY_DIR`` points at a ``deploy/`` directory other than the source
checkout's; ``AUTHLOYALTY_NO_APT=1`` never installs missing Debian packages.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from authloyalty.devinfra.common import apt_install, can_apt_install, tail

__all__ = [
    "GatewayValues",
    "TlsFiles",
    "check_config",
    "compose_values",
    "deploy_dir",
    "ensure_commands",
    "find_command",
    "main",
    "make_tls",
    "render_compose",
    "render_gateway",
    "template_path",
]

DEPLOY_ENV = "AUTHLOYALTY_DEPLOY_DIR"
TEMPLATE_NAME = "gateway.conf.template"
COMPOSE_CONF_NAME = "nginx.compose.conf"
_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")
# Tools in sbin are not on a non-root PATH (nginx lives in /usr/sbin).
_EXTRA_PATH = ("/usr/local/sbin", "/usr/sbin", "/sbin")


# -- locating deploy/ ---------------------------------------------------------------------------


def deploy_dir() -> Path:
    """The ``deploy/`` directory: ``$AUTHLOYALTY_DEPLOY_DIR`` or the source checkout's."""
    override = os.environ.get(DEPLOY_ENV)
    # src/authloyalty/devinfra/nginx.py -> the repository root is three levels above the package.
    if override:
        path = Path(override).expanduser()
    else:
        path = Path(__file__).resolve().parents[3] / "deploy"
    if not (path / "nginx" / TEMPLATE_NAME).is_file():
        raise RuntimeError(
            f"no deploy/nginx/{TEMPLATE_NAME} under {path}; run from a source checkout or point "
            f"{DEPLOY_ENV} at the repository's deploy/ directory"
        )
    return path


def template_path() -> Path:
    """The gateway template."""
    return deploy_dir() / "nginx" / TEMPLATE_NAME


# -- rendering ----------------------------------------------------------------------------------


@dataclass
class GatewayValues:
    """What differs between deployments of the gateway.

    Upstream entries are ``host:port``; listen entries are what follows ``listen`` before the
    flags (``127.0.0.1:8443``, ``443``, ``[::]:443``).
    """

    sso_http: Sequence[str]
    sso_grpc: Sequence[str]
    loyalty_http: Sequence[str]
    https_listen: Sequence[str]
    grpc_listen: Sequence[str]
    tls_cert: str
    tls_key: str
    pid_file: str
    error_log: str
    access_log: str
    temp_dir: str
    worker_processes: str = "1"
    # A replica that failed is skipped for this long before nginx tries it again.
    fail_timeout: str = "10s"
    extra_locations: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def placeholders(self) -> dict[str, str]:
        """The template's placeholder values."""

        def servers(addresses: Sequence[str]) -> str:
            if not addresses:
                raise ValueError("an upstream needs at least one server")
            return "\n".join(
                f"        server {a} max_fails=1 fail_timeout={self.fail_timeout};"
                for a in addresses
            )

        def listens(addresses: Sequence[str], flags: str) -> str:
            if not addresses:
                raise ValueError("a server block needs at least one listen address")
            return "\n".join(f"        listen {a} {flags};" for a in addresses)

        return {
            "WORKER_PROCESSES": self.worker_processes,
            "PID_FILE": self.pid_file,
            "ERROR_LOG": self.error_log,
            "ACCESS_LOG": self.access_log,
            "TEMP_DIR": self.temp_dir.rstrip("/"),
            "SSO_HTTP_SERVERS": servers(self.sso_http),
            "SSO_GRPC_SERVERS": servers(self.sso_grpc),
            "LOYALTY_HTTP_SERVERS": servers(self.loyalty_http),
            "HTTPS_LISTEN": listens(self.https_listen, "ssl http2"),
            "GRPC_LISTEN": listens(self.grpc_listen, "http2"),
            "TLS_CERT": self.tls_cert,
            "TLS_KEY": self.tls_key,
            "EXTRA_LOCATIONS": self.extra_locations.rstrip("\n"),
            **self.extra,
        }


def render_gateway(values: GatewayValues, template: str | None = None) -> str:
    """Fill the gateway template; every placeholder must be known."""
    text = template if template is not None else template_path().read_text()
    known = values.placeholders()
    missing = sorted({m.group(1) for m in _PLACEHOLDER.finditer(text)} - known.keys())
    if missing:
        raise ValueError(f"no value for placeholders {missing} of the gateway template")
    return _PLACEHOLDER.sub(lambda m: known[m.group(1)], text)


_COMPOSE_EXTRA_LOCATIONS = """\

        # compose only: the dashboards behind the same gateway, as in the original deployment
        location /grafana/ {
            proxy_pass http://grafana:3000;
        }
        location /jaeger/ {
            proxy_pass http://jaeger:16686;
        }
"""


def compose_values() -> GatewayValues:
    """The gateway of ``deploy/compose.yaml``: service names, container paths, port 443."""
    return GatewayValues(
        sso_http=["sso-1:8000", "sso-2:8000"],
        sso_grpc=["sso-1:44044", "sso-2:44044"],
        loyalty_http=["loyalty:8001"],
        https_listen=["443"],
        grpc_listen=["44044"],
        tls_cert="/etc/nginx/tls/tls.crt",
        tls_key="/etc/nginx/tls/tls.key",
        pid_file="/tmp/nginx.pid",
        error_log="/dev/stderr",
        access_log="/dev/stdout",
        temp_dir="/var/cache/nginx",  # exists in the nginx image, owned by its worker user
        worker_processes="auto",
        extra_locations=_COMPOSE_EXTRA_LOCATIONS,
    )


def _compose_header() -> str:
    return (
        "# GENERATED from deploy/nginx/gateway.conf.template by\n"
        "# `python -m authloyalty.devinfra.nginx render-compose`;\n"
        "# edit the template, not this file.\n"
    )


def render_compose() -> str:
    """The text of ``deploy/nginx/nginx.compose.conf``."""
    return _compose_header() + render_gateway(compose_values())


# -- Debian tools -------------------------------------------------------------------------------


def find_command(name: str) -> str | None:
    """``name`` on PATH or in the sbin directories."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _EXTRA_PATH:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@contextlib.contextmanager
def _no_service_starts() -> Iterator[None]:
    # Debian postinst scripts start the packaged daemons (nginx on :80, prometheus on :9090)
    # where an init system runs; a policy-rc.d answering 101 forbids that during our install.
    policy = Path("/usr/sbin/policy-rc.d")
    created = False
    if not policy.exists():
        with contextlib.suppress(OSError):
            policy.write_text("#!/bin/sh\n# temporary, written by authloyalty.devinfra\nexit 101\n")
            policy.chmod(0o755)
            created = True
    try:
        yield
    finally:
        if created:
            with contextlib.suppress(OSError):
                policy.unlink()


def ensure_commands(commands: Mapping[str, str], *, install: bool = True) -> dict[str, str]:
    """Return the path of every command; ``apt-get install`` the packages of missing ones.

    ``commands`` maps a command to its Debian package. Installing needs root and apt-get;
    ``apt-get update`` runs only when something is missing.
    """
    found = {cmd: find_command(cmd) for cmd in commands}
    missing = sorted({commands[cmd] for cmd, path in found.items() if path is None})
    if missing:
        if not (install and can_apt_install()):
            raise RuntimeError(
                f"missing commands {sorted(c for c, p in found.items() if p is None)}; install "
                f"the Debian packages: apt-get install {' '.join(missing)}"
            )
        with _no_service_starts():
            apt_install(missing)
        found = {cmd: find_command(cmd) for cmd in commands}
    still = sorted(cmd for cmd, path in found.items() if path is None)
    if still:
        raise RuntimeError(f"installed {missing} but {still} still not found")
    return {cmd: str(path) for cmd, path in found.items()}


# -- nginx -t -----------------------------------------------------------------------------------


def check_config(conf: Path, *, prefix: Path | None = None, error_log: Path | None = None,
                 nginx: str | None = None) -> str:
    """Run ``nginx -t`` on a full config; return its output, raise ``RuntimeError`` if refused.

    ``-p`` (prefix) and ``-e`` (startup error log) keep nginx away from /etc/nginx,
    /var/log/nginx and /run/nginx.pid, so this never touches a system nginx.
    """
    binary = nginx or find_command("nginx")
    if binary is None:
        raise RuntimeError("nginx is not installed (Debian package nginx)")
    conf = conf.absolute()
    prefix = (prefix or conf.parent).absolute()
    err = error_log or prefix / "nginx-test-error.log"
    proc = subprocess.run(
        [binary, "-t", "-p", f"{prefix}/", "-c", str(conf), "-e", str(err)],
        capture_output=True, text=True, check=False,
    )
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise RuntimeError(f"nginx -t refused {conf}:\n{output}")
    return output


# -- TLS ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """A local CA and a server certificate it signed."""

    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path, *, dns: Sequence[str] = ("localhost",),
             ips: Sequence[str] = ("127.0.0.1", "::1"), days: int = 30,
             openssl: str | None = None) -> TlsFiles:
    """Generate ``ca.pem`` (a throwaway CA) and ``tls.crt``/``tls.key`` signed by it.

    Clients trust ``ca.pem``; the CA's private key is deleted once the certificate is signed,
    so nothing else can ever be signed with it. Private keys are written 0600.
    """
    binary = openssl or find_command("openssl")
    if binary is None:
        raise RuntimeError("openssl is not installed (Debian package openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "tls.crt", directory / "tls.key")
    san = ",".join([*(f"DNS:{d}" for d in dns), *(f"IP:{i}" for i in ips)])
    with tempfile.TemporaryDirectory(prefix="tls-", dir=directory) as tmp:
        work = Path(tmp)
        ca_key = work / "ca.key"
        csr = work / "tls.csr"
        ext = work / "ext.cnf"
        ext.write_text(
            f"subjectAltName={san}\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid\n"
        )
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        old_umask = os.umask(0o077)
        try:
            steps = [
                [binary, "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(files.ca),
                 "-days", str(days), "-subj", "/O=authloyalty/CN=authloyalty local CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
                [binary, "req", "-new", *ec, "-keyout", str(files.key), "-out", str(csr),
                 "-subj", "/O=authloyalty/CN=" + (dns[0] if dns else "localhost")],
                [binary, "x509", "-req", "-in", str(csr), "-CA", str(files.ca),
                 "-CAkey", str(ca_key), "-set_serial", str(secrets.randbits(63)),
                 "-days", str(days), "-extfile", str(ext), "-out", str(files.cert)],
            ]
            for cmd in steps:
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n{tail(proc.stderr, 30)}")
        finally:
            os.umask(old_umask)
    files.key.chmod(0o600)
    files.ca.chmod(0o644)
    files.cert.chmod(0o644)
    return files


# -- CLI ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``render-compose [--check]`` or ``test --conf FILE``."""
    parser = argparse.ArgumentParser(prog="python -m authloyalty.devinfra.nginx",
                                     description="The nginx gateway's config.")
    sub = parser.add_subparsers(dest="command", required=True)
    rc = sub.add_parser("render-compose", help=f"write deploy/nginx/{COMPOSE_CONF_NAME}")
    rc.add_argument("--check", action="store_true",
                    help="only compare; exit 1 if the committed file is out of date")
    test = sub.add_parser("test", help="nginx -t on a full config file")
    test.add_argument("--conf", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "test":
            print(check_config(args.conf))
            return 0
        target = deploy_dir() / "nginx" / COMPOSE_CONF_NAME
        text = render_compose()
        if args.check:
            current = target.read_text() if target.exists() else ""
            if current != text:
                print(f"{target} is out of date; run without --check", file=sys.stderr)
                return 1
            print(f"{target} is up to date")
            return 0
        target.write_text(text)
        print(f"wrote {target}")
        return 0
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
