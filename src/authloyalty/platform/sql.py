"""Small SQL helpers that differ between PostgreSQL and SQLite."""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import Executable

from authloyalty.platform.database import Connection


@cache
def _insert_ignore(table: Table, dialect: str) -> Executable:
    # Built once per table and dialect, values bound at execution: the statement is compiled
    # once per set of columns.
    module = postgresql if dialect == "postgresql" else sqlite
    statement: Executable = module.insert(table).on_conflict_do_nothing()
    return statement


async def insert_ignore(db: Connection, table: Table, **values: Any) -> bool:
    """``INSERT … ON CONFLICT DO NOTHING``; True if a row was inserted."""
    return await db.execute(_insert_ignore(table, db.dialect), values) == 1
