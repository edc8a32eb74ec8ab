"""The ``endpoints`` summary of ``status --json``: where to reach each part of the stack.

Built only from the components' ``urls`` entries (and supervisord's pids), so it needs no
running process and never fails on a component the stack does not run: its key is then
``None`` (or an empty list or mapping). docs/operations.md shows an example.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

Entry = Mapping[str, Any]


def _numbered(components: Sequence[Entry], prefix: str) -> list[Entry]:
    pattern = re.compile(rf"{re.escape(prefix)}-\d+")
    return [c for c in components if pattern.fullmatch(str(c.get("name")))]


def _urls(entry: Entry | None) -> Mapping[str, Any]:
    urls = entry.get("urls") if entry is not None else None
    return urls if isinstance(urls, Mapping) else {}


def _first(value: Any) -> Any:
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _postgres(by_name: Mapping[str, Entry]) -> dict[str, Any]:
    """Write and read DSNs per database: HAProxy's when it runs, else primary and replica."""
    haproxy = _urls(by_name.get("haproxy"))
    if haproxy:
        return {"write": dict(haproxy.get("write") or {}) or None,
                "read": dict(haproxy.get("read") or {}) or None}
    primary = _urls(by_name.get("postgres-primary"))
    replica = _urls(by_name.get("postgres-replica"))
    return {"write": dict(primary) or None, "read": dict(replica) or None}


def endpoints(components: Sequence[Entry]) -> dict[str, Any]:
    """The summary of ``components`` (``status --json``'s entries: name, urls, pid, ...)."""
    by_name = {str(c.get("name")): c for c in components}
    nginx = by_name.get("nginx")
    gateway = _urls(nginx)
    kafka = [_urls(c).get("bootstrap") for c in _numbered(components, "kafka")]
    return {
        "gateway": _first(gateway.get("https")),
        "ca": nginx.get("ca") if nginx is not None else None,
        "sso": [_urls(c).get("http") for c in _numbered(components, "sso")],
        "loyalty": [_urls(c).get("http") for c in _numbered(components, "loyalty")],
        "grpc": {"gateway_tls": _first(gateway.get("grpc_tls")),
                 "gateway_h2c": gateway.get("grpc_h2c"),
                 "sso": [_urls(c).get("grpc") for c in _numbered(components, "sso")]},
        "postgres": _postgres(by_name),
        "patroni": {str(c["name"]): _urls(c).get("rest")
                    for c in _numbered(components, "patroni")},
        "etcd": _urls(by_name.get("etcd")).get("client"),
        "kafka_bootstrap": next((b for b in kafka if b), None),
        "registry": _urls(by_name.get("registry")).get("http"),
        "schema_registry": _urls(by_name.get("registry")).get("ccompat"),
        "jaeger": _urls(by_name.get("jaeger")).get("query"),
        "prometheus": _urls(by_name.get("prometheus")).get("http"),
        "pids": {str(c.get("name")): c.get("pid") for c in components},
    }
