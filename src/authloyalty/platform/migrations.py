"""Alembic, driven from code: one migration history per service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, MetaData, text
from sqlalchemy.ext.asyncio import AsyncEngine

from authloyalty.platform.engines import DatabaseTarget

SERVICES_DIR = Path(__file__).resolve().parent.parent


def alembic_config(service: str) -> Config:
    """Config for ``service``'s history (``src/authloyalty/<service>/migrations``)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
    cfg.set_main_option("version_table", f"{service}_alembic_version")
    return cfg


def run_env(context: Any, metadata: MetaData) -> None:
    """Body of each service's ``env.py``: migrate on the connection we were handed."""
    connection: Connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=context.config.get_main_option("version_table") or "alembic_version",
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


async def upgrade(service: str, engine: AsyncEngine, target: DatabaseTarget,
                  revision: str = "head") -> None:
    """Bring ``service``'s database (or schema) to ``revision``."""
    cfg = alembic_config(service)

    def _run(connection: Connection) -> None:
        if target.schema and connection.dialect.name == "postgresql":
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{target.schema}"'))
            connection.execute(text(f'SET search_path TO "{target.schema}"'))
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)

    async with engine.begin() as conn:
        await conn.run_sync(_run)


async def current_revision(service: str, engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None when never migrated."""
    from alembic.runtime.migration import MigrationContext

    def _read(connection: Connection) -> str | None:
        ctx = MigrationContext.configure(
            connection, opts={"version_table": f"{service}_alembic_version"})
        return ctx.get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(_read)


def head_revision(service: str) -> str | None:
    """The newest revision of ``service``'s history."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(service)).get_current_head()


async def ensure_current(service: str, engine: AsyncEngine) -> None:
    """Refuse to run against a database that ``authloyalty migrate`` has not brought up to date."""
    current, head = await current_revision(service, engine), head_revision(service)
    if current != head:
        raise SchemaOutOfDate(
            f"{service} database is at revision {current or 'none'}, this version needs "
            f"{head}: run `authloyalty migrate`")


class SchemaOutOfDate(RuntimeError):
    """The database schema does not match the code."""
