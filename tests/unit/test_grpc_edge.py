"""Small pieces of the gRPC edge that need no server."""

from __future__ import annotations

import hashlib
from uuid import uuid4

import pytest

from authloyalty.platform.errors import ErrorKind, Forbidden
from authloyalty.platform.grpc import GRPC_STATUS
from authloyalty.sso.callers import Caller, ServiceClients
from authloyalty.sso.grpc import peer_address
from authloyalty.sso.settings import GrpcClientSettings


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


def test_service_clients_accept_only_the_secret_whose_digest_is_configured() -> None:
    digest = hashlib.sha256(b"the real secret").hexdigest()
    clients = ServiceClients([GrpcClientSettings(id="reports", secret_sha256=digest)])
    assert clients.verify("reports", "the real secret")
    assert not clients.verify("reports", "the real secreT")
    assert not clients.verify("other", "the real secret")
    assert not ServiceClients().verify("reports", "the real secret")


def test_a_user_may_read_only_themself_admins_and_services_anyone() -> None:
    me, other = uuid4(), uuid4()
    Caller(user_id=me).check_may_read(me)
    Caller(user_id=me, is_admin=True).check_may_read(other)
    Caller(client_id="reports").check_may_read(other)
    with pytest.raises(Forbidden):
        Caller(user_id=me).check_may_read(other)
