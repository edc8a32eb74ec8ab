"""Small pieces of the gRPC edge that need no server."""

from __future__ import annotations

import pytest

from authloyalty.platform.errors import ErrorKind
from authloyalty.platform.grpc import GRPC_STATUS
from authloyalty.sso.grpc import peer_address


@pytest.mark.parametrize(("peer", "address"), [
    ("ipv4:10.1.2.3:51234", "10.1.2.3"),
    ("ipv6:[::1]:51234", "::1"),
    ("ipv6:[2001:db8::7]:443", "2001:db8::7"),
    ("unix:/run/sso.sock", "unix:/run/sso.sock"),
    ("", "unknown"),
])
def test_login_throttles_per_peer_host_not_per_connection(peer: str, address: str) -> None:
    assert peer_address(peer) == address


def test_every_error_kind_has_a_status_code() -> None:
    assert set(GRPC_STATUS) == set(ErrorKind)
