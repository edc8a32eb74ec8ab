"""Start-up checks: which failures get PostgreSQL's one line, which URLs are refused."""

from __future__ import annotations

import asyncio

import pytest

from authloyalty.settings import load_settings
from authloyalty.startup import StartupError, check_database_urls, connection_problem

PG = "postgresql://app@127.0.0.1:1/app"


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_a_refused_connection_from_the_driver_names_the_server() -> None:
    import asyncpg

    async def connect() -> None:
        await asyncpg.connect(PG, timeout=5)

    try:
        asyncio.run(connect())
    except OSError as exc:
        problem = connection_problem(exc, load_settings(None, database_url=PG))
    assert problem == "cannot connect to PostgreSQL at 127.0.0.1:1: connection refused"


def test_a_refusal_from_elsewhere_is_not_called_postgresql() -> None:
    """A Kafka broker (or anything but the driver) refusing keeps its own report."""
    refused = _raised(ConnectionRefusedError(111, "Connect call failed"))
    assert connection_problem(refused, load_settings(None, database_url=PG)) is None


@pytest.mark.parametrize(("key", "url", "message"), [
    ("database_url", "mysql://root@db/app",
     "--database-url: unsupported scheme 'mysql': "
     "use postgresql://USER:PASSWORD@HOST:PORT/DB or sqlite:///PATH"),
    ("database_url", "not a url", "--database-url: not a database URL: "
     "use postgresql://USER:PASSWORD@HOST:PORT/DB or sqlite:///PATH"),
])
def test_unsupported_urls_are_refused_before_connecting(key: str, url: str, message: str) -> None:
    with pytest.raises(StartupError) as refused:
        check_database_urls(load_settings(None, **{key: url}))
    assert str(refused.value) == message


def test_a_url_in_a_service_section_is_named_by_its_key() -> None:
    settings = load_settings(None, sso={"database": {"url": "oracle://x@y/z"}})
    with pytest.raises(StartupError, match=r"^sso\.database\.url: unsupported scheme 'oracle'"):
        check_database_urls(settings)
