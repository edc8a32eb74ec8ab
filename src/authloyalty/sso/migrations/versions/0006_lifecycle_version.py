"""sso: each user's lifecycle version, incremented by every deletion and restore, which their
events carry so that loyalty applies them in the order they happened.

Revision ID: sso_0006
Revises: sso_0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "sso_0006"
down_revision: str | None = "sso_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # 0 for every existing user: their earlier changes were announced unversioned (0), and
    # loyalty applies any versioned change over those.
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("lifecycle_version", sa.Integer(), nullable=False,
                                   server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("lifecycle_version")
