"""The nginx TLS gateway: its config template and ``nginx -t``.

One template, ``deploy/nginx/gateway.conf.template``, serves both deployments: the local stack
renders it with its loopback ports, and the compose file mounts ``deploy/nginx/nginx.compose.conf``,
rendered from it with :func:`compose_values` (``python -m devstack nginx render-compose``).
``AUTHLOYALTY_DEPLOY_DIR`` points at a ``deploy/`` directory other than this checkout's.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devstack.common import REPO_ROOT, DevstackError, require_commands

DEPLOY_ENV = "AUTHLOYALTY_DEPLOY_DIR"
TEMPLATE_NAME = "gateway.conf.template"
COMPOSE_CONF_NAME = "nginx.compose.conf"
_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")


# -- locating deploy/ ---------------------------------------------------------------------------


def deploy_dir() -> Path:
    """The ``deploy/`` directory: ``$AUTHLOYALTY_DEPLOY_DIR`` or the source checkout's."""
    override = os.environ.get(DEPLOY_ENV)
    path = Path(override).expanduser() if override else REPO_ROOT / "deploy"
    if not (path / "nginx" / TEMPLATE_NAME).is_file():
        raise DevstackError(
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
        "# `python -m devstack nginx render-compose`;\n"
        "# edit the template, not this file.\n"
    )


def render_compose() -> str:
    """The text of ``deploy/nginx/nginx.compose.conf``."""
    return _compose_header() + render_gateway(compose_values())


# -- nginx -t -----------------------------------------------------------------------------------


def check_config(conf: Path, *, prefix: Path | None = None, error_log: Path | None = None,
                 nginx: str | None = None) -> str:
    """Run ``nginx -t`` on a full config; return its output, raise ``DevstackError`` if refused.

    ``-p`` (prefix) and ``-e`` (startup error log) keep nginx away from /etc/nginx,
    /var/log/nginx and /run/nginx.pid, so this never touches a system nginx.
    """
    binary = nginx or require_commands({"nginx": "nginx"})["nginx"]
    conf = conf.absolute()
    prefix = (prefix or conf.parent).absolute()
    err = error_log or prefix / "nginx-test-error.log"
    proc = subprocess.run(
        [binary, "-t", "-p", f"{prefix}/", "-c", str(conf), "-e", str(err)],
        capture_output=True, text=True, check=False,
    )
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise DevstackError(f"nginx -t refused {conf}:\n{output}")
    return output
