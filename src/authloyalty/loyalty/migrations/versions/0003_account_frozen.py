"""loyalty: an account is frozen while its user is deleted (no movement; history kept).

Revision ID: loyalty_0003
Revises: loyalty_0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "loyalty_0003"
down_revision: str | None = "loyalty_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Null: every existing account is active.
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("frozen_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("frozen_at")
