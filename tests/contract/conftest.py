"""Units of work of every kind: the in-memory fake, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from authloyalty.bootstrap import loyalty_database, sso_database
from authloyalty.loyalty.uow import SqlLoyaltyUnitOfWork
from authloyalty.platform.database import open_database
from authloyalty.platform.engines import create_engine
from authloyalty.platform.migrations import upgrade
from authloyalty.sso.uow import SqlSsoUnitOfWork
from tests.conftest import settings_for
from tests.fakes import FakeLoyaltyStore, FakeSsoStore


async def _sql(request: pytest.FixtureRequest, tmp_path: Path, service: str
               ) -> AsyncIterator[Callable[[], Any]]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    settings = settings_for(tmp_path, url)
    target = sso_database(settings) if service == "sso" else loyalty_database(settings)
    engine = create_engine(target)
    await upgrade(service, engine, target)
    uow_class = SqlSsoUnitOfWork if service == "sso" else SqlLoyaltyUnitOfWork
    database = open_database(target, engine)
    try:
        yield lambda: uow_class(database)
    finally:
        await database.dispose()
        await engine.dispose()


@pytest.fixture(params=["fake", "sqlite", "postgres"])
async def sso_uow(request: pytest.FixtureRequest, tmp_path: Path
                  ) -> AsyncIterator[Callable[[], Any]]:
    """A factory of sso units of work."""
    if request.param == "fake":
        yield FakeSsoStore().uow
        return
    async for factory in _sql(request, tmp_path, "sso"):
        yield factory


@pytest.fixture(params=["fake", "sqlite", "postgres"])
async def loyalty_uow(request: pytest.FixtureRequest, tmp_path: Path
                      ) -> AsyncIterator[Callable[[], Any]]:
    """A factory of loyalty units of work."""
    if request.param == "fake":
        yield FakeLoyaltyStore().uow
        return
    async for factory in _sql(request, tmp_path, "loyalty"):
        yield factory
