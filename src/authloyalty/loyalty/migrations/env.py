"""Alembic environment of the loyalty service."""

from alembic import context

from authloyalty.loyalty.tables import metadata
from authloyalty.platform.migrations import run_env

run_env(context, metadata)
