"""Units of work of every kind: the in-memory fake, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import select

from authloyalty.bootstrap import loyalty_database, sso_database
from authloyalty.loyalty.uow import SqlLoyaltyUnitOfWork
from authloyalty.platform.database import open_database
from authloyalty.platform.engines import create_engine
from authloyalty.platform.migrations import upgrade
from authloyalty.sso.tables import outbox
from authloyalty.sso.uow import SqlSsoUnitOfWork
from tests.conftest import settings_for
from tests.fakes import FakeLoyaltyStore, FakeSsoStore


class Factory:
    """Makes units of work; ``outbox_event_ids`` reads what the relay would see, in order."""

    def __init__(self, make: Callable[[], Any],
                 outbox_event_ids: Callable[[], Awaitable[list[UUID]]]) -> None:
        self._make = make
        self.outbox_event_ids = outbox_event_ids

    def __call__(self) -> Any:
        return self._make()


async def _no_outbox() -> list[UUID]:
    raise AssertionError("this service has no outbox")


async def _sql(request: pytest.FixtureRequest, tmp_path: Path, service: str
               ) -> AsyncIterator[Factory]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    settings = settings_for(tmp_path, url)
    target = sso_database(settings) if service == "sso" else loyalty_database(settings)
    engine = create_engine(target)
    await upgrade(service, engine, target)
    uow_class = SqlSsoUnitOfWork if service == "sso" else SqlLoyaltyUnitOfWork
    database = open_database(target, engine)

    async def outbox_event_ids() -> list[UUID]:
        rows = await database.fetch(select(outbox.c.event_id).order_by(outbox.c.id))
        return [row["event_id"] for row in rows]

    try:
        yield Factory(lambda: uow_class(database),
                      outbox_event_ids if service == "sso" else _no_outbox)
    finally:
        await database.dispose()
        await engine.dispose()


@pytest.fixture(params=["fake", "sqlite", "postgres"])
async def sso_uow(request: pytest.FixtureRequest, tmp_path: Path
                  ) -> AsyncIterator[Factory]:
    """A factory of sso units of work."""
    if request.param == "fake":
        store = FakeSsoStore()

        async def outbox_event_ids() -> list[UUID]:
            return [envelope.id for envelope in store.state.outbox]

        yield Factory(store.uow, outbox_event_ids)
        return
    async for factory in _sql(request, tmp_path, "sso"):
        yield factory


@pytest.fixture(params=["fake", "sqlite", "postgres"])
async def loyalty_uow(request: pytest.FixtureRequest, tmp_path: Path
                      ) -> AsyncIterator[Factory]:
    """A factory of loyalty units of work."""
    if request.param == "fake":
        yield Factory(FakeLoyaltyStore().uow, _no_outbox)
        return
    async for factory in _sql(request, tmp_path, "loyalty"):
        yield factory
