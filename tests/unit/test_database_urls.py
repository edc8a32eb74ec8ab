"""Database URLs: libpq multi-host URLs are accepted, the write pool asks for the leader, a
read replica does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from authloyalty.platform.engines import DatabaseTarget, asyncpg_dsn, normalise_url, resolve_target

MULTI = "postgresql://app:s%40cret@db1:5432,db2:5433/ledger?target_session_attrs=read-write"


def test_a_multi_host_url_keeps_every_host_for_asyncpg_and_sqlalchemy() -> None:
    url = normalise_url(MULTI)
    # SQLAlchemy's spelling, which its asyncpg dialect (migrations) understands.
    assert url == ("postgresql+asyncpg://app:s%40cret@/ledger?host=db1%3A5432&host=db2%3A5433"
                   "&target_session_attrs=read-write")
    # libpq's spelling again for asyncpg, which tries the hosts in order.
    assert asyncpg_dsn(url) == ("postgresql://app:s%40cret@db1:5432,db2:5433/ledger"
                                "?target_session_attrs=read-write")
    assert "s%40cret" not in DatabaseTarget(url).describe()


def test_a_host_without_a_port_gets_postgresql_s_default() -> None:
    assert asyncpg_dsn(normalise_url("postgresql://app@db1,db2:6000/x")) == \
        "postgresql://app@db1:5432,db2:6000/x?target_session_attrs=read-write"


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://app@db:5432/x", "postgresql://app@db:5432/x?target_session_attrs=read-write"),
    # The URL's own choice wins (e.g. "primary", or "any" for a proxy that already routes).
    ("postgresql://app@db:5432/x?target_session_attrs=any",
     "postgresql://app@db:5432/x?target_session_attrs=any"),
])
def test_the_write_pool_asks_for_a_read_write_node(url: str, expected: str) -> None:
    assert asyncpg_dsn(normalise_url(url)) == expected


def test_a_read_replica_takes_any_node(tmp_path: Path) -> None:
    target = resolve_target("sso", "postgresql://app@replica:5432/x", None, tmp_path,
                            replica=True)
    assert target.replica
    assert asyncpg_dsn(target.url, leader=not target.replica) == "postgresql://app@replica:5432/x"
