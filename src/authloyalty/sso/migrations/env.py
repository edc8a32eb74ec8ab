"""Alembic environment of the sso service."""

from alembic import context

from authloyalty.platform.migrations import run_env
from authloyalty.sso.tables import metadata

run_env(context, metadata)
